"""Centroids read shard by shard (synthdb/analysis/vectors.py) equal those of every vector loaded at once,
and hold far less than every vector in memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from synthdb.analysis.vectors import centroids, identity_centroids, load_vectors, normalized
from synthdb.catalog.datasets import create_dataset
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.commit import NewSamples, ShardSpec, commit


def _commit_shards(ctx: Context, name: str, parts: list[tuple[list[str | None], np.ndarray]]) -> None:
    """One shard per part: its samples' identity labels (None: no identity) and their vectors."""
    ds = create_dataset(ctx.catalog, name, "synthetic", "generated")
    done = 0
    for labels, vectors in parts:
        keys = [f"s{done + i}" for i in range(len(labels))]
        known = [label for label in labels if label is not None]
        if len(known) == len(labels):
            samples = NewSamples(keys=keys, role="reference", identity_labels=labels)
        else:  # samples without identity: existing identity ids, None where there is none
            from synthdb.catalog import bulk

            with ctx.catalog.begin() as conn:
                ids = dict(zip(known, bulk.identity_ids(conn, ds, known).tolist(), strict=True))
            samples = NewSamples(
                keys=keys, role="reference", identity_ids=[ids.get(label) for label in labels]
            )
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=ds,
            unit=str(done),
            samples=samples,
            shards=[ShardSpec("embedding", "m", {"embedding": vectors})],
        )
        done += len(labels)


def test_streamed_centroids_equal_those_of_all_vectors_at_once(ctx: Context) -> None:
    """Identities spread over three shards, one-sample identities and samples of no identity."""
    rng = np.random.default_rng(3)
    parts: list[tuple[list[str | None], np.ndarray]] = []
    for shard in range(3):
        labels: list[str | None] = [f"many{i}" for i in rng.integers(0, 12, 40)]
        labels += [f"one{shard}_{i}" for i in range(5)] + [None, None]
        parts.append((labels, (rng.standard_normal((len(labels), 24)) * 3).astype(np.float32)))
    _commit_shards(ctx, "spread", parts)
    loaded = load_vectors(ctx, "spread", "m").with_identity()
    expected_ids, expected = centroids(normalized(loaded.vectors), loaded.identity_ids)
    identities, means = identity_centroids(ctx, "spread", "m")
    assert np.array_equal(identities, expected_ids) and means.dtype == np.float32
    assert np.allclose(means, expected, rtol=0, atol=1e-6)
    assert np.allclose(np.linalg.norm(means, axis=1), 1, atol=1e-6)


def test_streamed_centroids_hold_a_fraction_of_the_vectors(sqlite_ctx: Context) -> None:
    """Sixteen shards of 2,000 x 256 (32 MB of vectors), 40 identities: numpy's peak while computing the
    centroids (a few shards at a time) stays below half of what loading every vector takes."""
    rng = np.random.default_rng(4)
    parts = [
        ([f"p{i % 40}" for i in range(2000)], rng.standard_normal((2000, 256)).astype(np.float32))
        for _ in range(16)
    ]
    _commit_shards(sqlite_ctx, "big", parts)
    tracemalloc.start()
    try:
        identity_centroids(sqlite_ctx, "big", "m")
        _, streamed = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        load_vectors(sqlite_ctx, "big", "m")
        _, loaded = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded >= 16 * 2000 * 256 * 4
    assert streamed < loaded / 2


def test_a_sample_committed_twice_is_refused(sqlite_ctx: Context) -> None:
    _commit_shards(sqlite_ctx, "twice", [(["a", "b"], np.eye(2, 8, dtype=np.float32))])
    loaded = load_vectors(sqlite_ctx, "twice", "m")
    commit(
        sqlite_ctx.catalog,
        sqlite_ctx.store,
        dataset_id=loaded.dataset_id,
        unit="again",
        sample_ids=loaded.sample_ids,
        identity_ids=loaded.identity_ids,
        shards=[ShardSpec("embedding", "m", {"embedding": np.eye(2, 8, dtype=np.float32)})],
    )
    with pytest.raises(SynthdbError, match="more than one committed embedding"):
        identity_centroids(sqlite_ctx, "twice", "m")
