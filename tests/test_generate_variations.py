"""Dispersion / DisCo variations into the catalog: identity preservation, spread, exact chunked
gradients, sharding and resume (UNTRAINED stylegan2-tiny + dlib embedder)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from synthdb.catalog.runs import get_run
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.faces.embed import angle
from synthdb.generate import runner, variations
from synthdb.generate.references import ReferenceParams, generate_references, load_pipeline
from synthdb.generate.resume import resume_run
from synthdb.store.fsck import fsck
from tests.test_generate_references import vectors

BASE = variations.VariationParams(
    name="var",
    references="refs",
    num_variations=4,
    iterations=2,
    global_coefficient=0.1,
    identities_per_unit=2,
    batch_size=4,
)


@pytest.fixture
def refs(sqlite_ctx: Context) -> Context:
    generate_references(sqlite_ctx, ReferenceParams(name="refs", algorithm="random", num_identities=4))
    return sqlite_ctx


def test_dispersion_keeps_identities_and_spreads_latents(refs: Context) -> None:
    run_id = variations.generate_variations(refs, BASE)
    run = get_run(refs.catalog, run_id)
    assert (run.kind, run.algorithm, run.status, run.shard_count) == (
        "variations",
        "dispersion",
        "succeeded",
        1,
    )
    keys, emb = vectors(refs, "var")
    assert keys == [f"{i:05d}/augmentation_{a}" for i in range(4) for a in range(4)]
    _, ref_emb = vectors(refs, "refs")
    nearest = angle(torch.from_numpy(emb), torch.from_numpy(ref_emb)).argmin(1).numpy()
    assert (nearest == np.repeat(np.arange(4), 4)).mean() >= 0.95
    stats = runner.read_stats(refs, run_id)
    for unit in ("ids/000000", "ids/000002"):
        rows = [r for r in stats if r["unit"] == unit]
        assert [r["iteration"] for r in rows] == [0, 1, 2]
        assert rows[-1]["w2wd_avg"] > rows[0]["w2wd_avg"]  # the latents of one identity spread
    assert fsck(refs).clean


def test_chunked_gradients_are_exact_for_every_element(refs: Context) -> None:
    """The reference kept only each chunk's first gradient; chunks of 2 must equal one chunk of 6."""
    pipeline = load_pipeline(BASE)
    _, w = vectors(refs, "refs", "latent")
    w = torch.from_numpy(w).repeat(2, 1)[:6] + 0.1 * torch.randn(
        6, 512, generator=torch.Generator().manual_seed(0)
    )
    anchor = torch.randn(6, 128, generator=torch.Generator().manual_seed(1))

    def loss(e: torch.Tensor, rows: slice) -> torch.Tensor:
        return (variations.rowwise_angle(e, anchor[rows]) ** 2).sum()

    pipeline.batch_size = 6
    _, whole = pipeline.gradient(w, loss)
    pipeline.batch_size = 2
    _, chunked = pipeline.gradient(w, loss)
    assert not torch.allclose(chunked[1], chunked[0])
    error = (chunked - whole).norm(dim=1) / whole.norm(dim=1)  # float noise of other batch shapes only
    assert float(error.max()) < 1e-2


def test_shards_equal_the_single_process_run_and_resume_is_exact(refs: Context) -> None:
    variations.generate_variations(refs, BASE)
    sharded = replace(BASE, name="sharded")
    ids = [variations.generate_variations(refs, sharded, shard=(k, 2)) for k in (1, 0)]
    assert [get_run(refs.catalog, i).shard_index for i in ids] == [1, 0]
    want_keys, want = vectors(refs, "var", "latent")
    keys, got = vectors(refs, "sharded", "latent")
    assert sorted(keys) == sorted(want_keys)
    order = np.argsort(keys)
    assert np.array_equal(got[order], want[np.argsort(want_keys)])

    crashed = replace(BASE, name="crashed")  # dies after its first unit committed, then resumes
    real = variations._commit_unit
    calls = []

    def failing(*args: object) -> None:
        if calls:
            raise RuntimeError("simulated crash")
        calls.append(1)
        real(*args)

    variations._commit_unit = failing
    try:
        with pytest.raises(RuntimeError):
            variations.generate_variations(refs, crashed)
    finally:
        variations._commit_unit = real
    run_id = max(r for r in range(1, 10) if _exists(refs, r))
    assert get_run(refs.catalog, run_id).status == "failed"
    resume_run(refs, run_id)
    keys, got = vectors(refs, "crashed", "latent")
    assert keys == want_keys and np.array_equal(got, want)
    assert fsck(refs).clean


def _exists(ctx: Context, run_id: int) -> bool:
    try:
        get_run(ctx.catalog, run_id)
    except SynthdbError:
        return False
    return True


def test_disco_starts_from_planted_covariate_directions(refs: Context, tmp_path) -> None:  # noqa: ANN001
    normals = torch.nn.functional.normalize(
        torch.randn(2, 512, generator=torch.Generator().manual_seed(3)), dim=1
    )
    path = tmp_path / "directions.npz"
    np.savez(
        path,
        names=np.array(["pose", "smile"]),
        normals=normals.numpy(),
        neg_means=np.array([-4.0, -2.0], np.float32),
        pos_means=np.array([3.0, 6.0], np.float32),
    )
    start = replace(BASE, iterations=0, initial_noise=0.0)
    variations.generate_variations(refs, replace(start, name="plain"))
    variations.generate_variations(
        refs, replace(start, name="disco", algorithm="disco", directions=str(path), expression_scaling=0.5)
    )
    _, plain = vectors(refs, "plain", "latent")
    _, disco = vectors(refs, "disco", "latent")
    offsets = torch.from_numpy(disco - plain)
    coefficients = offsets @ normals.T  # u_k * s_k * max(-neg, pos), |u_k| <= 0.5
    assert bool((coefficients[:, 0].abs() <= 0.5 * 4.0 + 1e-4).all())
    assert bool((coefficients[:, 1].abs() <= 0.5 * 0.5 * 6.0 + 1e-4).all())
    assert float(coefficients.abs().max()) > 0.5
    with pytest.raises(SynthdbError, match="--directions"):
        variations.generate_variations(refs, replace(BASE, name="x", algorithm="disco"))
