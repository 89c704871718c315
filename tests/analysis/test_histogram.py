"""Exact pair histograms: counts against a float64 NumPy reference, bounded edge moves, all pairs counted."""

import math
from pathlib import Path

import numpy as np
import pytest

from synthdb.analysis.histogram import histogram, scan, write_dat
from synthdb.catalog.datasets import create_dataset
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.commit import NewSamples, ShardSpec, commit


def clustered(n_ids: int, per: int, dims: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Identity centres plus within-identity noise, shuffled (the scanner must not rely on input order)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dims))
    ids = np.repeat(np.arange(n_ids) * 7 + 3, per)
    vectors = np.repeat(centres, per, axis=0) + spread * rng.standard_normal((n_ids * per, dims))
    order = rng.permutation(len(ids))
    return vectors[order].astype(np.float32), ids[order]


def reference_bins(distances: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(distances, edges)
    return counts


def check_against_reference(result, t64: np.ndarray, same: np.ndarray, distance64: np.ndarray) -> None:
    """Counts equal the float64 reference except pairs within the float32 tolerance of an edge: each such
    pair moves at most one bin, so bin k differs by at most the pairs near its two edges."""
    edges = result.binner.edges
    for counts, mask in ((result.inter, ~same), (result.intra, same)):
        ours = result.histogram(counts)
        ref = reference_bins(distance64[mask], edges)
        diff = np.abs(ours.counts - ref)
        near = ours.near_edges
        assert np.all(diff <= near[:-1] + near[1:]), np.flatnonzero(diff > near[:-1] + near[1:])
        assert diff.sum() <= 2 * ours.edge_pairs
        assert (
            ours.edge_pairs <= 0.01 * mask.sum()
        )  # the bound is useful: few pairs sit that close to an edge
        assert ours.pairs == mask.sum()


def test_angle_histogram_equals_float64_reference_on_3000_embeddings() -> None:
    vectors, ids = clustered(300, 10, 512, 0.9)
    result = scan(vectors, ids, "angle", bins=1024)
    unit = vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    upper = np.triu_indices(len(unit), 1)
    t64 = (unit @ unit.T)[upper]
    same = (ids[:, None] == ids[None, :])[upper]
    angles = np.arccos(np.clip(t64, -1, 1))
    check_against_reference(result, t64, same, angles)
    inter, intra = result.histogram(result.inter), result.histogram(result.intra)
    n = len(vectors)
    assert inter.pairs + intra.pairs == n * (n - 1) // 2
    assert intra.pairs == 300 * 45
    assert result.extreme_distance() == pytest.approx(angles[~same].min(), abs=1e-6)


def test_latent_euclidean_histogram_equals_float64_reference() -> None:
    vectors, ids = clustered(100, 8, 512, 0.7, seed=1)
    vectors = vectors * 3 + 5  # off-centre and scaled, like W latents
    result = scan(vectors, ids, "euclidean", bins=256, value_range=(0.0, 120.0))
    x = vectors.astype(np.float64)
    upper = np.triu_indices(len(x), 1)
    squared = (x**2).sum(1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0)[upper]
    same = (ids[:, None] == ids[None, :])[upper]
    check_against_reference(result, d2, same, np.sqrt(d2))
    assert result.extreme_distance() == pytest.approx(np.sqrt(d2[~same].min()), rel=1e-5)


def test_tiles_of_any_shape_give_the_same_counts() -> None:
    """Tile shape changes the GEMM's float32 rounding, so only pairs near an edge may move."""
    vectors, ids = clustered(60, 9, 64, 0.8, seed=2)
    ids[:30] = 999  # one identity larger than a tile, spanning tile boundaries
    whole = scan(vectors, ids, bins=128, tile=(4096, 4096))
    tiled = scan(vectors, ids, bins=128, tile=(37, 101))
    intra_only = scan(vectors, ids, bins=128, all_pairs=False, tile=(37, 101))
    pairs = [(whole, whole.inter, tiled, tiled.inter), (whole, whole.intra, tiled, tiled.intra)]
    pairs.append((whole, whole.intra, intra_only, intra_only.intra))
    for scan_a, a, scan_b, b in pairs:
        ha, hb = scan_a.histogram(a), scan_b.histogram(b)
        assert ha.pairs == hb.pairs
        near = np.maximum(ha.near_edges, hb.near_edges)
        assert np.all(np.abs(ha.counts - hb.counts) <= near[:-1] + near[1:])
    assert intra_only.all is None
    assert whole.extreme_distance() == pytest.approx(tiled.extreme_distance(), abs=1e-6)
    assert {whole.extreme[1], whole.extreme[2]} == {tiled.extreme[1], tiled.extreme[2]}


def test_dat_export_is_the_reference_format(tmp_path: Path) -> None:
    path = tmp_path / "h.dat"
    write_dat(path, np.array([0.0, 1.5]), [np.array([0.25, 0.125]), np.array([1.0, 0.0])])
    lines = path.read_text().splitlines()
    assert lines[0] == f"{0.0:16f}{0.25:16f}{1.0:16f}" and len(lines[1]) == 48
    assert np.allclose(
        np.array([[float(v) for v in line.split()] for line in lines]), [[0, 0.25, 1], [1.5, 0.125, 0]]
    )


def test_histogram_over_committed_shards(ctx: Context, tmp_path: Path) -> None:
    vectors, ids = clustered(40, 5, 128, 0.8, seed=3)
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    for part in (slice(0, 120), slice(120, 200)):
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=ds,
            samples=NewSamples(
                keys=[f"s{i}" for i in range(part.start, part.stop)],
                role="variation",
                identity_labels=[str(i) for i in ids[part]],
            ),
            shards=[
                ShardSpec("embedding", "m128", {"embedding": vectors[part]}),
                ShardSpec("latent", "gen", {"w": vectors[part] * 2}),
            ],
        )
    both = histogram(ctx, "syn", bins=64, value_range=(0.0, math.pi), quiet=True)
    assert both.unit == "rad" and both.model == "m128"
    assert both.inter.pairs + both.intra.pairs == 200 * 199 // 2 and both.intra.pairs == 40 * 10
    direct = scan(vectors, ids, bins=64)
    assert np.array_equal(both.inter.counts, direct.histogram(direct.inter).counts)
    fitted = histogram(ctx, "syn", bins=64, quiet=True)  # 64 bins over the range the pairs occupy
    assert len(fitted.edges) == 65 and fitted.edges[0] > 0 and fitted.edges[-1] < math.pi
    assert fitted.inter.pairs == both.inter.pairs and fitted.intra.pairs == both.intra.pairs
    latent = histogram(ctx, "syn", pair_class="intra", space="latent", bins=32, quiet=True)
    assert latent.unit == "latent units" and latent.inter is None and latent.intra.pairs == 400
    with pytest.raises(SynthdbError, match="no committed embedding shards of 'other'"):
        histogram(ctx, "syn", model="other", quiet=True)
    with pytest.raises(SynthdbError, match="--bins"):
        histogram(ctx, "syn", bins=0, quiet=True)


@pytest.mark.parametrize(("metric", "all_pairs"), [("angle", True), ("euclidean", True), ("angle", False)])
def test_compiled_tile_pass_counts_like_the_torch_ops(metric: str, all_pairs: bool) -> None:
    """The CPU's compiled pass and the torch ops a GPU runs (here on the CPU) give the same bins, edge counts
    and closest pair, over diagonal and rectangular tiles that cut identities, with tied values on an edge
    (identical vectors: cosine 1, distance 0, both the first bin's edge)."""
    import torch

    from synthdb.analysis.histogram import EdgeBinner, prepare, scan_pairs, uniform_edges
    from synthdb.analysis.vectors import identity_blocks

    vectors, ids = clustered(30, 9, 48, 0.8, seed=5)
    ids[:40] = 999  # one identity wider than a tile
    vectors[3] = vectors[100]  # a tie for the closest pair
    vectors[7] = vectors[100]
    order, _, starts = identity_blocks(ids)
    left, right, t_range, tolerance, top = prepare(vectors[order], metric, torch.device("cpu"))
    edges = uniform_edges(77, (0.0, math.pi if metric == "angle" else top))
    binner = EdgeBinner(metric, edges, t_range, tolerance, torch.device("cpu"))
    runs = [scan_pairs(left, right, starts, binner, all_pairs, (23, 57), compiled=c) for c in (True, False)]
    (all_a, intra_a, extreme_a), (all_b, intra_b, extreme_b) = runs
    assert (all_a is None) == (all_b is None) == (not all_pairs)
    for a, b in ((intra_a, intra_b), (all_a, all_b)) if all_pairs else ((intra_a, intra_b),):
        assert np.array_equal(binner.finish(a), binner.finish(b))
        assert np.array_equal(a.near, b.near)
        assert a.fine.sum() == b.fine.sum() > 0
        # a value may land one cell apart (the torch op may fuse the multiply-add, rounding once), no further
        assert np.all(abs(np.cumsum(a.fine - b.fine))[:-1] <= a.fine[1:] + b.fine[1:])
    assert extreme_a == extreme_b
    if all_pairs:
        n = len(ids)
        assert binner.finish(all_a).sum() == n * (n - 1) // 2
        assert extreme_a is not None and extreme_a[1] < extreme_a[2]
