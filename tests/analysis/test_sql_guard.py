"""Hostile SQL through ``synthdb query`` (both engines) and ``export --where``, on SQLite and PostgreSQL.

Every case runs against a real workspace (real SQLite file, real PostgreSQL server, real DuckDB, real
Parquet shards) and must end in one line, with every file under the test's folder (workspace, catalog,
a bystander SQLite database, the current directory) unchanged byte for byte and mtime, no file added,
and, on PostgreSQL, no row, large object or advisory lock added and a bystander session still alive.
Bounds are asserted on outcomes (the error says what stopped the query), never on wall-clock time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psycopg
import pytest
import sqlalchemy as sa

from synthdb.admin import init_workspace
from synthdb.analysis import query as query_module
from synthdb.analysis.query import Bounds, connect, query
from synthdb.catalog.datasets import create_dataset
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.export.api import export
from synthdb.export.selection import matching_ids
from synthdb.store.commit import NewSamples, ShardSpec, commit
from tests.conftest import POSTGRES, POSTGRES_ENV
from tests.stress.harness import STATS

SECRET_TEXT = "bystander-secret-row"
PASSWORD = "Pw-h0stile-Secret"


@dataclasses.dataclass
class Hostile:
    """A filled workspace under ``root`` and what attacks aim at."""

    backend: str
    root: Path
    ctx: Context  # the workspace as created (a superuser on PostgreSQL)
    reader: Context  # the least-privilege role on PostgreSQL; the same workspace on SQLite
    dataset_id: int
    targets: dict[str, str]
    admin_url: str | None = None
    victim: Any = None  # a bystander PostgreSQL session

    def snapshot(self) -> dict[str, Any]:
        """Every file under root: size, mtime and digest (a SQLite -shm only exists: readers write it)."""
        state: dict[str, Any] = {}
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if path.is_dir():
                state[rel + "/"] = "dir"
            elif rel.endswith("-shm"):
                state[rel] = "exists"
            else:
                stat = path.stat()
                state[rel] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        return state | self.server_state()

    def server_state(self) -> dict[str, Any]:
        if self.admin_url is None:
            return {}
        engine = sa.create_engine(self.admin_url)
        try:
            with engine.connect() as conn:
                return {
                    "samples": conn.exec_driver_sql("SELECT count(*) FROM sample").scalar_one(),
                    "large objects": conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_largeobject_metadata"
                    ).scalar_one(),
                    "advisory locks": conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    ).scalar_one(),
                }
        finally:
            engine.dispose()

    def fill(self, sql: str) -> str:
        return sql.format(**self.targets)


def _admin_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url else None


def _fill(ctx: Context) -> int:
    ds = create_dataset(ctx.catalog, "d", "synthetic", "generated")
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        unit="0",
        samples=NewSamples(keys=["r0", "r1", "v0"], role="reference", identity_labels=["a", "b", "a"]),
        shards=[
            ShardSpec("embedding", "m", {"embedding": np.eye(3, 4)}),
            ShardSpec("latent", "g", {"w": np.ones((3, 8))}),
        ],
    )
    return ds


def _bystander_sqlite(path: Path) -> None:
    """Another SQLite database on the machine (WAL mode, closed: no -wal or -shm beside it)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE secret (v TEXT)")
    conn.execute("INSERT INTO secret VALUES (?)", (SECRET_TEXT,))
    conn.commit()
    conn.close()


@pytest.fixture(scope="module", params=["sqlite", POSTGRES])
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    _bystander_sqlite(root / "other.db")
    cwd = os.getcwd()
    os.chdir(root)  # anything written relative to the current directory lands in the snapshot
    try:
        if request.param == "sqlite":
            ctx = init_workspace(root / "ws", models_dir=str(root / "models"))
            yield _hostile(request.param, root, ctx, ctx, None)
            ctx.close()
        else:
            yield from _postgres_hostile(root)
    finally:
        os.chdir(cwd)


def _hostile(backend: str, root: Path, ctx: Context, reader: Context, admin: str | None) -> Hostile:
    ds = _fill(ctx)
    query(ctx, "SELECT count(*) FROM embeddings")  # the catalog's -wal/-shm exist from here on
    shard = next((ctx.store.root / "shards").rglob("*.parquet"))
    ws = ctx.ws.root
    catalog = ctx.catalog.engine.url.database if backend == "sqlite" else str(ws / "synthdb.toml")
    targets = {
        "catalog": "'" + str(catalog) + "'",
        "catalog_dollar": "$$" + str(catalog) + "$$",
        "shard": "'" + str(shard) + "'",
        "new": "'" + str(ws / "new.csv") + "'",
        "newdir": "'" + str(ws / "newdir") + "'",
        "other": "'" + str(root / "other.db") + "'",
        "missing": "'" + str(root / "missing.db") + "'",
        "ws": str(ws),
    }
    return Hostile(backend, root, ctx, reader, ds, targets, admin)


def _postgres_hostile(root: Path) -> Iterator[Hostile]:
    admin_url = _admin_url()
    if admin_url is None:
        pytest.skip(f"{POSTGRES_ENV} is not set: PostgreSQL catalog tests need a server")
    name, role = f"synthdb_h_{uuid.uuid4().hex[:10]}", f"synthdb_reader_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    db_url = sa.engine.make_url(admin_url).set(database=name)
    try:
        ctx = init_workspace(
            root / "ws", catalog_url=db_url.render_as_string(False), models_dir=str(root / "m")
        )
        db_admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
        with db_admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
            conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        reader_url = db_url.set(username=role, password=PASSWORD).render_as_string(hide_password=False)
        reader = Context.from_workspace(dataclasses.replace(ctx.ws, catalog_url=reader_url))
        hostile = _hostile("postgres", root, ctx, reader, db_url.render_as_string(False))
        hostile.victim = psycopg.connect(
            db_url.set(drivername="postgresql").render_as_string(False), autocommit=True
        )
        yield hostile
        hostile.victim.close()
        reader.close()
        ctx.close()
        with db_admin.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
        db_admin.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


def _refused(hostile: Hostile, run: Any, match: str | None = None) -> str:
    """Run an attack; it must raise one line (matching ``match``) and change nothing."""
    before = hostile.snapshot()
    with pytest.raises(SynthdbError, match=match) as refused:
        run()
    message = str(refused.value)
    assert "\n" not in message and "Traceback" not in message
    assert PASSWORD not in message and SECRET_TEXT not in message
    assert hostile.snapshot() == before
    if hostile.victim is not None:
        assert hostile.victim.execute("SELECT 1").fetchone() == (1,)  # the bystander session lives
    STATS["hostile_inputs"] += 1
    return message


# ------------------------------------------------------------------------------------ DuckDB engine


DUCKDB_ATTACKS = {
    # the issue's report and its family: EXPLAIN ANALYZE executes what it explains
    "explain analyze copy to the catalog": (
        "EXPLAIN ANALYZE COPY (SELECT 'x' AS x) TO {catalog} (FORMAT csv, USE_TMP_FILE false)"
    ),
    "explain analyze copy to a shard": "EXPLAIN ANALYZE COPY (SELECT 'x' AS x) TO {shard} (FORMAT csv)",
    "explain analyse, comment, lower case": "explain /* hm */ analyse copy (select 1) to {new} (format csv)",
    "explain (analyze) copy": "EXPLAIN (ANALYZE) COPY (SELECT 1) TO {new} (FORMAT csv)",
    "explain (format json, analyze)": "EXPLAIN (FORMAT json, ANALYZE true) SELECT 1",
    "explain analyze select": "EXPLAIN ANALYZE SELECT count(*) FROM embeddings",
    "explain explain analyze": "EXPLAIN EXPLAIN ANALYZE COPY (SELECT 1) TO {new} (FORMAT csv)",
    "explain copy": "EXPLAIN COPY (SELECT 1) TO {new} (FORMAT csv)",
    "explain pragma": "EXPLAIN PRAGMA version",
    # statements that write, attach, configure or load
    "copy to": "COPY (SELECT 1) TO {new} (FORMAT csv, USE_TMP_FILE false)",
    "copy the catalog to a shard": "COPY catalog.sample TO {shard} (FORMAT parquet)",
    "export database": "EXPORT DATABASE {newdir}",
    "attach a duckdb file": "ATTACH {new} AS x",
    "attach another sqlite database": "ATTACH {other} AS o (TYPE sqlite)",
    "detach the catalog": "DETACH catalog",
    "create table as": "CREATE TABLE t AS SELECT 1",
    "create secret": "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')",
    "set": "SET enable_external_access = true",
    "reset": "RESET allowed_paths",
    "pragma": "PRAGMA version",
    "pragma database_list": "PRAGMA database_list",
    "call": "CALL pragma_version()",
    "install": "INSTALL httpfs",
    "load": "LOAD {other}",
    "checkpoint": "CHECKPOINT",
    "use": "USE catalog",
    "pivot statement": "PIVOT catalog.sample ON role",
    "select then copy": "SELECT 1; COPY (SELECT 1) TO {new} (FORMAT csv)",
    # reads outside the workspace's catalog and committed shards
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/hostname')",
    "read_blob of the catalog": "SELECT * FROM read_blob({catalog})",
    "glob": "SELECT * FROM glob('{ws}/*')",
    "read_parquet of a shard by path": "SELECT * FROM read_parquet({shard})",
    "parquet_metadata": "SELECT * FROM parquet_metadata({shard})",
    "replacement scan of a file": "SELECT * FROM '/etc/passwd'",
    "replacement scan of a shard": "FROM {shard}",
    "replacement scan of another sqlite db": "SELECT * FROM {other}",
    "sqlite_scan another database": "SELECT * FROM sqlite_scan({other}, 'secret')",
    "sqlite_attach another database": "SELECT * FROM sqlite_attach({other})",
    "query()": "SELECT * FROM query('SELECT * FROM read_text(''/etc/hostname'')')",
    "query_table()": "SELECT * FROM query_table('embeddings')",
    "duckdb_databases() shows the DSN": "SELECT * FROM duckdb_databases()",
    "duckdb_databases view": "SELECT * FROM duckdb_databases",
    "duckdb_settings": "SELECT * FROM duckdb_settings()",
    "duckdb_secrets": "SELECT * FROM duckdb_secrets()",
    "information_schema": "SELECT * FROM information_schema.tables",
    "current_setting": "SELECT current_setting('allowed_paths')",
    "getvariable": "SELECT getvariable('x')",
    "json_serialize_plan binds sqlite_scan": (
        "SELECT json_serialize_plan('SELECT * FROM sqlite_scan(''/etc/passwd'', ''x'')')"
    ),
    "postgres_query through the attachment": "SELECT * FROM postgres_query('catalog', 'SELECT 1')",
    "postgres_scan another database": "SELECT * FROM postgres_scan('dbname=postgres', 'public', 'x')",
    "postgres_attach": "SELECT * FROM postgres_attach('dbname=postgres')",
    "postgres_execute": "CALL postgres_execute('catalog', 'SELECT 1')",
    "qualified table function": "SELECT * FROM system.main.read_text('/etc/hostname')",
    "qualified scalar function": "SELECT system.main.current_setting('threads')",
    "a python variable": "SELECT * FROM sql",
    "time travel": "SELECT * FROM catalog.sample AT (VERSION => 1)",
    "a file behind the catalog qualifier": 'SELECT * FROM catalog."{ws}/../other.db"',
    "a sqlite file named like a catalog table": "SELECT * FROM catalog.main.db",
    # the same, hidden in CTEs, subqueries and lambdas
    "subquery": "SELECT (SELECT count(*) FROM read_csv('/etc/passwd'))",
    "exists": "SELECT * FROM embeddings WHERE EXISTS (SELECT 1 FROM glob('/*'))",
    "lambda": "SELECT list_transform([1], x -> (SELECT count(*) FROM read_text('/etc/hostname')))",
    "cte": "WITH t AS (SELECT * FROM sqlite_scan({other}, 'secret')) SELECT * FROM t",
    "a later cte's name": (
        "WITH a AS (SELECT * FROM duckdb_settings), duckdb_settings AS (SELECT 1) SELECT * FROM a"
    ),
    "a cte naming itself": (
        "WITH duckdb_databases AS (SELECT * FROM duckdb_databases) SELECT * FROM duckdb_databases"
    ),
    "the anchor of a recursive cte": (
        "WITH RECURSIVE duckdb_databases AS (SELECT * FROM duckdb_databases UNION ALL "
        "SELECT * FROM duckdb_databases) SELECT 1"
    ),
    "a cte out of scope": "SELECT * FROM (WITH duckdb_settings AS (SELECT 1) SELECT 1), duckdb_settings",
    "nested 400 deep": "SELECT * FROM " + "(SELECT * FROM " * 400 + "embeddings" + ")" * 400,
    "nested past the parser's limit": "SELECT " + "abs(" * 1200 + "1" + ")" * 1200,
    "a file named by an out-of-scope cte": (
        'SELECT * FROM (WITH "/etc/passwd" AS (SELECT 1) SELECT 1), "/etc/passwd"'
    ),
}


@pytest.mark.parametrize("case", DUCKDB_ATTACKS)
def test_duckdb_engine_attacks_change_nothing(hostile: Hostile, case: str) -> None:
    sql = hostile.fill(DUCKDB_ATTACKS[case])
    _refused(hostile, lambda: query(hostile.reader, sql, timeout_s=10))


def test_refusals_are_no_oracle_for_which_files_exist(hostile: Hostile) -> None:
    """Regression: sqlite_scan's error told whether a path existed."""
    messages = {
        _refused(hostile, lambda t=target: query(hostile.ctx, f"SELECT * FROM sqlite_scan({t}, 'secret')"))
        for target in (hostile.targets["other"], hostile.targets["missing"])
    }
    assert len(messages) == 1


def test_the_sandbox_holds_below_the_parser(hostile: Hostile) -> None:
    """The DuckDB connection itself, without the parse-tree check: the catalog, its -wal and the current
    directory are not writable paths, there is no spill directory, the configuration is locked, and
    neither the DSN nor the password is visible."""
    con = connect(hostile.reader, Bounds.of(10, "256MB"))
    before = hostile.snapshot()
    try:
        for statement in (
            f"COPY (SELECT 'x' AS x) TO {hostile.targets['catalog']} (FORMAT csv, USE_TMP_FILE false)",
            f"COPY (SELECT 'x' AS x) TO {hostile.targets['catalog'][:-1]}-wal' (FORMAT csv)",
            "COPY (SELECT 'x' AS x) TO 'relative.csv' (FORMAT csv)",
            f"SELECT * FROM read_text({hostile.targets['new']})",
            "SET temp_directory = '.tmp'",
            "SET enable_external_access = true",
            f"ATTACH {hostile.targets['new']} AS x",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(statement)
        assert con.execute("SELECT current_setting('temp_directory')").fetchone() == ("",)
        allowed = con.execute("SELECT current_setting('allowed_paths')").fetchone()[0]
        assert all(path.endswith(".parquet") for path in allowed) and allowed
        paths = [row[0] for row in con.execute("SELECT path FROM duckdb_databases()").fetchall()]
        assert not any(PASSWORD in str(path) for path in paths)
        if hostile.backend == "postgres":
            secrets = str(con.execute("SELECT * FROM duckdb_secrets()").fetchall())
            assert PASSWORD not in secrets and "redacted" in secrets
    finally:
        con.close()
    assert hostile.snapshot() == before
    STATS["hostile_inputs"] += 1


# ------------------------------------------------------------------------------- --engine catalog


SQLITE_ATTACKS = {
    "attach": "ATTACH {other} AS o",
    "vacuum into a new file": "VACUUM INTO {new}",
    "load_extension": "SELECT load_extension('/nonexistent')",
    "fts3_tokenizer": "SELECT fts3_tokenizer('simple')",
    "pragma journal_mode": "PRAGMA journal_mode = DELETE",
    "pragma writable_schema": "PRAGMA writable_schema = ON",
    "pragma function": "SELECT * FROM pragma_table_info('sample')",
    "temp table": "CREATE TEMP TABLE t (x)",
    "insert": "INSERT INTO run (kind, status) VALUES ('x', 'x')",
    "delete": "DELETE FROM sample",
    "update": "UPDATE sample SET key = 'x'",
    "drop": "DROP TABLE sample",
    "alter": "ALTER TABLE sample ADD COLUMN x",
    "analyze writes sqlite_stat1": "ANALYZE",
    "reindex": "REINDEX",
    "begin": "BEGIN",
    "savepoint": "SAVEPOINT s",
    "select then delete": "SELECT 1; DELETE FROM sample",
    "delete with a cte": "WITH x AS (SELECT 1) DELETE FROM sample",
    "explain delete": "EXPLAIN DELETE FROM sample",
    "virtual table": "CREATE VIRTUAL TABLE v USING fts5(x)",
}


@pytest.mark.parametrize("hostile", ["sqlite"], indirect=True)
@pytest.mark.parametrize("case", SQLITE_ATTACKS)
def test_sqlite_catalog_engine_attacks_change_nothing(hostile: Hostile, case: str) -> None:
    sql = hostile.fill(SQLITE_ATTACKS[case])
    _refused(hostile, lambda: query(hostile.ctx, sql, engine="catalog", timeout_s=10))


POSTGRES_ATTACKS = {
    "pg_read_file": "SELECT pg_read_file('postgresql.auto.conf')",
    "pg_read_binary_file": "SELECT pg_read_binary_file('postgresql.auto.conf')",
    "pg_ls_dir": "SELECT * FROM pg_ls_dir('.')",
    "pg_stat_file": "SELECT pg_stat_file('postgresql.auto.conf')",
    "lo_import": "SELECT lo_import('/etc/hostname')",
    "lo_export": "SELECT lo_export(1, '/tmp/x')",
    "pg_terminate_backend": "SELECT pg_terminate_backend({victim})",
    "pg_cancel_backend": "SELECT pg_cancel_backend({victim})",
    "advisory lock": "SELECT pg_advisory_lock(1)",
    "advisory xact lock": "SELECT pg_try_advisory_xact_lock(1)",
    "notify": "SELECT pg_notify('c', 'x')",
    "set_config role": "SELECT set_config('role', 'postgres', true)",
    "set_config read-write": "SELECT set_config('transaction_read_only', 'off', true)",
    "current_setting": "SELECT current_setting('data_directory')",
    "query_to_xml runs sql text": (
        "SELECT query_to_xml('SELECT pg_read_file(''postgresql.auto.conf'')', true, true, '')"
    ),
    "ts_stat runs sql text": "SELECT * FROM ts_stat('SELECT 1')",
    "dblink": "SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(x int)",
    "pg_sleep": "SELECT pg_sleep(60)",
    "quoted name": "SELECT \"pg_read_file\"('postgresql.auto.conf')",
    "qualified name": "SELECT pg_catalog.pg_read_file('postgresql.auto.conf')",
    "string-escape differential": "SELECT E'\\'' , pg_read_file('postgresql.auto.conf') --'",
    "two statements": "SELECT 1; SELECT 2",
    "pg_authid": "SELECT * FROM pg_authid",
    "pg_stat_activity": "SELECT query FROM pg_stat_activity",
    "pg_file_settings": "SELECT * FROM pg_catalog.pg_file_settings",
    "delete": "DELETE FROM sample",
    "copy to program": "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'",
    "do block": "DO $$ BEGIN PERFORM 1; END $$",
    "data-modifying cte": "WITH d AS (DELETE FROM sample RETURNING *) SELECT * FROM d",
    "explain analyze": "EXPLAIN ANALYZE DELETE FROM sample",
    "for update": "SELECT * FROM sample FOR UPDATE",
}


@pytest.mark.parametrize("hostile", [POSTGRES], indirect=True)
@pytest.mark.parametrize("case", POSTGRES_ATTACKS)
def test_postgres_catalog_engine_attacks_change_nothing(hostile: Hostile, case: str) -> None:
    victim = hostile.victim.info.backend_pid
    sql = POSTGRES_ATTACKS[case].replace("{victim}", str(victim))
    for ctx in (hostile.reader, hostile.ctx):  # least privilege, and the superuser the workspace has
        message = _refused(hostile, lambda c=ctx: query(c, sql, engine="catalog", timeout_s=10))
        assert "Do not edit this file" not in message  # postgresql.auto.conf was not read


@pytest.mark.parametrize("hostile", [POSTGRES], indirect=True)
def test_a_superuser_catalog_is_refused_by_the_catalog_engine_and_warned_about(hostile: Hostile) -> None:
    from synthdb.admin import catalog_role_warning

    message = _refused(hostile, lambda: query(hostile.ctx, "SELECT count(*) FROM sample", engine="catalog"))
    assert "superuser" in message and "--print-grants" in message
    assert "superuser" in catalog_role_warning(hostile.ctx)
    assert catalog_role_warning(hostile.reader) is None
    rows = query(hostile.reader, "SELECT count(*) AS n FROM sample WHERE key LIKE 'r%'", engine="catalog")
    assert rows.to_pylist() == [{"n": 2}]  # '%' is a character, not a placeholder


@pytest.mark.parametrize("hostile", [POSTGRES], indirect=True)
def test_postgres_connection_holds_below_the_parser(hostile: Hostile) -> None:
    """Without the parse-tree check: the extended protocol takes one statement, the transaction is
    read-only, and it is always rolled back (PostgreSQL lets ``lo_create`` through a read-only one)."""
    url = hostile.reader.catalog.engine.url
    bounds = Bounds.of(10, "256MB")
    before = hostile.snapshot()
    with pytest.raises(SynthdbError, match="multiple commands"):
        query_module._postgres_rows(url, "SELECT 1; DELETE FROM sample", bounds)
    with pytest.raises(SynthdbError, match="read-only transaction|permission denied"):
        query_module._postgres_rows(url, "WITH d AS (DELETE FROM sample RETURNING 1) SELECT * FROM d", bounds)
    names, rows = query_module._postgres_rows(url, "SELECT lo_create(0)", bounds)
    assert len(rows) == 1 and hostile.snapshot() == before  # the large object went with the rollback
    STATS["hostile_inputs"] += 3


@pytest.mark.parametrize("hostile", [POSTGRES], indirect=True)
def test_passwords_never_show(hostile: Hostile) -> None:
    broken = hostile.reader.catalog.engine.url.set(port=1)  # nothing listens there
    ctx = Context.from_workspace(
        dataclasses.replace(hostile.ctx.ws, catalog_url=broken.render_as_string(False)), check_schema=False
    )
    try:
        for engine in ("duckdb", "catalog"):
            message = _refused(hostile, lambda e=engine: query(ctx, "SELECT 1", engine=e))
            assert PASSWORD not in message
    finally:
        ctx.close()


# ------------------------------------------------------------------------------------------ --where


WHERE_ATTACKS = {
    "the issue's E-string smuggle": (
        "s.key = E'\\'' ); EXPLAIN ANALYZE COPY (SELECT 'x' AS x) TO {catalog_dollar} "
        "(FORMAT csv, USE_TMP_FILE false); SELECT (1"
    ),
    "E-string, no semicolon, union": "s.key = E'\\'' ) AS BOOLEAN) UNION SELECT 1 --",
    "closing the cast": "true) AS BOOLEAN) OR (CAST((true",
    "a subquery reading a file": "s.id IN (SELECT 1 FROM read_csv('/etc/passwd'))",
    "a subquery on duckdb_databases": "EXISTS (SELECT * FROM duckdb_databases())",
    "a sqlite_scan": "s.key IN (SELECT v FROM sqlite_scan({other}, 'secret'))",
    "dollar quoting": "s.key = $$x$$",
    "a comment": "s.role = 'reference' /* and more */",
    "a statement": "DELETE FROM catalog.sample",
    "an order by": "true ORDER BY 1",
    "nested 400 deep": "s.id IN " + "(SELECT * FROM " * 400 + "(SELECT 1)" + ")" * 400,
}


@pytest.mark.parametrize("case", WHERE_ATTACKS)
def test_where_predicates_stay_expressions(hostile: Hostile, case: str) -> None:
    predicate = hostile.fill(WHERE_ATTACKS[case])
    _refused(hostile, lambda: matching_ids(hostile.ctx, hostile.dataset_id, predicate), match="--where")


def test_where_export_of_the_issue_is_one_line_and_writes_nothing(hostile: Hostile) -> None:
    """Regression: the export destroyed the catalog, then crashed with a traceback."""
    out = hostile.root / "ws" / "out"
    predicate = hostile.fill(WHERE_ATTACKS["the issue's E-string smuggle"])
    _refused(hostile, lambda: export(hostile.ctx, "d", "synthetics-h5", out, where=predicate), "--where")
    assert not out.exists()
    kept = matching_ids(hostile.ctx, hostile.dataset_id, "s.key <> 'a;b--c' AND s.key LIKE 'r%'")
    assert sorted(kept.tolist()) == [1, 2]


def test_where_lexing_work_is_bounded() -> None:
    """Long quoted literals (20,000 escaped quotes, 5,000 strings) are judged in bounded work: the checks
    parse a literal at most a fixed number of times."""
    from synthdb.export.selection import check_where

    escaped = "s.key = E'" + "\\'" * 20_000 + "'"
    many = "s.key IN (" + ", ".join(f"'k{i}'" for i in range(5_000)) + ")"
    assert check_where(escaped) == escaped and check_where(many) == many


# ------------------------------------------------------------------------------------------ bounds


def test_runaway_queries_end_at_their_bounds(hostile: Hostile) -> None:
    """DuckDB engine, on each catalog backend: a cross join and an endless recursive CTE hit the timeout,
    a recursive CTE that keeps its rows (UNION) and a sort hit the memory limit (nothing spills), a huge
    result hits the result budget."""
    ctx = hostile.reader
    for endless in (
        "SELECT sum(a.range * b.range) FROM range(200000) a, range(200000) b",
        "WITH RECURSIVE r(n) AS (SELECT range FROM range(1000) UNION ALL SELECT n + 1 FROM r) "
        "SELECT count(*) FROM r",
    ):
        _refused(hostile, lambda sql=endless: query(ctx, sql, timeout_s=1), match="1 s timeout")
    for greedy in (
        "WITH RECURSIVE r(n) AS (SELECT range FROM range(100000) UNION SELECT n + 100000 FROM r) "
        "SELECT count(*) FROM r",
        "SELECT count(*) FROM (SELECT range FROM range(100000000) ORDER BY random())",
        "SELECT repeat('x', 1000) AS s FROM range(200000)",
    ):
        _refused(
            hostile, lambda sql=greedy: query(ctx, sql, timeout_s=60, memory_limit="64MB"), "memory limit"
        )


def test_catalog_engine_queries_end_at_their_bounds(hostile: Hostile) -> None:
    ctx = hostile.reader
    endless = (
        "SELECT count(*) FROM generate_series(1, 10000000000)"
        if hostile.backend == "postgres"
        else "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    )
    _refused(hostile, lambda: query(ctx, endless, engine="catalog", timeout_s=1), match="timeout")
    big = (
        "SELECT repeat('x', 1000) FROM generate_series(1, 200000)"
        if hostile.backend == "postgres"
        else "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r LIMIT 200000) "
        "SELECT n, printf('%.1000c', 'x') FROM r"
    )
    _refused(
        hostile, lambda: query(ctx, big, engine="catalog", timeout_s=60, memory_limit="64MB"), "memory limit"
    )
    if hostile.backend == "sqlite":
        blob = "SELECT length(randomblob(200000000))"
        _refused(
            hostile, lambda: query(ctx, blob, engine="catalog", timeout_s=60, memory_limit="64MB"), "memory"
        )
    else:
        assert _running(hostile, "generate_series(1, 10000000000)") == 0


def _running(hostile: Hostile, marker: str, wait_s: float = 20.0) -> int:
    """Active server backends whose query contains ``marker``, after waiting up to ``wait_s`` for none."""
    engine = sa.create_engine(hostile.admin_url)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            with engine.connect() as conn:
                n = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND pid <> pg_backend_pid() AND position(%(m)s in query) > 0",
                    {"m": marker},
                ).scalar_one()
            if n == 0 or time.monotonic() > deadline:
                return n
            time.sleep(0.1)
    finally:
        engine.dispose()


def _interrupt_when_running() -> threading.Thread:
    """Send SIGINT to the main thread once the query's worker thread exists (as Ctrl-C would)."""

    def fire() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(t.name == "synthdb-query" for t in threading.enumerate()):
                time.sleep(0.3)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("engine", ["duckdb", "catalog"])
def test_ctrl_c_cancels_the_statement_where_it_runs(hostile: Hostile, engine: str) -> None:
    marker = f"ctrl_c_{uuid.uuid4().hex[:8]}"
    if engine == "duckdb":
        sql = f"SELECT sum(a.range * b.range) AS {marker} FROM range(200000) a, range(200000) b"
    elif hostile.backend == "postgres":
        sql = f"SELECT count(*) AS {marker} FROM generate_series(1, 10000000000)"
    else:
        sql = (
            f"WITH RECURSIVE {marker}(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM {marker}) "
            f"SELECT count(*) FROM {marker}"
        )
    firing = _interrupt_when_running()
    _refused(hostile, lambda: query(hostile.reader, sql, engine=engine, timeout_s=120), match="Ctrl-C")
    firing.join()
    if engine == "catalog" and hostile.backend == "postgres":
        assert _running(hostile, marker) == 0


def _cli(hostile: Hostile, *args: str) -> subprocess.Popen:
    env = dict(os.environ, SYNTHDB_CATALOG_URL=hostile.reader.catalog.url)
    return subprocess.Popen(
        [sys.executable, "-m", "synthdb.cli.main", "-w", str(hostile.ctx.ws.root), "query", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_backend(hostile: Hostile, marker: str, proc: subprocess.Popen) -> None:
    engine = sa.create_engine(hostile.admin_url)
    try:
        for _ in range(600):
            with engine.connect() as conn:
                seen = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE state = 'active' AND position(%(m)s in query) > 0",
                    {"m": marker},
                ).scalar_one()
            if seen or proc.poll() is not None:
                return
            time.sleep(0.1)
    finally:
        engine.dispose()


@pytest.mark.parametrize("hostile", [POSTGRES], indirect=True)
@pytest.mark.parametrize("kill", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_a_cli_query_stopped_or_killed_leaves_no_server_statement(hostile: Hostile, kill: int) -> None:
    """Ctrl-C cancels the server-side statement and exits with one line; a killed client's statement is
    ended by the server's statement_timeout."""
    marker = f"cli_{uuid.uuid4().hex[:8]}"
    sql = f"SELECT count(*) AS {marker} FROM generate_series(1, 10000000000)"
    proc = _cli(hostile, sql, "--engine", "catalog", "--timeout", "3")
    _wait_for_backend(hostile, marker, proc)
    proc.send_signal(kill)
    _, stderr = proc.communicate(timeout=60)
    if kill == signal.SIGINT:
        assert proc.returncode == 1 and stderr.count("\n") == 1, stderr
        assert stderr.startswith("error: query interrupted (Ctrl-C)")
    assert _running(hostile, marker) == 0
    STATS["hostile_inputs"] += 1


# ------------------------------------------------------------------- DuckDB 1.5.5 facts relied upon


def test_duckdb_facts_the_sandbox_relies_on(tmp_path: Path) -> None:
    """Why the guard and the connection are built as they are (synthdb.analysis.query.connect,
    synthdb.analysis.sql_guard); if an upgrade changes one of these, this test says which."""
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    # EXPLAIN ANALYZE is classified as a plain EXPLAIN, PRAGMA as a SELECT: the kind alone cannot decide
    kinds = [s.type for s in con.extract_statements("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x'; PRAGMA version")]
    assert kinds == [duckdb.StatementType.EXPLAIN, duckdb.StatementType.SELECT]
    # a CTE does not see later CTEs nor itself, and a recursive CTE's anchor does not see itself:
    # those names bind to real relations, so the walker keeps CTE names in scope as the binder does
    con.execute("CREATE TABLE t AS SELECT 42 AS x")
    for sql in (
        "WITH a AS (SELECT * FROM t), t AS (SELECT 1 AS x) SELECT * FROM a",
        "WITH t AS (SELECT * FROM t) SELECT * FROM t",
        "WITH RECURSIVE t(x) AS (SELECT x FROM t UNION ALL SELECT 1 WHERE false) SELECT * FROM t",
    ):
        assert con.execute(sql).fetchall() == [(42,)], sql
    # views over read_parquet bind at query time: closing the file system breaks them, unless allowed
    shard = tmp_path / "s.parquet"
    con.execute(f"COPY (SELECT 1 AS v) TO '{shard}'")
    con.execute(f"CREATE VIEW v AS SELECT * FROM read_parquet('{shard}')")
    con.execute("SET enable_external_access = false")
    with pytest.raises(duckdb.PermissionException):
        con.execute("SELECT * FROM v")
    con.close()
    # databases attached before the file system closes become (writable) allowed paths; after, not
    catalog = tmp_path / "c.db"
    sqlite3.connect(catalog).execute("CREATE TABLE x (v)").connection.close()
    extension = query_module._extension_path("sqlite_scanner")
    for attach_first in (True, False):
        con = duckdb.connect(":memory:")
        con.execute(f"LOAD '{extension}'")
        if attach_first:
            con.execute(f"ATTACH '{catalog}' AS c (TYPE sqlite, READ_ONLY)")
        con.execute("SET enable_external_access = false")
        if not attach_first:
            con.execute(f"ATTACH '{catalog}' AS c (TYPE sqlite, READ_ONLY)")
        allowed = con.execute("SELECT current_setting('allowed_paths')").fetchone()[0]
        assert (str(catalog) in allowed) is attach_first
        assert con.execute("SELECT count(*) FROM c.x").fetchone() == (0,)
        con.close()
    # a PostgreSQL database cannot be attached once the file system is closed (so: a secret, no DSN)
    con = duckdb.connect(":memory:")
    con.execute(f"LOAD '{query_module._extension_path('postgres_scanner')}'")
    con.execute("SET enable_external_access = false")
    with pytest.raises(duckdb.PermissionException):
        con.execute("ATTACH 'dbname=none' AS p (TYPE postgres, READ_ONLY)")
    con.close()
