"""Projection (GAN inversion) with the UNTRAINED stylegan2-tiny generator and the real dlib embedder:
recovery of the generator's own images, per-target independence of batched projection, the catalog
output (links to the sources, latents, per-step losses), protocol/group selection, sharding and
per-sample resume, the CLI with --crop on real photos, and the LPIPS perceptual loss once its two
files are added (the real LPIPS heads on a formula VGG16 trunk, as in tests/nets/test_lpips.py)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from PIL import Image

from synthdb import zoo
from synthdb.analysis.vectors import load_vectors
from synthdb.catalog.runs import get_run, list_runs
from synthdb.catalog.schema import Dataset, Identity, Sample, SampleIssue
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.faces.embed import Embedder
from synthdb.generate import units
from synthdb.generate.resume import resume_run
from synthdb.latent import project as proj
from synthdb.nets.generator import Generator
from synthdb.sources.registry import import_named
from synthdb.store.fsck import fsck
from tests.conftest import CliRun
from tests.nets.test_lpips import GOLDEN, lpips_weight_files
from tests.sources.test_databases import multipie_path

FAST = proj.ProjectionParams(
    name="proj", images=["-"], steps=2, w_avg_samples=1000, batch_size=4, generator="stylegan2-tiny"
)


@pytest.fixture(scope="module")
def generator() -> Generator:
    return Generator.tiny("stylegan2-tiny")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return zoo.embedder(None, "dlib-resnet")


def generated(generator: Generator, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, images) of the generator's own images from known latents (psi 0.7, constant noise)."""
    z = torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = generator.mapping(z, truncation_psi=0.7)
        return w, generator.synthesis(w)


@pytest.mark.slow
def test_projection_recovers_the_generators_own_images(generator: Generator, embedder: Embedder) -> None:
    """Acceptance: 2 targets drawn from known w, projected together in W for 60 steps."""
    params = replace(FAST, steps=60)
    projector = proj.Projector(generator, embedder, params)
    _, target = generated(generator, 2, seed=5)
    with torch.no_grad():
        start = generator.synthesis(projector.w_avg.expand(2, -1))
        start_pixel = (start - target).square().mean((1, 2, 3))
        features = projector.features
        start_perceptual = features.distance(features(start), features(target))
    result = projector.project(target, ["a", "b"])
    h = result.history
    assert h["loss"].shape == (61, 2) and result.w.shape == (2, 512)
    final_pixel = (result.images - target).square().mean((1, 2, 3))
    print(
        f"\npixel MSE ([-1, 1]) start {start_pixel.numpy()} -> final {final_pixel.numpy()}; perceptual "
        f"start {start_perceptual.numpy()} -> final {h['perceptual'][-1]}; loss first {h['loss'][0]} "
        f"last {h['loss'][-1]}"
    )
    np.testing.assert_allclose(h["pixel"][-1], final_pixel.numpy(), rtol=1e-5)
    assert (final_pixel < 0.5 * start_pixel).all()
    assert (torch.from_numpy(h["perceptual"][-1]) < 0.6 * start_perceptual).all()
    match = h["perceptual"] + h["pixel"]  # the reconstruction terms fall, not only the regulariser
    assert (match[-10:].mean(0) < 0.5 * match[:10].mean(0)).all()
    assert (h["loss"][-10:].mean(0) < 0.01 * h["loss"][:10].mean(0)).all()


def test_batched_targets_follow_their_own_trajectories(generator: Generator, embedder: Embedder) -> None:
    """Each target's latent, noise and draws are its own: projected with others or alone, the same."""
    params = replace(FAST, steps=6, perceptual_weight=0.0, space="w+")
    projector = proj.Projector(generator, embedder, params)
    _, target = generated(generator, 3, seed=9)
    together = projector.project(target, ["a", "b", "c"])
    alone = projector.project(target[1:2], ["b"])
    assert together.w.shape == (3, generator.num_ws, 512)
    torch.testing.assert_close(together.w[1:2], alone.w, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(together.history["loss"][:, 1:2], alone.history["loss"], rtol=1e-4)
    assert not torch.allclose(together.w[0], together.w[1])
    renamed = projector.project(target[1:2], ["other key"])
    assert not torch.allclose(renamed.w, alone.w)  # the key seeds the draws


def test_per_sample_noise_in_synthesis_is_backward_compatible(generator: Generator) -> None:
    w, _ = generated(generator, 2, seed=3)
    ws = w.unsqueeze(1).expand(-1, generator.num_ws, -1)
    synthesis = generator.network.synthesis
    buffers = {n.removesuffix(".noise_const"): b for n, b in synthesis.named_buffers() if "noise_const" in n}
    with torch.no_grad():
        default = synthesis(ws)
        same = synthesis(ws, noise={k: b.expand(2, 1, *b.shape) for k, b in buffers.items()})
        partial = synthesis(ws, noise={"b4.conv1": torch.zeros(2, 1, 4, 4)})
        own = synthesis(ws, noise={k: torch.randn(2, 1, *b.shape) for k, b in buffers.items()})
        single = synthesis(ws[:1], noise={k: torch.randn(1, 1, *b.shape) for k, b in buffers.items()})
    torch.testing.assert_close(same, default)
    assert not torch.allclose(partial, default) and not torch.allclose(own, default)
    assert single.shape == (1, 3, 64, 64)


def test_w_statistics_are_untruncated(generator: Generator) -> None:
    """The reference used the Generator's default psi 0.5 (sigma halved); synthdb maps with psi 1."""
    mean, sigma = proj.w_statistics(generator, 4000, seed=1)
    z = torch.randn(4000, generator.z_dim, generator=torch.Generator().manual_seed(77))
    with torch.no_grad():
        w = generator.mapping(z)
    independent = float((w - w.mean(0)).square().sum(1).mean().sqrt())
    assert abs(sigma - independent) < 0.05 * independent
    assert float((mean - generator.w_avg).norm()) < 0.1 * sigma  # tiny's w_avg: mean of untruncated w


def test_learning_rate_ramps_and_noise_regulariser() -> None:
    p = proj.ProjectionParams(name="x", images=["-"])
    assert proj.learning_rate(p, 0.0) == 0.0
    assert proj.learning_rate(p, 0.025) == pytest.approx(0.05)
    assert proj.learning_rate(p, 0.5) == pytest.approx(0.1)
    assert proj.learning_rate(p, 0.875) == pytest.approx(0.05)
    assert proj.learning_rate(replace(p, constant_learning_rate=True), 0.99) == 0.1
    smooth = torch.ones(1, 1, 16, 16)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]).remainder(2).float()[None, None] * 2 - 1
    reg = proj.noise_regularization([torch.cat([smooth, checker])])
    # levels 16 and 8: smooth correlates fully (1 + 1 per level), the checkerboard anti-correlates at 16
    # (1 + 1) and averages to zero at 8
    torch.testing.assert_close(reg, torch.tensor([4.0, 2.0]))


# --- the catalog ---------------------------------------------------------------------------------------

# subject 1 is a train subject, 2 a dev subject (reference partition); camera 05_1, shots 0 and 7
MULTIPIE = [(1, 1, 1, 0), (1, 1, 1, 7), (1, 1, 2, 7), (2, 1, 1, 0), (2, 2, 1, 0), (2, 2, 1, 7), (2, 2, 2, 7)]


@pytest.fixture
def multipie(ctx: Context, tmp_path: Path, generator: Generator) -> Context:
    """A MultiPIE tree whose photos are stylegan2-tiny images (aligned in its framing by construction)."""
    _, images = generated(generator, len(MULTIPIE), seed=11)
    pixels = proj.to_uint8(images)
    for (subject, session, recording, shot), image in zip(MULTIPIE, pixels, strict=True):
        path = tmp_path / "mpie" / multipie_path(subject, session, recording, "05_1", shot)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    import_named(ctx, "multipie", tmp_path / "mpie", quiet=True)
    return ctx


def key(subject: int, session: int, recording: int, shot: int) -> str:
    """The MultiPIE key of a camera 05_1 image: its relative path without extension, / -> _."""
    return multipie_path(subject, session, recording, "05_1", shot).removesuffix(".png").replace("/", "_")


def dataset(ctx: Context, name: str) -> int:
    with ctx.catalog.engine.connect() as conn:
        return conn.execute(sa.select(Dataset.id).where(Dataset.name == name)).scalar_one()


def projections(ctx: Context, name: str) -> list[tuple[str, str | None, dict]]:
    sample, ident, dataset = Sample.__table__, Identity.__table__, Dataset.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(sample.c.key, ident.c.label, sample.c.attributes, sample.c.role)
            .select_from(sample.join(dataset).outerjoin(ident, ident.c.id == sample.c.identity_id))
            .where(dataset.c.name == name)
            .order_by(sample.c.key)
        ).all()
    assert {r.role for r in rows} <= {"projection"}
    return [(r.key, r.label, r.attributes) for r in rows]


def source_ids(ctx: Context) -> dict[str, int]:
    """Key -> id of the MultiPIE samples."""
    sample = Sample.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(sample.c.key, sample.c.id).where(sample.c.dataset_id == dataset(ctx, "multipie"))
        )
        return dict(rows.all())


@pytest.mark.slow
def test_protocol_group_projection_lands_in_the_catalog(multipie: Context) -> None:
    ctx = multipie
    params = replace(FAST, images=[], dataset="multipie", protocols=["U"], name="u-train")
    run_id = proj.project(ctx, params).run_id
    rows = projections(ctx, "u-train")
    ids = source_ids(ctx)
    train = [key(1, 1, 1, 0), key(1, 1, 1, 7)]  # U train: subject 1, neutral recording, shots <= 18
    assert [k for k, _, _ in rows] == train
    for k, label, attributes in rows:
        assert label == "001"
        assert set(attributes) == {"source_sample_id", "source_key", "final_loss", "steps"}
        assert (attributes["source_sample_id"], attributes["source_key"], attributes["steps"]) == (
            ids[k],
            k,
            2,
        )
        assert math.isfinite(attributes["final_loss"]) and attributes["final_loss"] > 0
    with ctx.catalog.engine.connect() as conn:
        kind, source = conn.execute(
            sa.select(Dataset.kind, Dataset.source).where(Dataset.name == "u-train")
        ).one()
    assert (kind, source) == ("synthetic", "projection")
    w = load_vectors(ctx, "u-train", "stylegan2-tiny", "latent", "w").vectors
    assert w.shape == (2, 512) and np.isfinite(w).all()
    stats = units.read_stats(ctx, run_id)
    assert sorted({r["key"] for r in stats}) == train and len(stats) == 2 * 3
    final = {r["key"]: r["loss"] for r in stats if r["step"] == 2}
    assert {k: a["final_loss"] for k, _, a in rows} == pytest.approx(final)
    assert fsck(ctx.catalog, ctx.store).clean

    # --group all: every group of U (the reference passed protocol names as group names)
    proj.project(ctx, replace(params, group="all", name="u-all"))
    u_all = [k for k, _, _ in projections(ctx, "u-all")]
    assert u_all == sorted([*train, key(2, 1, 1, 0), key(2, 2, 1, 0), key(2, 2, 1, 7)])  # + dev enrol, probes
    with pytest.raises(SynthdbError, match="no group 'world'"):
        proj.project(ctx, replace(params, group="world", name="x"))
    with pytest.raises(SynthdbError, match="no protocol M"):
        proj.project(ctx, replace(params, protocols=["M"], name="x"))


@pytest.mark.slow
def test_sharded_runs_resume_per_sample(multipie: Context) -> None:
    ctx = multipie
    params = replace(FAST, images=[], dataset="multipie", name="all", batch_size=2, space="w+")
    first = proj.project(ctx, params, shard=(1, 2)).run_id  # units 1 and 3 of 4: samples 2-3 and 6
    assert len(projections(ctx, "all")) == 3
    proj.project(ctx, params, shard=(0, 2))
    rows = projections(ctx, "all")
    assert [k for k, _, _ in rows] == sorted(source_ids(ctx)) and len(rows) == len(MULTIPIE)
    again = proj.project(ctx, replace(params, batch_size=3)).run_id  # the same projection: nothing left to do
    summary = get_run(ctx.catalog, again).summary
    assert (summary["targets"], summary["projected"]) == (len(MULTIPIE), 0)
    w_plus = load_vectors(ctx, "all", "stylegan2-tiny", "latent", "w_plus").vectors
    assert w_plus.shape == (len(MULTIPIE), Generator.tiny("stylegan2-tiny").num_ws * 512)
    with pytest.raises(SynthdbError, match="exists already: choose another --name"):
        proj.project(ctx, replace(params, steps=3), run_id=None)
    assert first != again and fsck(ctx.catalog, ctx.store).clean


def test_unreadable_source_images_become_issues_and_count_as_done(multipie: Context) -> None:
    ctx = multipie
    params = replace(FAST, images=[], dataset="multipie", protocols=["U"], name="u")
    with ctx.catalog.engine.connect() as conn:
        root = conn.execute(sa.select(Dataset.root).where(Dataset.name == "multipie")).scalar_one()
    victim = Path(root) / multipie_path(1, 1, 1, "05_1", 7)
    victim.write_bytes(b"not an image")
    proj.project(ctx, params)
    assert len(projections(ctx, "u")) == 1
    with ctx.catalog.engine.connect() as conn:
        issues = conn.execute(sa.select(SampleIssue.kind, SampleIssue.space)).all()
    assert issues == [("unreadable", "stylegan2-tiny")]
    proj.project(ctx, params)  # the recorded issue is not retried
    with ctx.catalog.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(SampleIssue)).scalar() == 1


@pytest.mark.slow
def test_cli_crops_real_photos_and_writes_videos(
    sqlite_ctx: Context, faces_dir: Path, tmp_path: Path, synthdb_cli: CliRun
) -> None:
    ws = str(sqlite_ctx.ws.root)
    photos = [str(faces_dir / "obama_01.jpg"), str(faces_dir / "scarlett_01.jpg")]
    args = ["-w", ws, "project", *photos, "--name", "photos", "--crop", "--steps", "3", "-q"]
    result = synthdb_cli(*args, "--video", str(tmp_path / "video"))
    assert result.exit_code == 0, result.output
    assert "2 of 2 targets projected into dataset photos" in result.output
    rows = projections(sqlite_ctx, "photos")
    assert [(k, label, a["source_sample_id"], a["source_key"]) for k, label, a in rows] == [
        ("obama_01.jpg", None, None, "obama_01.jpg"),
        ("scarlett_01.jpg", None, None, "scarlett_01.jpg"),
    ]
    gif = Image.open(tmp_path / "video" / "obama_01.gif")
    assert gif.size == (128, 64) and gif.n_frames == 4  # target | synthesis, every step and the final one
    noface = synthdb_cli("project", str(faces_dir / "noface_01.jpg"), "--name", "n", "--crop", ws=ws)
    assert noface.exit_code == 1 and "cannot project" in noface.output and "noface_01.jpg" in noface.output
    both = synthdb_cli("project", photos[0], "--dataset", "x", "--name", "n", ws=ws)
    assert both.exit_code == 1 and "one of the two" in both.output
    (tmp_path / "a-file").write_text("not a directory")
    video = synthdb_cli(
        *args[:3], photos[0], *args[5:], "--name", "v", "--video", str(tmp_path / "a-file" / "v")
    )
    assert video.exit_code == 1 and "cannot write the projection video" in video.output
    assert "Traceback" not in video.output and projections(sqlite_ctx, "v") == []  # nothing half-committed
    assert fsck(sqlite_ctx.catalog, sqlite_ctx.store).clean


@pytest.mark.slow
def test_failed_image_run_resumes_where_it_stopped(
    sqlite_ctx: Context, tmp_path: Path, generator: Generator
) -> None:
    _, images = generated(generator, 2, seed=21)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    Image.fromarray(proj.to_uint8(images)[0]).save(paths[0])
    paths[1].write_bytes(b"truncated")
    params = replace(FAST, images=[str(p) for p in paths], name="imgs", batch_size=1)
    with pytest.raises(SynthdbError, match=r"cannot project .*b\.png"):
        proj.project(sqlite_ctx, params)
    (run,) = [r for r in list_runs(sqlite_ctx.catalog) if r.kind == "project"]
    assert run.status == "failed" and [k for k, _, _ in projections(sqlite_ctx, "imgs")] == ["a.png"]
    Image.fromarray(proj.to_uint8(images)[1]).save(paths[1])
    assert resume_run(sqlite_ctx, run.id) == "project (w) resumed and succeeded"  # `synthdb runs resume`
    assert get_run(sqlite_ctx.catalog, run.id).status == "succeeded"
    assert get_run(sqlite_ctx.catalog, run.id).summary == {"dataset": "imgs", "targets": 2, "projected": 1}
    assert [k for k, _, _ in projections(sqlite_ctx, "imgs")] == ["a.png", "b.png"]


@pytest.mark.slow
def test_lpips_is_the_perceptual_loss_once_its_files_are_added(
    sqlite_ctx: Context, tmp_path: Path, generator: Generator, synthdb_cli: CliRun
) -> None:
    ctx, ws = sqlite_ctx, str(sqlite_ctx.ws.root)
    _, images = generated(generator, 1, seed=31)
    Image.fromarray(proj.to_uint8(images)[0]).save(tmp_path / "t.png")
    args = [
        "-w",
        ws,
        "project",
        str(tmp_path / "t.png"),
        "--steps",
        "6",
        "--generator",
        "stylegan2-tiny",
        "-q",
    ]
    refused = synthdb_cli(*args, "--name", "x", "--perceptual", "lpips")
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert "needs the weights of vgg16-imagenet and lpips-vgg-v0.1" in refused.output
    assert "`synthdb models add vgg16-imagenet --file PATH`" in refused.output
    assert list_runs(ctx.catalog) == []  # refused before a run starts
    assert proj.choose_perceptual(ctx, FAST).perceptual == "embedder"  # the default without the files

    files = lpips_weight_files(torch.load(GOLDEN, weights_only=True), tmp_path)
    for name, path in zip(zoo.LPIPS_CARDS, files, strict=True):
        zoo.add(ctx, name, path)
    result = synthdb_cli(*args, "--name", "lp")  # the default is now lpips
    assert result.exit_code == 0, result.output
    assert "perceptual loss lpips" in result.output
    (run,) = list_runs(ctx.catalog)
    assert run.params["perceptual"] == "lpips"
    steps = {r["step"]: r for r in units.read_stats(ctx, run.id)}
    first, last = steps[0], steps[6]
    print(f"\nstep 0 -> 6: { ({t: (first[t], last[t]) for t in ('perceptual', 'pixel', 'loss')}) }")
    assert last["perceptual"] < 0.8 * first["perceptual"] and last["loss"] < 0.8 * first["loss"]
