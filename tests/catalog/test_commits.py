"""The catalog half of the commit protocol: ids reserved ahead, no lock held while files are written,
identities another writer created first, and crashes that leave nothing visible."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from synthdb.catalog import bulk, commits
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.engine import Catalog
from synthdb.catalog.samples import identity_labels
from synthdb.catalog.schema import Identity, Sample, Shard
from synthdb.context import Context
from synthdb.store import fsck, parquet
from synthdb.store.commit import NewSamples, ShardSpec, TableSpec, commit
from tests.stress.harness import clean_env


def _new(keys: list[str], labels: list[str]) -> NewSamples:
    return NewSamples(keys=keys, role="reference", identity_labels=labels)


def _sample_rows(ctx: Context) -> dict[int, tuple[str, int]]:
    """sample id -> (key, identity id) as committed."""
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(sa.select(Sample.id, Sample.key, Sample.identity_id)).all()
    return {sid: (key, ident) for sid, key, ident in rows}


def _files_agree_with_rows(ctx: Context) -> int:
    """Every committed shard names, per row, the sample and identity its catalog rows say; return rows."""
    rows, seen = _sample_rows(ctx), 0
    with ctx.catalog.engine.connect() as conn:
        paths = conn.execute(
            sa.select(Shard.path).where(Shard.state == "committed", Shard.content == "embedding")
        ).scalars()
    for path in paths:
        sample_ids, identity_ids, _ = parquet.read_vectors(ctx.store.abspath(path), "embedding")
        assert [rows[int(s)][1] for s in sample_ids] == identity_ids.tolist()
        seen += len(sample_ids)
    return seen


def test_reserved_ids_are_never_handed_out_twice(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    first = commits.reserve(ctx.catalog, ds, _new(["a", "b"], ["x", "y"]), [])
    second = commits.reserve(ctx.catalog, ds, _new(["c"], ["x"]), [])  # "x" is still not committed
    assert not set(first.ids) & set(second.ids)
    assert first.new_identities["x"] != second.new_identities["x"]
    with ctx.catalog.begin() as conn:  # an import allocates while both reservations are open
        imported = bulk.allocate_ids(conn, Sample.__table__, 3)
    assert not set(imported) & (set(first.ids) | set(second.ids))
    with ctx.catalog.engine.connect() as conn:  # nothing is visible before make_visible
        assert conn.execute(sa.select(sa.func.count()).select_from(Identity)).scalar_one() == 0


def test_identities_created_meanwhile_are_adopted(ctx: Context) -> None:
    """Another writer commits label "x" between reserve and make_visible: the commit is refused with the
    committed id, nothing of it is written, and the corrected reservation commits."""
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    mine = commits.reserve(ctx.catalog, ds, _new(["a", "b", "c"], ["x", "y", "x"]), [])
    with ctx.catalog.begin() as conn:
        (theirs,) = bulk.identity_ids(conn, ds, ["x"])
    with pytest.raises(commits.IdentitiesMoved) as moved:
        commits.make_visible(
            ctx.catalog, ds, run_id=None, unit=None, shards=[], samples=mine, issue_rows=[], checks=[]
        )
    assert moved.value.committed == {"x": theirs} and _sample_rows(ctx) == {}
    fixed = mine.moved_to(moved.value.committed)
    assert fixed.identity_ids.tolist() == [theirs, mine.new_identities["y"], theirs]
    assert fixed.new_identities == {"y": mine.new_identities["y"]}
    commits.make_visible(
        ctx.catalog, ds, run_id=None, unit=None, shards=[], samples=fixed, issue_rows=[], checks=[]
    )
    assert sorted(_sample_rows(ctx).values()) == [("a", theirs), ("b", fixed.identity_ids[1]), ("c", theirs)]
    assert sorted(identity_labels(ctx.catalog, [theirs, fixed.identity_ids[1]]).values()) == ["x", "y"]


def test_no_write_lock_is_held_while_shard_files_are_written(
    sqlite_ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second connection takes SQLite's write lock at once (no wait) while the commit encodes, fsyncs
    and renames its files: the spies call the real functions after looking."""
    ctx = sqlite_ctx
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    database = ctx.catalog.engine.url.database
    free: list[bool] = []

    def lock_is_free() -> bool:
        probe = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()

    def spy(real):  # noqa: ANN001, ANN202 - wraps any callable
        def observed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            free.append(lock_is_free())
            return real(*args, **kwargs)

        return observed

    monkeypatch.setattr(parquet, "write_table", spy(parquet.write_table))
    monkeypatch.setattr("synthdb.store.commit.os.replace", spy(__import__("os").replace))
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=_new([f"k{i}" for i in range(6)], ["p", "q"] * 3),
        shards=[
            ShardSpec("embedding", "m", {"embedding": np.ones((6, 8))}),
            ShardSpec("latent", "g", {"w": np.ones((6, 4))}),
        ],
    )
    assert free == [True] * 4  # two files written, two renamed, never under the lock
    assert _files_agree_with_rows(ctx) == 6


WRITER = r"""
import sys
import numpy as np
from synthdb.context import Context
from synthdb.store.commit import NewSamples, ShardSpec, TableSpec, commit

ws, dataset, writer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Context.open(ws) as ctx:
    for c in range(4):
        keys = [f"w{writer}/c{c}/{r}" for r in range(12)]
        labels = [f"c{c}-{r % 4}" for r in range(12)]  # every writer creates the same new labels
        commit(ctx.catalog, ctx.store, dataset_id=dataset, unit=f"w{writer}c{c}",
               samples=NewSamples(keys=keys, role="variation", identity_labels=labels),
               shards=[ShardSpec("embedding", "m", {"embedding": np.full((12, 4), writer, np.float32)})])
"""


@pytest.mark.slow
def test_concurrent_writers_of_the_same_new_identities(ctx: Context) -> None:
    """Four processes create the same labels at once: each label exists once, and every shard file names
    the identity id its sample row has (a writer that lost a race rewrote its files)."""
    ds = create_dataset(ctx.catalog, "shared", "synthetic", "generated")
    env = clean_env(SYNTHDB_CATALOG_URL=ctx.ws.catalog_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ctx.ws.root), str(ds), str(w)],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    with ctx.catalog.engine.connect() as conn:
        labels = conn.execute(sa.select(Identity.label)).scalars().all()
    assert sorted(labels) == sorted(f"c{c}-{r}" for c in range(4) for r in range(4))
    assert _files_agree_with_rows(ctx) == 4 * 4 * 12
    assert fsck.fsck(ctx.catalog, ctx.store).clean


RESERVE_AND_DIE = r"""
import os, signal, sys
from synthdb.catalog import commits
from synthdb.catalog.engine import Catalog
from synthdb.store.commit import NewSamples

catalog = Catalog(sys.argv[1])
commits.reserve(catalog, int(sys.argv[2]), NewSamples(keys=["a", "b"], role="reference",
                                                       identity_labels=["ghost"]), [])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_after_reserving_leaves_gaps_only(ctx: Context, tmp_path: Path) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    before = commit(
        ctx.catalog, ctx.store, dataset_id=ds, samples=_new(["s0"], ["x"]),
        shards=[ShardSpec("embedding", "m", {"embedding": np.ones((1, 4))})],
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", RESERVE_AND_DIE, ctx.ws.catalog_url, str(ds)], env=clean_env(), timeout=120
    )
    assert proc.returncode < 0
    with ctx.catalog.engine.connect() as conn:
        assert conn.execute(sa.select(Identity.label)).scalars().all() == ["x"]  # no "ghost"
    after = commit(
        ctx.catalog, ctx.store, dataset_id=ds, samples=_new(["s1"], ["y"]),
        shards=[ShardSpec("embedding", "m", {"embedding": np.ones((1, 4))})],
    )  # fmt: skip
    assert int(after.sample_ids[0]) > int(before.sample_ids[0]) + 1  # the dead writer's ids stay unused
    assert _files_agree_with_rows(ctx) == 2 and fsck.fsck(ctx.catalog, ctx.store).clean


def test_sqlite_reservations_survive_deleted_rows(sqlite_ctx: Context) -> None:
    """Ids handed out are never handed out again, even when the rows that used the highest ones are gone
    (SQLite alone: PostgreSQL's sequences behave so by themselves)."""
    ctx = sqlite_ctx
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    with ctx.catalog.begin() as conn:
        first = bulk.allocate_ids(conn, Identity.__table__, 5)
        bulk.insert_identities(conn, ds, {f"l{i}": int(i) for i in first})
        conn.execute(sa.delete(Identity.__table__))
    other = Catalog(ctx.ws.catalog_url)
    try:
        with other.begin() as conn:
            again = bulk.allocate_ids(conn, Identity.__table__, 2)
    finally:
        other.dispose()
    assert int(again[0]) == int(first[-1]) + 1


def test_typed_table_shards_record_their_column_shapes(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    columns = {"step": np.arange(3), "w": np.zeros((3, 2, 5)), "ok": np.ones(3) > 0}
    done = commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        tables=[TableSpec("stats", None, columns)],
    )
    with ctx.catalog.engine.connect() as conn:
        row = conn.execute(sa.select(Shard).where(Shard.id == done.shard_ids[0])).one()
    assert row.columns == {"step": [], "w": [2, 5], "ok": []}
    schema = pq.read_schema(ctx.store.abspath(row.path))
    assert str(schema.field("step").type) == "int64" and str(schema.field("ok").type) == "bool"
