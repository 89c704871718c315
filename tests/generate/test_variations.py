"""Dispersion / DisCo / covariates variations into the catalog: identity preservation, spread, exact
chunked gradients, sharding and resume, DisCo and covariate edits from catalog direction sets
(UNTRAINED stylegan2-tiny + dlib embedder)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from synthdb.angles import angle
from synthdb.catalog.runs import get_run
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate import units, variations
from synthdb.generate.pipeline import load_pipeline
from synthdb.generate.references import ReferenceParams, generate_references
from synthdb.generate.resume import resume_run
from synthdb.latent.edit import CovariateScaling, LatentEdit, augmentation_labels
from synthdb.store.fsck import fsck
from tests.generate.test_references import vectors
from tests.latent.test_directions import planted_set

TINY_GENERATOR = "stylegan2-tiny"  # untrained: these tests are about the machinery, not faces

BASE = variations.VariationParams(
    generator=TINY_GENERATOR,
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
    generate_references(
        sqlite_ctx,
        ReferenceParams(generator=TINY_GENERATOR, name="refs", algorithm="random", num_identities=4),
    )
    return sqlite_ctx


@pytest.mark.slow
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
    stats = units.read_stats(refs, run_id)
    for unit in ("ids/000000", "ids/000002"):
        rows = [r for r in stats if r["unit"] == unit]
        assert [r["iteration"] for r in rows] == [0, 1, 2]
        assert rows[-1]["w2wd_avg"] > rows[0]["w2wd_avg"]  # the latents of one identity spread
    assert fsck(refs.catalog, refs.store).clean


def test_chunked_gradients_are_exact_for_every_element(refs: Context) -> None:
    """The reference kept only each chunk's first gradient; chunks of 2 must equal one chunk of 6."""
    pipeline = load_pipeline(None, BASE)
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


@pytest.mark.slow
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
    assert fsck(refs.catalog, refs.store).clean


def _exists(ctx: Context, run_id: int) -> bool:
    try:
        get_run(ctx.catalog, run_id)
    except SynthdbError:
        return False
    return True


@pytest.mark.slow
def test_disco_starts_from_a_catalog_direction_set(refs: Context) -> None:
    planted = planted_set("dirs")
    planted.directions = [d for d in planted.directions if d.name in ("pose", "smile")]
    planted.save(refs.catalog)
    normals = torch.from_numpy(planted.normals)
    reach = np.maximum(-planted.neg_means, planted.pos_means)
    start = replace(BASE, iterations=0, initial_noise=0.0)
    variations.generate_variations(refs, replace(start, name="plain"))
    variations.generate_variations(
        refs, replace(start, name="disco", algorithm="disco", directions="dirs", expression_scaling=0.5)
    )
    _, plain = vectors(refs, "plain", "latent")
    _, disco = vectors(refs, "disco", "latent")
    offsets = torch.from_numpy(disco - plain)
    coefficients = torch.linalg.lstsq(normals.T, offsets.T).solution.T  # u_k * s_k * max(-neg, pos)
    assert torch.allclose(offsets, coefficients @ normals, atol=1e-4)  # only along the directions
    assert bool((coefficients[:, 0].abs() <= 0.5 * reach[0] + 1e-4).all())  # |u_k| <= 0.5
    assert bool((coefficients[:, 1].abs() <= 0.5 * 0.5 * reach[1] + 1e-4).all())
    assert float(coefficients[:, 0].abs().max()) > 0.25 * reach[0]
    with pytest.raises(SynthdbError, match="--directions NAME"):
        variations.generate_variations(refs, replace(BASE, name="x", algorithm="disco"))
    with pytest.raises(SynthdbError, match="no direction set named 'nope'"):
        variations.generate_variations(refs, replace(BASE, name="x", algorithm="disco", directions="nope"))
    planted_set("big", generator="stylegan2-ffhq-256").save(refs.catalog)
    with pytest.raises(SynthdbError, match="describes the W space of stylegan2-ffhq-256"):
        variations.generate_variations(refs, replace(BASE, name="x", algorithm="disco", directions="big"))


@pytest.mark.slow
def test_covariates_variations_are_the_edits_of_the_neutralised_references(sqlite_ctx: Context) -> None:
    ctx = sqlite_ctx
    generate_references(
        ctx, ReferenceParams(generator=TINY_GENERATOR, name="refs", algorithm="random", num_identities=2)
    )
    planted_set("dirs").save(ctx.catalog)
    params = replace(
        BASE, name="cov", algorithm="covariates", directions="dirs", pose_scaling=0.5, identities_per_unit=1
    )
    run_id = variations.generate_variations(ctx, params, shard=(1, 2))  # units are shardable
    variations.generate_variations(ctx, params, shard=(0, 2))
    keys, w = vectors(ctx, "cov", "latent")
    ekeys, e = vectors(ctx, "cov")
    labels = augmentation_labels()
    assert len(labels) == 17 and labels[0] == "pose_0" and labels[-1] == "surprise"
    assert sorted(keys) == sorted(f"{i:05d}/{lab}" for i in range(2) for lab in labels) and ekeys == keys
    _, ref_w = vectors(ctx, "refs", "latent")
    editor = LatentEdit.load(ctx.catalog, "dirs")
    want = editor.augmentation(editor.neutralise(torch.from_numpy(ref_w)), CovariateScaling(pose=0.5))
    want = {f"{i:05d}/{lab}": want[i, k].numpy() for i in range(2) for k, lab in enumerate(labels)}
    assert all(np.allclose(w[j], want[key], atol=1e-5) for j, key in enumerate(keys))
    pipeline = load_pipeline(None, params)  # embeddings are stored (the reference saved none) and are E(w)
    some = [0, 16, 20, 33]
    assert np.allclose(e[some], pipeline.embed(torch.from_numpy(w[some])).numpy(), atol=1e-4)
    stats = units.read_stats(ctx, run_id)
    assert [r["unit"] for r in stats] == ["ids/000001"] and stats[0]["w2wd_avg"] > 0
    assert fsck(ctx.catalog, ctx.store).clean

    pose_only = planted_set("pose-only")
    pose_only.directions = pose_only.directions[:1]
    pose_only.save(ctx.catalog)
    with pytest.raises(SynthdbError, match="no illumination, smile, .* which covariates variations needs"):
        variations.generate_variations(ctx, replace(params, directions="pose-only", name="y"))


def test_directions_without_an_algorithm_that_uses_them_are_refused() -> None:
    """Dispersion ignores covariate directions: passing them anyway is a mistake worth naming."""
    with pytest.raises(SynthdbError, match="--directions is used by disco and covariates"):
        replace(BASE, algorithm="dispersion", directions="mp-proj").check()
