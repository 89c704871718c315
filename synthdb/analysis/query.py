"""``synthdb query``: read-only, bounded SQL over the catalog and the committed vector shards.

The default engine is DuckDB with the catalog attached read-only (the sqlite / postgres scanner
extensions, loaded from their pinned PyPI packages' files: nothing is downloaded) and two views over
the committed Parquet shards:

- ``embeddings(dataset, model, sample_id, identity_id, embedding FLOAT[])``
- ``latents(dataset, generator, sample_id, identity_id, <w | w_plus | z | c ...> FLOAT[])``

and one view per kind of check result (``result`` shards), joined to the catalog for names:

- ``nearest(run_id, query_dataset, query_identity_id, query_identity, rank, ref_dataset, ref_identity_id,
  ref_identity, ref_sample_id, angle_rad, leak)`` from ``synthdb check nearest`` (``rank`` INTEGER,
  ``angle_rad`` DOUBLE in radians, ``leak`` BOOLEAN, NULL when the check had no threshold), read from
  typed result shards and from the float32-list shards older synthdb versions wrote alike

and the per-iteration statistics generation runs store (``stats`` shards):

- ``stats(run_id, dataset, unit, <the statistics>)``: Langevin and Dispersion rows (``iteration``,
  ``dist_min``/``_avg``/``_max``, ``prop_ict``, force norms, ``timestep``, ...), ICT rows (``batch``,
  ``candidates``, ``accepted``); columns are united by name, NULL where a run has no such column

Parquet gives fixed-size lists back as ``FLOAT[]``; cast (``embedding::FLOAT[128]``) for DuckDB's
``array_*`` functions. ``engine="catalog"`` runs the SQL on the catalog database itself.

Nothing reachable from here writes, deletes, attaches or reads outside the workspace's own catalog
and committed shards; the layers, each enough for what it covers:

1. The parser (:mod:`synthdb.analysis.sql_guard`): DuckDB's parse tree, walked in full, must be a plain
   SELECT (or EXPLAIN of one, never EXPLAIN ANALYZE) over the views and catalog tables, calling only
   allow-listed functions. SQLite is the exception: its own authorizer decides (layer 2).
2. The connection. DuckDB: the file system is closed (``enable_external_access=false``) with the
   committed shard files as the only allowed paths, no spill directory (``temp_directory=''``), no
   Python-object or extension auto-loading, the configuration locked; the SQLite catalog is attached
   read-only *after* the file system is closed, so its file (and ``-wal``) never become writable paths,
   and a PostgreSQL catalog through a temporary secret, so no DSN or password is ever an allowed path or
   printed (``duckdb_databases()`` is refused anyway). What this layer cannot do, so layer 1 alone
   covers it: DuckDB's allowed paths admit writes as well as reads, so ``COPY ... TO`` a shard path would
   pass it (a read-only file system in Python, fsspec, measured twice as slow), and the sqlite and
   postgres scanners open files and servers through their own libraries, past the closed file system
   (``sqlite_scan``, ``ATTACH ... (TYPE sqlite)``, ``postgres_scan``, ``postgres_query``).
   SQLite: ``mode=ro``, ``query_only`` and an
   authorizer that allows reads, SELECT and allow-listed functions, nothing else (no PRAGMA, ATTACH,
   ``load_extension``). PostgreSQL: a read-only transaction, always rolled back, on a connection to
   the catalog database only, through the extended protocol (one statement, ``%`` is just a
   character), and never as a superuser or a member of the server-file/signal roles
   (:mod:`synthdb.catalog.pg_access`).
3. Bounds: ``timeout_s`` (default 60 s) cancels the statement where it runs (DuckDB ``interrupt``,
   SQLite ``interrupt``, PostgreSQL cancel, plus a server-side ``statement_timeout`` that also ends it
   if this process dies); Ctrl-C does the same. ``memory_limit`` (default a quarter of RAM) is DuckDB's
   ``memory_limit`` with no spilling, the longest value and an eighth of it as page cache on SQLite, and
   the most a result may hold in memory on every engine. DuckDB uses one thread per core.

Errors are one line, hints kept (DuckDB's "Did you mean ..."), passwords masked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from synthdb.analysis import sql_guard
from synthdb.analysis.sql_guard import one_line
from synthdb.catalog import pg_access, shards
from synthdb.catalog.schema import Base, CheckKind, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError

FORMATS = ("table", "csv", "json", "parquet")
ENGINES = ("duckdb", "catalog")
DEFAULT_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 7 * 86_400.0
CANCEL_GRACE_S = 10.0  # how long a cancelled statement may take to stop before we stop waiting for it
BATCH_ROWS = 65_536
CATALOG_TABLES = frozenset(Base.metadata.tables) | {"alembic_version"}
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ bounds


def default_memory_limit() -> int:
    """A quarter of this machine's RAM: DuckDB's working memory and, separately, the result's."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4


def parse_memory(text: str | int) -> int:
    """Bytes from ``4GB``, ``512MiB``, ``1000000`` (decimal and binary units)."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
        if not match or match.group(2).lower() not in _UNITS:
            raise SynthdbError(f"--memory-limit {text!r} is not a size: write e.g. 4GB, 512MiB or 1000000")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 2**20:
        raise SynthdbError(f"--memory-limit {text!r} is below 1 MiB: give the query room to run")
    return value


@dataclass(frozen=True)
class Bounds:
    """How long a query may run and how much memory it and its result may hold."""

    timeout_s: float
    memory_bytes: int

    @classmethod
    def of(cls, timeout_s: float | None, memory_limit: str | int | None) -> Bounds:
        timeout = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise SynthdbError(f"--timeout {timeout_s} must be above 0 and at most {MAX_TIMEOUT_S:g} seconds")
        memory = default_memory_limit() if memory_limit is None else parse_memory(memory_limit)
        return cls(timeout, memory)

    @property
    def server_settings(self) -> dict[str, str]:
        """PostgreSQL settings that end the statement server-side even if this process dies."""
        ms = str(max(1, int(self.timeout_s * 1000)))
        return {
            "default_transaction_read_only": "on",
            "statement_timeout": ms,
            "lock_timeout": ms,
            "idle_in_transaction_session_timeout": str(int(self.timeout_s * 1000) + 30_000),
            "standard_conforming_strings": "on",  # parse string literals as DuckDB's parser did
        }

    def memory_text(self) -> str:
        if self.memory_bytes < 2**30:
            return f"{self.memory_bytes / 2**20:.0f} MiB"
        return f"{self.memory_bytes / 2**30:.1f} GiB"


def run_bounded(work: Callable[[], T], cancel: Callable[[], None], bounds: Bounds) -> T:
    """Run ``work`` on a worker thread; on timeout or Ctrl-C call ``cancel`` and raise a one-line error.

    The engines block in C with the GIL released, so the main thread stays free to receive SIGINT and
    to cancel the statement where it runs (a signal handler would not run until the call returned).
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="synthdb-query", daemon=True).start()
    try:
        finished = done.wait(bounds.timeout_s)
    except KeyboardInterrupt:
        _cancel_and_wait(cancel, done)
        raise SynthdbError("query interrupted (Ctrl-C): the statement was cancelled") from None
    if not finished:
        _cancel_and_wait(cancel, done)
        raise SynthdbError(
            f"the query ran past its {bounds.timeout_s:g} s timeout and was cancelled: narrow it "
            "(WHERE, LIMIT, fewer joins) or raise --timeout"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _cancel_and_wait(cancel: Callable[[], None], done: threading.Event) -> None:
    try:
        cancel()
    finally:
        done.wait(CANCEL_GRACE_S)


class _Budget:
    """The most a result may hold in memory; each engine adds what it fetched."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.used = 0

    def add(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.bounds.memory_bytes:
            raise SynthdbError(
                f"the result is larger than the memory limit ({self.bounds.memory_text()}): aggregate, add "
                "a LIMIT or select fewer columns, or raise --memory-limit"
            )


# ------------------------------------------------------------------------------------------------ API


def query(
    ctx: Context,
    sql: str,
    engine: str = "duckdb",
    timeout_s: float | None = None,
    memory_limit: str | int | None = None,
) -> pa.Table:
    """Run read-only SQL and return the result of the last statement as an Arrow table.

    Column names are made unique the way DuckDB does it (``a``, ``a_1``), so no format loses a column.
    """
    if engine not in ENGINES:
        raise SynthdbError(f"unknown query engine '{engine}': use duckdb or catalog")
    bounds = Bounds.of(timeout_s, memory_limit)
    run = _query_catalog if engine == "catalog" else _query_duckdb
    table = run(ctx, sql, bounds)
    return table.rename_columns(unique_names(table.column_names))


def unique_names(names: Iterable[str]) -> list[str]:
    """``a, a, b`` -> ``a, a_1, b``: a repeated name gets the first free ``_n`` suffix, as DuckDB names
    the columns of a table it creates from such a result."""
    names = list(names)
    taken = set(names)
    seen: set[str] = set()
    out = []
    for name in names:
        if name in seen:
            n = 1
            while f"{name}_{n}" in taken:
                n += 1
            name = f"{name}_{n}"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out


# ------------------------------------------------------------------------------------------ DuckDB engine


def _extension_path(name: str) -> str:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        raise SynthdbError(
            f"DuckDB extension package duckdb-extension-{name.replace('_', '-')} is not installed: "
            f"pip install 'duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__}'"
        )
    base = Path(spec.submodule_search_locations[0])
    path = base / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise SynthdbError(f"{path} is missing: the extension package must match duckdb {duckdb.__version__}")
    return str(path)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _committed_shards(ctx: Context) -> list[tuple[str, str, str, str]]:
    """(dataset, content, space, absolute path) of the committed embedding and latent shards."""
    rows = shards.committed(ctx.catalog, contents=[ShardContent.EMBEDDING, ShardContent.LATENT])
    return [(r.dataset, r.content, r.space or "", str(ctx.store.abspath(r.path))) for r in rows if r.dataset]


def _view_sql(found: list[tuple[str, str, str, str]]) -> tuple[str, str]:
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for dataset, content, space, path in found:
        groups[(content, dataset, space)].append(path)
    parts: dict[str, list[str]] = {ShardContent.EMBEDDING: [], ShardContent.LATENT: []}
    for (content, dataset, space), paths in groups.items():
        files = "[" + ", ".join(_literal(p) for p in paths) + "]"
        if content == ShardContent.EMBEDDING:
            parts[content].append(
                f"SELECT {_literal(dataset)} AS dataset, {_literal(space)} AS model, sample_id, identity_id, "
                f"embedding FROM read_parquet({files})"
            )
        else:
            parts[content].append(
                f"SELECT {_literal(dataset)} AS dataset, {_literal(space)} AS generator, * "
                f"FROM read_parquet({files}, union_by_name = true)"
            )
    empty_embeddings = (
        "SELECT NULL::VARCHAR AS dataset, NULL::VARCHAR AS model, NULL::BIGINT AS sample_id, "
        "NULL::BIGINT AS identity_id, NULL::FLOAT[] AS embedding WHERE false"
    )
    empty_latents = (
        "SELECT NULL::VARCHAR AS dataset, NULL::VARCHAR AS generator, NULL::BIGINT AS sample_id, "
        "NULL::BIGINT AS identity_id WHERE false"
    )
    embeddings = " UNION ALL ".join(parts[ShardContent.EMBEDDING]) or empty_embeddings
    latents = " UNION ALL BY NAME ".join(parts[ShardContent.LATENT]) or empty_latents
    return embeddings, latents


def _result_shards(ctx: Context, space: str) -> list[tuple[str, int | None, str, int]]:
    """Committed result shards of one kind: (dataset, run id, absolute path, layout version)."""
    rows = shards.committed(ctx.catalog, contents=[ShardContent.RESULT], space=space)
    return [
        (r.dataset, r.run_id, str(ctx.store.abspath(r.path)), shards.result_version(r))
        for r in rows
        if r.dataset
    ]


def _stats_shards(ctx: Context) -> list[tuple[str, int | None, str | None, str]]:
    """Committed stats shards: (dataset, run id, unit, absolute path)."""
    rows = shards.committed(ctx.catalog, contents=[ShardContent.STATS])
    return [(r.dataset, r.run_id, r.unit, str(ctx.store.abspath(r.path))) for r in rows if r.dataset]


def _stats_sql(found: list[tuple[str, int | None, str | None, str]]) -> str:
    """The ``stats`` view: one read of each run's stats files (columns united by name), each row labelled
    with the run, dataset and unit that wrote it (the unit through the file it came from)."""
    groups: dict[tuple[str, int | None], list[tuple[str, str | None]]] = defaultdict(list)
    for dataset, run_id, unit, path in found:
        groups[(dataset, run_id)].append((path, unit))
    parts = []
    for (dataset, run_id), files in groups.items():
        paths = ", ".join(_literal(path) for path, _ in files)
        units = ", ".join(f"({_literal(path)}, {_literal(unit or '')})" for path, unit in files)
        run = "NULL" if run_id is None else str(int(run_id))
        parts.append(
            f"SELECT {run}::BIGINT AS run_id, {_literal(dataset)} AS dataset, u.unit, "
            "COLUMNS(c -> c NOT IN ('filename', 'unit')) "  # variations' rows name their unit themselves
            f"FROM read_parquet([{paths}], union_by_name = true, filename = true) s "
            f"JOIN (VALUES {units}) u(filename, unit) ON s.filename = u.filename"
        )
    return " UNION ALL BY NAME ".join(parts) or (
        "SELECT NULL::BIGINT AS run_id, NULL::VARCHAR AS dataset, NULL::VARCHAR AS unit WHERE false"
    )


# The columns of a ``nearest`` result shard as the view shows them, per layout version: typed scalars
# (version 2), or 1-wide float32 lists (version 1, before synthdb wrote typed results).
_NEAREST_COLUMNS = {
    shards.TYPED_RESULTS: "rank, angle_rad, leak",
    1: (
        "CAST(rank[1] AS INTEGER) AS rank, angle_rad[1]::DOUBLE AS angle_rad, "
        "CASE WHEN isnan(leak[1]) THEN NULL ELSE leak[1] > 0.5 END AS leak"
    ),
}


def _nearest_sql(found: list[tuple[str, int | None, str, int]]) -> str:
    """The ``nearest`` view: a result row holds the query identity and the matched REF sample; the catalog
    gives the REF identity, the dataset and the labels. Shards of both layouts read the same."""
    groups: dict[tuple[str, int | None, int], list[str]] = defaultdict(list)
    for dataset, run_id, path, version in found:
        groups[(dataset, run_id, version)].append(path)
    parts = [
        f"SELECT {'NULL' if run_id is None else int(run_id)}::BIGINT AS run_id, "
        f"{_literal(dataset)} AS query_dataset, identity_id AS query_identity_id, "
        f"sample_id AS ref_sample_id, {_NEAREST_COLUMNS[version]} "
        f"FROM read_parquet([{', '.join(_literal(p) for p in paths)}])"
        for (dataset, run_id, version), paths in groups.items()
    ]
    rows = " UNION ALL BY NAME ".join(parts) or (
        "SELECT NULL::BIGINT AS run_id, NULL::VARCHAR AS query_dataset, NULL::BIGINT AS query_identity_id, "
        "NULL::INTEGER AS rank, NULL::BIGINT AS ref_sample_id, NULL::DOUBLE AS angle_rad, "
        "NULL::BOOLEAN AS leak WHERE false"
    )
    return (
        "SELECT r.run_id, r.query_dataset, r.query_identity_id, qi.label AS query_identity, r.rank, "
        "d.name AS ref_dataset, s.identity_id AS ref_identity_id, ri.label AS ref_identity, r.ref_sample_id, "
        f"r.angle_rad, r.leak FROM ({rows}) r "
        "LEFT JOIN catalog.sample s ON s.id = r.ref_sample_id "
        "LEFT JOIN catalog.dataset d ON d.id = s.dataset_id "
        "LEFT JOIN catalog.identity qi ON qi.id = r.query_identity_id "
        "LEFT JOIN catalog.identity ri ON ri.id = s.identity_id"
    )


def _attach_postgres(con: duckdb.DuckDBPyConnection, url: sa.engine.URL, bounds: Bounds) -> None:
    """Attach a PostgreSQL catalog read-only through a temporary secret: the ATTACH string is empty, so
    neither the DSN nor its password becomes an allowed path or shows in ``duckdb_databases()``; the
    server ends any statement of this connection after the timeout, and its sessions are read-only."""
    params = pg_access.libpq_params(url, bounds.server_settings)
    fields = ", ".join(f"{key.upper()} {_literal(value)}" for key, value in params.items())
    con.execute(f"CREATE TEMPORARY SECRET synthdb_catalog (TYPE postgres, {fields})")
    con.execute("ATTACH '' AS catalog (TYPE postgres, READ_ONLY, SECRET synthdb_catalog)")


def connect(ctx: Context, bounds: Bounds | None = None) -> duckdb.DuckDBPyConnection:
    """A sandboxed DuckDB connection: catalog attached read-only, shard views, file system closed except
    for reads of the committed shards, no spill directory, memory bounded, configuration locked.

    DuckDB 1.5.5 facts this relies on (each kept as a test): views over ``read_parquet`` re-bind at query
    time, so the shard files must stay allowed paths; ``enable_external_access=false`` adds every database
    attached *before* it to the allowed paths (writable ones, which is how ``COPY ... TO`` replaced the
    catalog), while a SQLite catalog attached *after* it stays readable and off the list; PostgreSQL can
    only be attached before, so its connection details live in a secret and the ATTACH string is empty.
    """
    bounds = bounds or Bounds.of(None, None)
    url = ctx.catalog.engine.url
    on_sqlite = url.get_backend_name() == "sqlite"
    con = duckdb.connect(
        ":memory:",
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "python_enable_replacements": False,
            "allow_persistent_secrets": False,
            "temp_directory": "",
            "memory_limit": f"{bounds.memory_bytes}B",
        },
    )
    try:
        con.execute(
            f"LOAD {_literal(_extension_path('sqlite_scanner' if on_sqlite else 'postgres_scanner'))}"
        )
        if not on_sqlite:
            _attach_postgres(con, url, bounds)
        vectors, nearest = _committed_shards(ctx), _result_shards(ctx, CheckKind.NEAREST)
        per_iteration = _stats_shards(ctx)
        paths = [path for *_, path in vectors + per_iteration] + [path for _, _, path, _ in nearest]
        allowed = "[" + ", ".join(_literal(path) for path in paths) + "]"
        con.execute(f"SET allowed_paths = {allowed}")
        con.execute("SET enable_external_access = false")
        if on_sqlite:
            con.execute(f"ATTACH {_literal(url.database)} AS catalog (TYPE sqlite, READ_ONLY)")
        embeddings, latents = _view_sql(vectors)
        con.execute(f"CREATE VIEW embeddings AS {embeddings}")
        con.execute(f"CREATE VIEW latents AS {latents}")
        con.execute(f"CREATE VIEW nearest AS {_nearest_sql(nearest)}")
        con.execute(f"CREATE VIEW stats AS {_stats_sql(per_iteration)}")
        con.execute(
            "CREATE MACRO angle(a, b) AS acos(least(1.0, greatest(-1.0, "
            "list_cosine_similarity(a::FLOAT[], b::FLOAT[]))))"
        )
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise SynthdbError(_duckdb_message(ctx, exc, bounds)) from None
    except BaseException:
        con.close()
        raise
    return con


def _query_duckdb(ctx: Context, sql: str, bounds: Bounds) -> pa.Table:
    statements = sql_guard.checked_statements(sql, sql_guard.duckdb_policy(CATALOG_TABLES))
    con = connect(ctx, bounds)
    active = threading.Event()

    def work() -> pa.Table:
        active.set()
        try:
            for statement in statements[:-1]:
                con.execute(statement)
            reader = con.execute(statements[-1]).to_arrow_reader(BATCH_ROWS)
            return _collect(reader, _Budget(bounds))
        finally:
            active.clear()

    try:
        return run_bounded(work, con.interrupt, bounds)
    except duckdb.Error as exc:
        raise SynthdbError(_duckdb_message(ctx, exc, bounds)) from None
    finally:
        if not active.is_set():  # a statement that never stopped keeps its connection; the process ends
            con.close()


def _collect(reader: pa.RecordBatchReader, budget: _Budget) -> pa.Table:
    batches = []
    for batch in reader:
        budget.add(batch.nbytes)
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def _duckdb_message(ctx: Context, exc: duckdb.Error, bounds: Bounds) -> str:
    text = _masked(one_line(str(exc)), ctx.catalog.engine.url)
    if isinstance(exc, duckdb.OutOfMemoryException):
        return (
            f"the query needs more than the memory limit ({bounds.memory_text()}; nothing spills to disk): "
            f"narrow it (WHERE, LIMIT, fewer columns) or raise --memory-limit ({text})"
        )
    if str(ctx.store.root) in text:
        return f"a shard is unreadable ({text}): run `synthdb fsck`"
    return f"query failed: {text}"


def _masked(text: str, url: sa.engine.URL) -> str:
    """``text`` with the catalog's password, in any spelling it may appear in, replaced by ``***``."""
    password = url.password
    if not password:
        return text
    for spelling in {
        str(password),
        urllib.parse.quote(str(password), safe=""),
        urllib.parse.quote(str(password)),
    }:
        text = text.replace(spelling, "***")
    return text


# ------------------------------------------------------------------------------------ catalog engine


def _query_catalog(ctx: Context, sql: str, bounds: Bounds | None = None) -> pa.Table:
    """The SQL on the catalog database itself: SQLite decides with its authorizer, PostgreSQL after the
    parse-tree check, in a read-only transaction of an unprivileged role."""
    bounds = bounds or Bounds.of(None, None)
    url = ctx.catalog.engine.url
    if url.get_backend_name() == "sqlite":
        names, rows = _sqlite_rows(url.database, sql, bounds)
    else:
        statements = sql_guard.checked_statements(sql, sql_guard.postgres_policy(CATALOG_TABLES))
        if len(statements) > 1:
            raise SynthdbError("--engine catalog runs one statement at a time: split the query")
        names, rows = _postgres_rows(url, statements[0], bounds)
    return _arrow_table(names, rows)


# SQLite's authorizer decides at prepare time, for every table, column, function and pragma a statement
# touches (before it runs): SELECT, reads in the main database and allow-listed functions pass.
_SQLITE_ACTION_NAMES = (
    "CREATE_INDEX CREATE_TABLE CREATE_TEMP_INDEX CREATE_TEMP_TABLE CREATE_TEMP_TRIGGER CREATE_TEMP_VIEW "
    "CREATE_TRIGGER CREATE_VIEW DELETE DROP_INDEX DROP_TABLE DROP_TEMP_INDEX DROP_TEMP_TABLE "
    "DROP_TEMP_TRIGGER DROP_TEMP_VIEW DROP_TRIGGER DROP_VIEW INSERT PRAGMA READ SELECT TRANSACTION UPDATE "
    "ATTACH DETACH ALTER_TABLE REINDEX ANALYZE CREATE_VTABLE DROP_VTABLE FUNCTION SAVEPOINT RECURSIVE"
)
_SQLITE_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name
    for name in _SQLITE_ACTION_NAMES.split(" ")
    if hasattr(sqlite3, f"SQLITE_{name}")
}
_SQLITE_DENIED_FUNCTIONS = frozenset(
    {"load_extension", "fts3_tokenizer", "sqlite_log", "readfile", "writefile"}
)


def _sqlite_functions() -> frozenset[str]:
    """SQLite's built-in functions as this library has them, minus those that load code or log."""
    conn = sqlite3.connect(":memory:")
    try:
        names = {name.lower() for (name,) in conn.execute("SELECT name FROM pragma_function_list")}
    finally:
        conn.close()
    return frozenset(names - _SQLITE_DENIED_FUNCTIONS)


class _SqliteAuthorizer:
    """Allow SELECT, reads of the main database and allow-listed functions; remember the first refusal."""

    def __init__(self) -> None:
        self.functions = _sqlite_functions()
        self.refused: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, _src: object) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ and db in ("main", None):  # None: count(*) reads no column
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in self.functions:
            return sqlite3.SQLITE_OK
        if self.refused is None:
            what = " ".join(str(a) for a in (arg1, arg2) if a)
            self.refused = f"{_SQLITE_ACTIONS.get(action, action)} {what}".strip()
        return sqlite3.SQLITE_DENY


def _sqlite_rows(path: str, sql: str, bounds: Bounds) -> tuple[list[str], list[tuple[Any, ...]]]:
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    authorizer = _SqliteAuthorizer()
    active = threading.Event()

    def work() -> tuple[list[str], list[tuple[Any, ...]]]:
        active.set()
        try:
            cursor = conn.execute(sql)
            names = [d[0] for d in cursor.description or []]
            return names, _fetch(iter(lambda: cursor.fetchmany(BATCH_ROWS), []), _Budget(bounds))
        finally:
            active.clear()

    try:
        _bound_sqlite(conn, bounds)
        conn.set_authorizer(authorizer)
        return run_bounded(work, conn.interrupt, bounds)
    except (sqlite3.Error, MemoryError) as exc:
        raise SynthdbError(_sqlite_message(exc, authorizer.refused, bounds)) from None
    finally:
        if not active.is_set():  # a statement that never stopped keeps its connection; the process ends
            conn.close()


def _bound_sqlite(conn: sqlite3.Connection, bounds: Bounds) -> None:
    """Per-connection memory bounds: no value (string, blob, ``randomblob``) longer than the limit and a
    page cache of an eighth of it; sorts and temporary b-trees beyond that spill to SQLite's temporary
    files, which it unlinks as it creates them. (SQLite's ``hard_heap_limit`` would be stricter, but it
    is process-wide and SQL can only ever lower it, so it cannot be lifted after the query.)"""
    conn.execute("PRAGMA query_only = ON")
    conn.execute(f"PRAGMA cache_size = -{max(1024, bounds.memory_bytes // 8 // 1024)}")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, min(bounds.memory_bytes, 1_000_000_000))


def _sqlite_message(exc: BaseException, refused: str | None, bounds: Bounds) -> str:
    text = one_line(str(exc)) or type(exc).__name__
    if refused:
        return (
            f"synthdb query is read-only: SQLite's authorizer refused {refused} (only SELECT, reads and "
            "plain functions run); change the catalog through synthdb commands"
        )
    if "one statement at a time" in text:
        return "--engine catalog runs one statement at a time (a SELECT): split the query"
    if isinstance(exc, MemoryError) or "out of memory" in text or "too big" in text:
        return (
            f"the query needs more than the memory limit ({bounds.memory_text()}): narrow it "
            "(WHERE, LIMIT) or raise --memory-limit"
        )
    return f"query failed: {text}"


def _postgres_rows(
    url: sa.engine.URL, statement: str, bounds: Bounds
) -> tuple[list[str], list[tuple[Any, ...]]]:
    import psycopg

    params = pg_access.libpq_params(url, bounds.server_settings)
    try:
        conn = psycopg.connect(**params, autocommit=False)
    except psycopg.Error as exc:
        raise SynthdbError(
            f"cannot connect to the catalog {pg_access.display(url)} ({_masked(one_line(str(exc)), url)}): "
            "check that it is running and reachable"
        ) from None
    active = threading.Event()

    def work() -> tuple[list[str], list[tuple[Any, ...]]]:
        active.set()
        try:
            cursor = conn.cursor()
            stream = cursor.stream(statement, size=BATCH_ROWS)  # extended protocol: one statement
            try:
                first = next(stream, None)
                names = [d.name for d in cursor.description or []]
                return names, _fetch(_chunks(first, stream), _Budget(bounds))
            finally:
                stream.close()  # a stream left early cancels the rest, so the connection is usable again
        finally:
            active.clear()

    try:
        _refuse_privileged(conn, url)
        return run_bounded(work, getattr(conn, "cancel_safe", conn.cancel), bounds)
    except psycopg.errors.QueryCanceled:
        raise SynthdbError(
            f"the query ran past its {bounds.timeout_s:g} s timeout on the server and was cancelled: "
            "narrow it (WHERE, LIMIT) or raise --timeout"
        ) from None
    except psycopg.Error as exc:
        raise SynthdbError(f"query failed: {_masked(one_line(str(exc)), url)}") from None
    finally:
        if not active.is_set():
            conn.rollback()  # nothing a query did survives it, not even a large object or a lock
            conn.close()


def _chunks(
    first: tuple[Any, ...] | None, rest: Iterable[tuple[Any, ...]]
) -> Iterable[list[tuple[Any, ...]]]:
    if first is None:
        return
    chunk = [first]
    for row in rest:
        chunk.append(row)
        if len(chunk) >= BATCH_ROWS:
            yield chunk
            chunk = []
    yield chunk


def _refuse_privileged(conn: Any, url: sa.engine.URL) -> None:
    with conn.cursor() as cursor:
        role, privileges = pg_access.role_privileges(cursor)
    if privileges:
        raise SynthdbError(
            f"synthdb query is read-only, and the catalog role {role!r} of {pg_access.display(url)} "
            f"could undo that ({', '.join(privileges)}: it reads server files and signals other sessions "
            "from SQL), so --engine catalog refuses it; connect as a least-privilege role "
            "(`synthdb init --print-grants` prints the SQL) or use the default duckdb engine"
        )


def _fetch(chunks: Iterable[list[tuple[Any, ...]]], budget: _Budget) -> list[tuple[Any, ...]]:
    """Every row, counting each chunk's approximate memory (Python objects: ~56 bytes a value plus the
    text or bytes) against the budget before keeping it."""
    rows: list[tuple[Any, ...]] = []
    for chunk in chunks:
        budget.add(
            sum(56 * len(row) + sum(len(v) for v in row if isinstance(v, str | bytes)) for row in chunk)
        )
        rows.extend(chunk)
    return rows


def _arrow_table(names: list[str], rows: list[tuple[Any, ...]]) -> pa.Table:
    """Rows to Arrow, column by column (so repeated names survive); a column mixing types (SQLite allows
    that) becomes text."""
    columns = [_column([row[i] for row in rows]) for i in range(len(names))]
    return pa.Table.from_arrays(columns, names=names)


def _column(values: list[Any]) -> pa.Array:
    plain = [_plain(v) for v in values]
    try:
        return pa.array(plain)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in plain], pa.string())


def _plain(value: object) -> object:
    """Values Arrow cannot infer (dicts from JSON columns) become JSON text."""
    return json.dumps(value) if isinstance(value, dict | list) else value


# ------------------------------------------------------------------------------------------------ output


def write_result(table: pa.Table, fmt: str, output: str | Path | None) -> str | None:
    """Serialise a result; returns text when there is no output file (table, csv and json)."""
    if fmt not in FORMATS:
        raise SynthdbError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise SynthdbError("--format parquet needs --output FILE")
    table = table.rename_columns(unique_names(table.column_names))
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, output)
            return None
        if fmt == "json":
            text = json.dumps(table.to_pylist(), default=str, indent=None)
        elif fmt == "csv":
            text = _csv(table)
        else:
            text = _plain_table(table)
        if output is None:
            return text
        Path(output).write_text(text + "\n")
    except (OSError, pa.ArrowException) as exc:
        raise SynthdbError(
            f"cannot write {output} ({exc}): check that its folder exists and is writable"
        ) from None
    return None


def rows_of(table: pa.Table, limit: int | None = None) -> list[list[object]]:
    """The table's rows as lists of values, in column order (never keyed by name)."""
    part = table if limit is None else table.slice(0, limit)
    columns = [column.to_pylist() for column in part.columns]
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def cell(value: object) -> str:
    """One value as text for the csv and table formats (lists as JSON)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _csv(table: pa.Table) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in rows_of(table):
        writer.writerow([cell(v) for v in row])
    return buffer.getvalue().rstrip("\n")


def _plain_table(table: pa.Table, max_rows: int = 200) -> str:
    """A fixed-width text table (the CLI renders ``table`` with rich when writing to a terminal)."""
    names = table.column_names
    rows = [[_short(cell(v)) for v in row] for row in rows_of(table, max_rows)]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    lines = [
        "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if table.num_rows > max_rows:
        lines.append(f"... {table.num_rows - max_rows} more rows (use --format csv or --output)")
    return "\n".join(lines)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
