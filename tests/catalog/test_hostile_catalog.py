"""Hostile conditions around the catalog: a held write lock, a newer schema, writes through `synthdb query`
below the SQL parser, a full disk during a shard write, an import killed between its dataset row
and its first chunk, and catalog URLs that name no usable catalog (not a database, damaged, absent)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from synthdb.analysis import query as query_module
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import Run, Sample, Shard
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.sources.registry import import_named
from synthdb.store import fsck
from tests.conftest import CliRun
from tests.stress.harness import STATS


def _count(ctx: Context, table) -> int:  # noqa: ANN001
    with ctx.catalog.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def _hold_lock(path: str, seconds: float) -> threading.Thread:
    """Another writer: hold SQLite's write lock for ``seconds`` in a thread."""
    ready = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait()
    return thread


def test_lock_waits_retry_with_backoff_until_the_writer_is_done(sqlite_ctx: Context) -> None:
    catalog = Catalog(sqlite_ctx.ws.catalog_url, busy_timeout_ms=1, lock_wait_s=60)
    holder = _hold_lock(catalog.engine.url.database, 0.6)
    try:
        dataset = create_dataset(catalog, "after-the-lock", "synthetic", "generated")  # would fail at 1 ms
    finally:
        holder.join()
        catalog.dispose()
    assert dataset == 1
    STATS["hostile_inputs"] += 1


def test_a_lock_held_too_long_is_one_clear_error(sqlite_ctx: Context) -> None:
    catalog = Catalog(sqlite_ctx.ws.catalog_url, busy_timeout_ms=1, lock_wait_s=0.3)
    holder = _hold_lock(catalog.engine.url.database, 1.5)
    try:
        with pytest.raises(SynthdbError, match=r"stayed locked by another writer .*synthdb runs list"):
            create_dataset(catalog, "never", "synthetic", "generated")
    finally:
        holder.join()
        catalog.dispose()
    STATS["hostile_inputs"] += 1


def test_catalog_at_a_newer_schema_is_refused(sqlite_ctx: Context) -> None:
    with sqlite_ctx.catalog.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    with pytest.raises(SynthdbError, match="ffffffffffff") as refused:
        Context.open(sqlite_ctx.ws.root)
    assert "\n" not in str(refused.value)
    STATS["hostile_inputs"] += 1


@pytest.fixture
def one_sample(ctx: Context) -> Context:
    ds = create_dataset(ctx.catalog, "d", "synthetic", "generated")
    from synthdb.store.commit import NewSamples, ShardSpec, commit

    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=NewSamples(keys=["k"], role="reference", identity_labels=["i"]),
        shards=[ShardSpec("embedding", "m", {"embedding": np.ones((1, 4))})],
    )
    return ctx


@pytest.mark.parametrize(
    "sql",
    ["DELETE FROM sample", "UPDATE sample SET key = 'x'", "INSERT INTO run (kind, status) VALUES ('x', 'x')"],
)
def test_query_connections_refuse_writes_below_the_parser(one_sample: Context, sql: str) -> None:
    """The parser check is skipped here on purpose: the connections themselves must refuse the write."""
    ctx = one_sample
    with pytest.raises(SynthdbError, match="(?i)read.only|readonly|attempt to write"):
        query_module._query_catalog(ctx, sql)  # the catalog engine's connection, without check_read_only
    con = query_module.connect(ctx)  # the DuckDB engine's connection, without check_read_only
    try:
        with pytest.raises(duckdb.Error):
            con.execute(sql.replace("sample", "catalog.sample").replace("run ", "catalog.run "))
    finally:
        con.close()
    assert _count(ctx, Sample) == 1 and _count(ctx, Run) == 0
    STATS["hostile_inputs"] += 1


FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    from synthdb.context import Context
    from synthdb.errors import SynthdbError
    from synthdb.store.commit import NewSamples, ShardSpec, commit

    ctx = Context.open(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))  # a store with 1 MB per file left
    try:
        commit(ctx.catalog, ctx.store, dataset_id=int(sys.argv[2]),
               samples=NewSamples(keys=[f"big{i}" for i in range(1000)], role="reference",
                                  identity_labels=["x"] * 1000),
               shards=[ShardSpec("embedding", "m", {"embedding": np.ones((1000, 512))})])
    except SynthdbError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    """
)


def test_full_disk_during_a_shard_write_loses_nothing(sqlite_ctx: Context) -> None:
    ctx = sqlite_ctx
    ds = create_dataset(ctx.catalog, "d", "synthetic", "generated")
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(ctx.ws.root), str(ds)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("cannot write shard ") and "free space in the store" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line, no traceback
    assert _count(ctx, Sample) == 0 and _count(ctx, Shard) == 0
    assert fsck.fsck(ctx.catalog, ctx.store).clean  # the staged file was removed too
    STATS["hostile_inputs"] += 1
    STATS["faults_injected"] += 1
    STATS["faults_injected[full disk]"] += 1


KILLED_IMPORT = """
import os, signal, sys
import synthdb.sources.importer as importer
from synthdb.context import Context
from synthdb.sources.registry import import_named

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

importer._commit_chunk = die  # the dataset row is committed; no sample is
import_named(Context.open(sys.argv[1]), "imagefolder", sys.argv[2], name="faces", quiet=True)
"""


def test_import_killed_after_its_dataset_row_resumes_on_rerun(sqlite_ctx: Context, tmp_path) -> None:  # noqa: ANN001
    """Regression: a re-run used to report the half-made dataset as 'imported already' (0 samples)."""
    tree = tmp_path / "tree"
    for i in range(6):
        (tree / f"id{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tree / f"id{i % 2}" / f"{i}.png")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_IMPORT, str(sqlite_ctx.ws.root), str(tree)], capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL
    assert _count(sqlite_ctx, Sample) == 0
    report = import_named(sqlite_ctx, "imagefolder", tree, name="faces", quiet=True)
    assert report.added == 6 and report.note is None
    again = import_named(sqlite_ctx, "imagefolder", tree, name="faces", quiet=True)
    assert again.run_id is None and again.existing == 6 and "imported already" in again.note
    with sqlite_ctx.catalog.engine.connect() as conn:
        statuses = conn.execute(sa.select(Run.status).order_by(Run.id)).scalars().all()
    assert statuses == ["interrupted", "succeeded"]  # the killed run is closed, not left running
    STATS["faults_injected"] += 1
    STATS["faults_injected[import killed after its dataset row]"] += 1


KILLED_REBUILD = """
import os, signal, sys
from pathlib import Path
from synthdb.context import Context
from synthdb.analysis.index import build_index

real_unlink = Path.unlink

def unlink_then_die(self, missing_ok=False):
    if self.suffix == ".faiss":  # the new index is committed; the file it replaced is still there
        os.kill(os.getpid(), signal.SIGKILL)
    return real_unlink(self, missing_ok=missing_ok)

Path.unlink = unlink_then_die
build_index(Context.open(sys.argv[1]), "d", "m", rebuild=True, quiet=True)
"""


def test_index_file_left_by_a_killed_rebuild_is_found_and_collected(sqlite_ctx: Context) -> None:
    """Regression: fsck and gc looked at shards/ only, so the replaced index file leaked forever."""
    from synthdb.analysis.index import build_index
    from synthdb.store.commit import NewSamples, ShardSpec, commit

    ctx = sqlite_ctx
    ds = create_dataset(ctx.catalog, "d", "synthetic", "generated")
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=NewSamples(keys=[f"k{i}" for i in range(8)], role="reference", identity_labels=["i"] * 8),
        shards=[ShardSpec("embedding", "m", {"embedding": np.random.default_rng(0).random((8, 4))})],
    )
    build_index(ctx, "d", "m", quiet=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_REBUILD, str(ctx.ws.root)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    report = fsck.fsck(ctx.catalog, ctx.store)
    assert not report.missing and len(report.orphans) == 1 and report.orphans[0].startswith("indexes/")
    assert fsck.gc(ctx.catalog, ctx.store, min_age=0).removed_files == report.orphans
    assert fsck.fsck(ctx.catalog, ctx.store).clean and len(list((ctx.store.root / "indexes").iterdir())) == 1
    STATS["faults_injected"] += 1
    STATS["faults_injected[index rebuild killed]"] += 1


def _catalog_file(tmp: Path, name: str, data: bytes) -> str:
    (tmp / name).write_bytes(data)
    return f"sqlite:///{tmp / name}"


CATALOG_URLS = {
    "/etc/passwd (a copy)": lambda tmp, db: _catalog_file(tmp, "passwd", Path("/etc/passwd").read_bytes()),
    "a truncated catalog": lambda tmp, db: _catalog_file(tmp, "cut.db", db[: len(db) // 2]),
    "random bytes": lambda tmp, db: _catalog_file(tmp, "noise.db", np.random.default_rng(0).bytes(65536)),
    "an empty file": lambda tmp, db: _catalog_file(tmp, "empty.db", b""),
    "a folder": lambda tmp, db: f"sqlite:///{tmp}",
    "a file that is not there": lambda tmp, db: f"sqlite:///{tmp / 'nowhere' / 'catalog.db'}",
    "PostgreSQL that refuses": lambda tmp, db: "postgresql://nobody@127.0.0.1:9/none",
}


@pytest.mark.parametrize("case", list(CATALOG_URLS))
def test_a_catalog_that_is_not_one_is_one_line_from_every_command(
    sqlite_ctx: Context, tmp_path: Path, case: str, synthdb_cli: CliRun
) -> None:
    """``info``, ``query`` and ``fsck`` on a catalog URL that names no usable catalog: one line naming the
    catalog and the fix, exit status 1, no traceback, and the file left as it was (no byte written, no
    journal beside it, no catalog created where there was none)."""


    folder = tmp_path / "catalogs"
    folder.mkdir()
    url = CATALOG_URLS[case](folder, Path(sqlite_ctx.catalog.engine.url.database).read_bytes())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for command in (["info"], ["query", "SELECT count(*) FROM catalog.sample"], ["fsck"]):
        result = synthdb_cli(*command, ws=str(sqlite_ctx.ws.root), env={"SYNTHDB_CATALOG_URL": url})
        assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.exception
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        assert "catalog" in result.output and (
            "catalog_url" in result.output or "synthdb db upgrade" in result.output
        )
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    STATS["hostile_inputs"] += 3
