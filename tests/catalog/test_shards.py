"""Shard rows: the one committed-shards query, its filters, and check results in both layouts."""

from __future__ import annotations

import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from synthdb.analysis.nearest import check_nearest
from synthdb.analysis.query import query
from synthdb.catalog import shards
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.runs import recorded_run
from synthdb.catalog.schema import Shard
from synthdb.context import Context
from synthdb.store import fsck
from synthdb.store.commit import NewSamples, ShardSpec, TableSpec, commit


def _dataset(
    ctx: Context, name: str, vectors: np.ndarray, labels: list[str], run_id: int | None = None
) -> int:
    ds = create_dataset(ctx.catalog, name, "synthetic", "generated")
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        run_id=run_id,
        unit="u0",
        samples=NewSamples(
            keys=[f"{name}{i}" for i in range(len(labels))], role="reference", identity_labels=labels
        ),
        shards=[
            ShardSpec("embedding", "m", {"embedding": vectors.astype(np.float32)}),
            ShardSpec("latent", "g", {"w": vectors[:, :4].astype(np.float32)}),
        ],
        tables=[TableSpec("stats", None, {"step": np.arange(2)})],
    )
    return ds


def test_committed_filters_combine(ctx: Context) -> None:
    rng = np.random.default_rng(0)
    with recorded_run(ctx.catalog, "references") as run_id:
        a = _dataset(ctx, "a", rng.standard_normal((4, 8)), ["1", "1", "2", "2"], run_id)
    b = _dataset(ctx, "b", rng.standard_normal((2, 8)), ["3", "4"])
    every = shards.committed(ctx.catalog)
    contents = ["embedding", "latent", "stats"]
    assert [(r.dataset, r.content) for r in every] == [(d, c) for d in "ab" for c in contents]
    assert [r.dataset_id for r in shards.committed(ctx.catalog, contents=["latent"])] == [a, b]
    picked = shards.committed(ctx.catalog, dataset_id=b, contents=["embedding", "stats"])
    assert [r.content for r in picked] == ["embedding", "stats"]
    assert [r.dataset for r in shards.committed(ctx.catalog, space="m")] == ["a", "b"]
    assert {r.dataset for r in shards.committed(ctx.catalog, run_id=run_id)} == {"a"}
    assert shards.committed(ctx.catalog, dataset_id=a, space="nope") == []
    assert shards.committed_spaces(ctx.catalog, a, "latent") == ["g"]
    assert shards.committed_spaces(ctx.catalog, a, "stats") == []  # stats have no space
    assert shards.done_units(ctx.catalog, run_id) == {"u0"}
    row = shards.committed(ctx.catalog, dataset_id=a, contents=["embedding"])[0]
    assert (row.rows, row.columns, row.state, row.unit, row.run_id) == (
        4,
        {"embedding": [8]},
        "committed",
        "u0",
        run_id,
    )


def test_retired_shards_leave_the_committed_set_and_go_with_gc(ctx: Context) -> None:
    rng = np.random.default_rng(1)
    ds = _dataset(ctx, "a", rng.standard_normal((2, 8)), ["1", "2"])
    latent = shards.committed(ctx.catalog, dataset_id=ds, contents=["latent"])[0]
    with ctx.catalog.begin() as conn:
        conn.execute(sa.update(Shard.__table__).where(Shard.id == latent.id).values(state="retired"))
    assert [r.content for r in shards.committed(ctx.catalog, dataset_id=ds)] == ["embedding", "stats"]
    assert [r.id for r in shards.retired(ctx.catalog)] == [latent.id]
    assert len(shards.every_shard(ctx.catalog)) == 3
    report = fsck.gc(ctx.catalog, ctx.store, min_age=0)
    assert report.removed_rows == 1 and report.removed_files == [latent.path]
    assert not ctx.store.abspath(latent.path).exists() and len(shards.every_shard(ctx.catalog)) == 2
    assert fsck.fsck(ctx.catalog, ctx.store).clean


def _old_result_shard(ctx: Context, dataset: int, ref_samples: list[int], query_identity: int) -> int:
    """A ``nearest`` result shard as synthdb wrote them before typed results: 1-wide float32 lists."""
    with recorded_run(ctx.catalog, "check", algorithm="nearest") as run_id:
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=dataset,
            run_id=run_id,
            sample_ids=np.asarray(ref_samples),
            identity_ids=np.full(len(ref_samples), query_identity),
            shards=[
                ShardSpec(
                    "result",
                    "nearest",
                    {
                        "angle_rad": np.array([[0.25], [1.5]], np.float32),
                        "rank": np.array([[1], [2]], np.float32),
                        "leak": np.array([[1.0], [np.nan]], np.float32),
                    },
                )
            ],
        )
    return run_id


@pytest.fixture
def checked(ctx: Context) -> tuple[Context, int, int]:
    """A REF and a QUERY dataset, one old-layout result shard, then one check nearest (typed layout)."""
    rng = np.random.default_rng(2)
    refs = rng.standard_normal((6, 16))
    _dataset(ctx, "ref", refs, ["r0", "r0", "r1", "r1", "r2", "r2"])
    queries = np.concatenate([refs[:2] + 0.01, rng.standard_normal((2, 16))])
    q = _dataset(ctx, "query", queries, ["q0", "q0", "q1", "q1"])
    query_identity = int(
        query(ctx, "SELECT id FROM catalog.identity WHERE label = 'q1'").column(0)[0].as_py()
    )
    old = _old_result_shard(ctx, q, [3, 5], query_identity)
    new = check_nearest(ctx, "query", "ref", "m", k=2, threshold=0.5, quiet=True)
    return ctx, old, new.run_id


def test_typed_result_shards_are_typed_parquet(checked: tuple[Context, int, int]) -> None:
    ctx, old, new = checked
    results = shards.committed(ctx.catalog, contents=["result"], space="nearest")
    assert [(r.run_id, shards.result_version(r)) for r in results] == [(old, 1), (new, shards.TYPED_RESULTS)]
    assert results[1].columns == {"sample_id": [], "identity_id": [], "rank": [], "angle_rad": [], "leak": []}
    schema = pq.read_schema(ctx.store.abspath(results[1].path))
    types = {name: str(schema.field(name).type) for name in ("rank", "angle_rad", "leak", "sample_id")}
    assert types == {"rank": "int32", "angle_rad": "double", "leak": "bool", "sample_id": "int64"}


def test_nearest_view_reads_both_layouts(checked: tuple[Context, int, int]) -> None:
    ctx, old, new = checked
    table = query(
        ctx,
        "SELECT run_id, query_identity, rank, ref_identity, angle_rad, leak FROM nearest "
        "ORDER BY run_id, query_identity, rank",
    )
    types = {f.name: str(f.type) for f in table.schema}
    assert types["rank"] == "int32" and types["angle_rad"] == "double" and types["leak"] == "bool"
    rows = table.to_pylist()
    assert [
        (r["rank"], r["ref_identity"], r["angle_rad"], r["leak"]) for r in rows if r["run_id"] == old
    ] == [
        (1, "r1", 0.25, True),
        (2, "r2", 1.5, None),  # NaN leak (no threshold) reads as NULL
    ]
    typed = [r for r in rows if r["run_id"] == new]
    assert [(r["query_identity"], r["rank"]) for r in typed] == [("q0", 1), ("q0", 2), ("q1", 1), ("q1", 2)]
    assert typed[0]["ref_identity"] == "r0" and typed[0]["leak"] is True and typed[0]["angle_rad"] < 0.5
    assert all(isinstance(r["leak"], bool) for r in typed)
    counted = query(ctx, "SELECT count(*) FROM nearest WHERE leak").column(0)[0].as_py()
    assert counted == 1 + sum(r["leak"] for r in typed)


def test_a_shard_whose_dataset_is_gone_is_still_checked_and_kept(sqlite_ctx: Context) -> None:
    """A catalog edited with foreign keys off: the shard row outlives its dataset. fsck still checks its
    file (and gc keeps it, since a row names it); the query views leave it out."""
    ctx = sqlite_ctx
    ds = _dataset(ctx, "a", np.random.default_rng(3).standard_normal((2, 8)), ["1", "2"])
    raw = sqlite3.connect(ctx.catalog.engine.url.database, isolation_level=None)
    raw.execute("PRAGMA foreign_keys=OFF")  # SQLite's default; synthdb turns them on
    raw.execute("DELETE FROM dataset WHERE id = ?", (ds,))
    raw.close()
    rows = shards.every_shard(ctx.catalog)
    assert len(rows) == 3 and {r.dataset for r in rows} == {None}
    report = fsck.fsck(ctx.catalog, ctx.store)
    assert report.checked == 3 and report.clean
    assert fsck.gc(ctx.catalog, ctx.store, min_age=0).removed_files == []
    assert query(ctx, "SELECT count(*) FROM embeddings").column(0)[0].as_py() == 0
