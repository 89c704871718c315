"""``synthdb query``: read-only SQL over the catalog and the committed vector shards.

The default engine is DuckDB with the catalog attached read-only (the sqlite / postgres scanner
extensions, loaded from their pinned PyPI packages' files: nothing is downloaded) and two views over
the committed Parquet shards:

- ``embeddings(dataset, model, sample_id, identity_id, embedding FLOAT[])``
- ``latents(dataset, generator, sample_id, identity_id, <w | w_plus | z | c ...> FLOAT[])``

and one view per kind of check result (``result`` shards), joined to the catalog for names:

- ``nearest(run_id, query_dataset, query_identity_id, query_identity, rank, ref_dataset, ref_identity_id,
  ref_identity, ref_sample_id, angle_rad, leak)`` from ``synthdb check nearest`` (angles in radians;
  ``leak`` is NULL when the check had no threshold)

Parquet gives fixed-size lists back as ``FLOAT[]``; cast (``embedding::FLOAT[128]``) for DuckDB's
``array_*`` functions. Writes are refused in three layers: DuckDB's own parser must classify every
statement as SELECT or EXPLAIN; the catalog is attached READ_ONLY; and after the views are defined,
file access is limited to the shard files and the configuration is locked, so COPY TO, ATTACH,
INSTALL and reads of other files fail at engine level too. ``engine="catalog"`` runs the SQL on the
catalog database itself through a read-only connection (SQLite ``mode=ro`` plus an authorizer;
PostgreSQL ``READ ONLY`` transaction).
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from synthdb.catalog.schema import Dataset, Shard
from synthdb.context import Context
from synthdb.errors import SynthdbError

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
FORMATS = ("table", "csv", "json", "parquet")


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


def check_read_only(sql: str) -> int:
    """Refuse any statement that is not a SELECT or EXPLAIN, as DuckDB's parser classifies it; return how
    many statements there are."""
    parser = duckdb.connect(":memory:")
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as exc:
        raise SynthdbError(f"cannot parse the query: {str(exc).splitlines()[0]}") from None
    finally:
        parser.close()
    if not statements:
        raise SynthdbError("the query is empty: pass one or more SELECT statements")
    for statement in statements:
        if statement.type not in ALLOWED:
            kind = statement.type.name
            raise SynthdbError(
                f"synthdb query is read-only: a {kind} statement is refused (only SELECT and EXPLAIN run); "
                "change the catalog through synthdb commands"
            )
    return len(statements)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _committed_shards(ctx: Context) -> list[tuple[str, str, str, str]]:
    shard, dataset = Shard.__table__, Dataset.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(dataset.c.name, shard.c.content, shard.c.space, shard.c.path)
            .join(dataset, dataset.c.id == shard.c.dataset_id)
            .where(shard.c.state == "committed", shard.c.content.in_(["embedding", "latent"]))
            .order_by(shard.c.id)
        ).all()
    return [(name, content, space or "", str(ctx.store.abspath(path))) for name, content, space, path in rows]


def _view_sql(shards: list[tuple[str, str, str, str]]) -> tuple[str, str]:
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for dataset, content, space, path in shards:
        groups[(content, dataset, space)].append(path)
    parts: dict[str, list[str]] = {"embedding": [], "latent": []}
    for (content, dataset, space), paths in groups.items():
        files = "[" + ", ".join(_literal(p) for p in paths) + "]"
        if content == "embedding":
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
    embeddings = " UNION ALL ".join(parts["embedding"]) or empty_embeddings
    latents = " UNION ALL BY NAME ".join(parts["latent"]) or empty_latents
    return embeddings, latents


def _result_shards(ctx: Context, space: str) -> list[tuple[str, int | None, str]]:
    """Committed result shards of one kind: (dataset, run id, absolute path)."""
    shard, dataset = Shard.__table__, Dataset.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(dataset.c.name, shard.c.run_id, shard.c.path)
            .join(dataset, dataset.c.id == shard.c.dataset_id)
            .where(shard.c.state == "committed", shard.c.content == "result", shard.c.space == space)
            .order_by(shard.c.id)
        ).all()
    return [(name, run_id, str(ctx.store.abspath(path))) for name, run_id, path in rows]


def _nearest_sql(shards: list[tuple[str, int | None, str]]) -> str:
    """The ``nearest`` view: a result row holds the query identity and the matched REF sample; the catalog
    gives the REF identity, the dataset and the labels."""
    groups: dict[tuple[str, int | None], list[str]] = defaultdict(list)
    for dataset, run_id, path in shards:
        groups[(dataset, run_id)].append(path)
    parts = [
        f"SELECT {'NULL' if run_id is None else int(run_id)}::BIGINT AS run_id, "
        f"{_literal(dataset)} AS query_dataset, identity_id AS query_identity_id, "
        "CAST(rank[1] AS INTEGER) AS rank, sample_id AS ref_sample_id, angle_rad[1]::DOUBLE AS angle_rad, "
        "CASE WHEN isnan(leak[1]) THEN NULL ELSE leak[1] > 0.5 END AS leak "
        f"FROM read_parquet([{', '.join(_literal(p) for p in paths)}])"
        for (dataset, run_id), paths in groups.items()
    ]
    rows = " UNION ALL ".join(parts) or (
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


def _attach_catalog(con: duckdb.DuckDBPyConnection, ctx: Context) -> None:
    url = ctx.catalog.engine.url
    if url.get_backend_name() == "sqlite":
        con.execute(f"LOAD {_literal(_extension_path('sqlite_scanner'))}")
        con.execute(f"ATTACH {_literal(url.database)} AS catalog (TYPE sqlite, READ_ONLY)")
    else:
        con.execute(f"LOAD {_literal(_extension_path('postgres_scanner'))}")
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        con.execute(f"ATTACH {_literal(dsn)} AS catalog (TYPE postgres, READ_ONLY)")


def connect(ctx: Context) -> duckdb.DuckDBPyConnection:
    """A sandboxed DuckDB connection: catalog attached read-only, shard views, locked configuration."""
    con = duckdb.connect(
        ":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    _attach_catalog(con, ctx)
    shards = _committed_shards(ctx)
    embeddings, latents = _view_sql(shards)
    con.execute(f"CREATE VIEW embeddings AS {embeddings}")
    con.execute(f"CREATE VIEW latents AS {latents}")
    nearest = _result_shards(ctx, "nearest")
    con.execute(f"CREATE VIEW nearest AS {_nearest_sql(nearest)}")
    con.execute(
        "CREATE MACRO angle(a, b) AS acos(least(1.0, greatest(-1.0, "
        "list_cosine_similarity(a::FLOAT[], b::FLOAT[]))))"
    )
    allowed = "[" + ", ".join(_literal(path) for *_, path in shards + nearest) + "]"
    con.execute(f"SET allowed_paths = {allowed}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def query(ctx: Context, sql: str, engine: str = "duckdb") -> pa.Table:
    """Run read-only SQL and return the result of the last statement as an Arrow table."""
    count = check_read_only(sql)
    if engine == "catalog":
        if count > 1:
            raise SynthdbError("--engine catalog runs one statement at a time: split the query")
        return _query_catalog(ctx, sql)
    if engine != "duckdb":
        raise SynthdbError(f"unknown query engine '{engine}': use duckdb or catalog")
    con = None
    try:
        con = connect(ctx)
        result = None
        for statement in con.extract_statements(sql):
            result = con.execute(statement)
        assert result is not None
        return result.to_arrow_table()
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        if str(ctx.store.root) in first:
            raise SynthdbError(f"a shard is unreadable ({first}): run `synthdb fsck`") from None
        raise SynthdbError(f"query failed: {first}") from None
    finally:
        if con is not None:
            con.close()


_SQLITE_DENY = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}


def _sqlite_authorizer(action: int, *_args: object) -> int:
    if action in _SQLITE_DENY:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _query_catalog(ctx: Context, sql: str) -> pa.Table:
    url = ctx.catalog.engine.url
    if url.get_backend_name() == "sqlite":
        conn = None
        try:
            conn = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
            conn.set_authorizer(_sqlite_authorizer)
            conn.execute("PRAGMA query_only = ON")
            cursor = conn.execute(sql)
            names = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            raise SynthdbError(f"query failed: {exc}") from None
        finally:
            if conn is not None:
                conn.close()
    else:
        engine = sa.create_engine(url, execution_options={"postgresql_readonly": True})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                result = conn.exec_driver_sql(sql)
                names = list(result.keys())
                rows = [tuple(r) for r in result]
        except sa.exc.DBAPIError as exc:
            raise SynthdbError(f"query failed: {str(exc.orig).splitlines()[0]}") from None
        finally:
            engine.dispose()
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    return (
        pa.table({n: pa.array([_plain(v) for v in col]) for n, col in columns.items()})
        if names
        else pa.table({})
    )


def _plain(value: object) -> object:
    """Values Arrow cannot infer (dicts from JSON columns) become JSON text."""
    return json.dumps(value) if isinstance(value, dict | list) else value


def write_result(table: pa.Table, fmt: str, output: str | Path | None) -> str | None:
    """Serialise a result; returns text when there is no output file (table, csv and json)."""
    if fmt not in FORMATS:
        raise SynthdbError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise SynthdbError("--format parquet needs --output FILE")
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


def _cell(value: object) -> str:
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
    for row in table.to_pylist():
        writer.writerow([_cell(v) for v in row.values()])
    return buffer.getvalue().rstrip("\n")


def _plain_table(table: pa.Table, max_rows: int = 200) -> str:
    """A fixed-width text table (the CLI renders ``table`` with rich when writing to a terminal)."""
    names = table.column_names
    rows = [[_short(_cell(v)) for v in row.values()] for row in table.slice(0, max_rows).to_pylist()]
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
