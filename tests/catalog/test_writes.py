"""Catalog writes on SQLite and PostgreSQL: datasets, identities, samples, runs, bulk ids."""

import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from synthdb.catalog import bulk
from synthdb.catalog.datasets import create_dataset, dataset_id
from synthdb.catalog.engine import Catalog
from synthdb.catalog.runs import recorded_run
from synthdb.catalog.schema import Identity, Run, Sample
from synthdb.context import Context
from synthdb.errors import SynthdbError


def test_dataset_names_are_unique_and_looked_up(ctx: Context) -> None:
    first = create_dataset(ctx.catalog, "ffhq", "genuine", "ffhq", root="/data/ffhq")
    assert dataset_id(ctx.catalog, "ffhq") == first
    with pytest.raises(SynthdbError, match="exists already"):
        create_dataset(ctx.catalog, "ffhq", "genuine", "ffhq")
    with pytest.raises(SynthdbError, match=r"no dataset named 'lfw' .*known: ffhq"):
        dataset_id(ctx.catalog, "lfw")
    with pytest.raises(SynthdbError, match="kind 'real'"):
        create_dataset(ctx.catalog, "x", "real", "x")


def test_bulk_identities_and_samples(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    labels = [f"{i:05d}" for i in range(300) for _ in range(3)]
    with ctx.catalog.begin() as conn:
        idents = bulk.identity_ids(conn, ds, labels)
        ids = bulk.allocate_ids(conn, Sample.__table__, len(labels))
        bulk.insert_samples(
            conn,
            ds,
            ids,
            [f"k{i}" for i in range(len(labels))],
            idents,
            "reference",
            attributes=[{"pose": i % 5} for i in range(len(labels))],
        )
    assert len(np.unique(idents)) == 300
    assert (idents.reshape(300, 3) == idents.reshape(300, 3)[:, :1]).all()
    with ctx.catalog.begin() as conn:
        again = bulk.identity_ids(conn, ds, ["00007", "new"])  # get-or-create
        assert again[0] == idents[21]
        assert conn.execute(sa.select(sa.func.count()).select_from(Identity)).scalar_one() == 301
        rows = conn.execute(sa.select(Sample.id, Sample.attributes).order_by(Sample.id)).all()
    assert [r.id for r in rows] == ids.tolist()
    assert rows[7].attributes == {"pose": 2}


def test_allocated_ids_never_collide(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    seen: list[int] = []
    for batch in range(3):
        with ctx.catalog.begin() as conn:
            ids = bulk.allocate_ids(conn, Sample.__table__, 50)
            bulk.insert_samples(conn, ds, ids, [f"{batch}-{i}" for i in range(50)], None, "reference")
        seen += ids.tolist()
    assert len(set(seen)) == 150


def test_duplicate_sample_key_rolls_back_everything(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    with pytest.raises(sa.exc.IntegrityError), ctx.catalog.begin() as conn:
        ids = bulk.allocate_ids(conn, Sample.__table__, 2)
        bulk.insert_samples(conn, ds, ids, ["same", "same"], None, "reference")
    with ctx.catalog.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Sample)).scalar_one() == 0


def test_foreign_keys_are_enforced(ctx: Context) -> None:
    with pytest.raises(sa.exc.IntegrityError), ctx.catalog.begin() as conn:
        bulk.insert_samples(conn, 999, np.array([1]), ["k"], None, "reference")


def test_bad_role_and_lengths(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    with ctx.catalog.begin() as conn:
        with pytest.raises(SynthdbError, match="role 'ref'"):
            bulk.insert_samples(conn, ds, np.array([1]), ["k"], None, "ref")
        with pytest.raises(SynthdbError, match="labels has 2 entries for 1 sample keys"):
            bulk.insert_samples(conn, ds, np.array([1]), ["k"], None, "reference", labels=["a", "b"])


def test_recorded_run_statuses(ctx: Context) -> None:
    with recorded_run(ctx.catalog, "import", algorithm="x", params={"a": 1}, seed=3) as ok_id:
        pass
    with pytest.raises(ValueError), recorded_run(ctx.catalog, "import") as bad_id:
        raise ValueError("boom")
    with ctx.catalog.session() as session:
        ok, bad = session.get(Run, ok_id), session.get(Run, bad_id)
        assert (ok.status, ok.progress, ok.params, ok.seed) == ("succeeded", 1.0, {"a": 1}, 3)
        assert ok.finished_at is not None and ok.host and ok.synthdb_version
        assert bad.status == "failed" and "ValueError: boom" in bad.error


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    """Regression: every transaction used to take SQLite's write lock, so a read during a long commit
    failed with 'database is locked' once the busy timeout passed. Reads now see the last committed
    state while a writer holds the lock, and the writer's rows appear once it commits."""
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}", busy_timeout_ms=50)
    with catalog.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with catalog.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
            holding.set()
            release.wait()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        holding.wait()
        for _ in range(3):  # pooled connections come back as readers, not writers
            with catalog.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
    finally:
        release.set()
        thread.join()
    with catalog.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 2
    catalog.dispose()
