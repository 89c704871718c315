"""The shortcuts of the nearest path give what the long way gave: centroids of one-sample identities, the
index handed back in memory rather than read from its file, the sample columns without a deep copy."""

import numpy as np

from synthdb.analysis.index import Searcher, build_index, load_index
from synthdb.analysis.vectors import centroids, normalized, sample_rows
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.samples import sample_columns
from synthdb.context import Context
from synthdb.store.commit import NewSamples, ShardSpec, commit


def _summed_centroids(unit: np.ndarray, identity_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The long way: every identity's float64 sum, rounded to float32 and normalised."""
    identities = np.unique(identity_ids)
    sums = np.stack([unit[identity_ids == i].astype(np.float64).sum(axis=0) for i in identities])
    return identities, normalized(sums.astype(np.float32))


def test_centroids_of_single_and_several_samples() -> None:
    rng = np.random.default_rng(0)
    identity_ids = rng.permutation(np.concatenate([np.arange(50), np.repeat(np.arange(50, 70), 5)]))
    unit = normalized(rng.standard_normal((len(identity_ids), 64)).astype(np.float32))
    identities, means = centroids(unit, identity_ids)
    expected_identities, expected = _summed_centroids(unit, identity_ids)
    assert np.array_equal(identities, expected_identities) and means.dtype == np.float32
    several = identities >= 50
    assert np.array_equal(means[several], expected[several])  # the same float64 sums, bit for bit
    singles = np.array([unit[identity_ids == i][0] for i in identities[~several]])
    assert np.array_equal(means[~several], singles)  # a unit vector is its own centroid
    assert np.allclose(means, expected, rtol=0, atol=1e-6)
    only_singles = centroids(unit[identity_ids < 50], identity_ids[identity_ids < 50])
    assert np.array_equal(only_singles[1], singles)
    empty_ids, empty = centroids(unit[:0], identity_ids[:0])
    assert empty_ids.shape == (0,) and empty.shape == (0, 64)


def test_built_index_in_memory_searches_like_its_file(ctx: Context) -> None:
    rng = np.random.default_rng(1)
    ds = create_dataset(ctx.catalog, "ref", "synthetic", "generated")
    labels = [str(i) for i in range(200)] + [str(200 + i // 5) for i in range(100)]  # 200 x 1, 20 x 5
    vectors = rng.standard_normal((300, 32)).astype(np.float32)
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=NewSamples(keys=[f"k{i}" for i in range(300)], role="reference", identity_labels=labels),
        shards=[ShardSpec("embedding", "m", {"embedding": vectors})],
    )
    queries = normalized(rng.standard_normal((40, 32)).astype(np.float32))
    for per in ("sample", "identity"):
        for action in ("built", "fresh"):
            info = build_index(ctx, "ref", "m", "Flat", per, quiet=True)
            assert info.action == action and info.index.ntotal == info.ntotal
            in_memory = Searcher(info.index).search(queries, 5)
            from_file = Searcher(load_index(info.path)).search(queries, 5)
            assert all(np.array_equal(a, b) for a, b in zip(in_memory, from_file, strict=True))
    rows, columns = sample_rows(ctx, ds), sample_columns(ctx.catalog, ds)
    assert list(rows) == ["id", "identity_id", "role", "key", "path"]
    assert all(np.array_equal(rows[name], getattr(columns, name)) for name in rows)
