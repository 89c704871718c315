"""``synthdb query``: DuckDB over the catalog and shards, read-only on SQLite and PostgreSQL catalogs.

The hostile cases (writes, file reads, other databases, server functions, runaway queries, Ctrl-C) are
in ``tests/analysis/test_sql_guard.py``.
"""

import csv
import dataclasses
import io
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from synthdb.admin import catalog_role_warning, init_workspace, postgres_grants
from synthdb.analysis.query import connect, parse_memory, query, unique_names, write_result
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.schema import Sample, Shard
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.commit import NewSamples, ShardSpec, commit
from tests.conftest import CliRun


@pytest.fixture
def filled(ctx: Context) -> Context:
    rng = np.random.default_rng(1)
    for name, n in (("alpha", 30), ("beta", 12)):
        ds = create_dataset(ctx.catalog, name, "synthetic", "generated")
        for unit in range(2):
            keys = [f"{unit}-{i}" for i in range(n)]
            commit(
                ctx.catalog,
                ctx.store,
                dataset_id=ds,
                unit=str(unit),
                samples=NewSamples(
                    keys=keys, role="variation", identity_labels=[f"{i % 5}" for i in range(n)]
                ),
                shards=[
                    ShardSpec("embedding", "m64", {"embedding": rng.standard_normal((n, 64))}),
                    ShardSpec("latent", "g", {"w": rng.standard_normal((n, 512))}),
                ],
            )
    return ctx


def test_group_by_over_embeddings(filled: Context) -> None:
    result = query(filled, "SELECT dataset, count(*) AS n FROM embeddings GROUP BY 1 ORDER BY 1").to_pylist()
    assert result == [{"dataset": "alpha", "n": 60}, {"dataset": "beta", "n": 24}]


def test_join_with_catalog_and_array_functions(filled: Context) -> None:
    rows = query(
        filled,
        """
        SELECT s.key, i.label,
               array_cosine_similarity(e.embedding::FLOAT[64], e.embedding::FLOAT[64]) AS self_cos,
               angle(e.embedding, e.embedding) AS self_angle
        FROM embeddings e JOIN catalog.sample s ON s.id = e.sample_id
        JOIN catalog.identity i ON i.id = s.identity_id
        WHERE e.dataset = 'beta' ORDER BY s.id LIMIT 3""",
    ).to_pylist()
    assert [r["key"] for r in rows] == ["0-0", "0-1", "0-2"]
    assert [r["label"] for r in rows] == ["0", "1", "2"]
    assert all(abs(r["self_cos"] - 1) < 1e-5 and r["self_angle"] < 1e-2 for r in rows)
    latents = query(
        filled, "SELECT generator, len(w) AS d, count(*) AS n FROM latents GROUP BY ALL"
    ).to_pylist()
    assert latents == [{"generator": "g", "d": 512, "n": 84}]


WRITES = [
    "DELETE FROM catalog.sample",
    "INSERT INTO catalog.sample (id, dataset_id, key, role) VALUES (999, 1, 'x', 'reference')",
    "UPDATE catalog.sample SET key = 'x'",
    "DROP TABLE catalog.sample",
    "CREATE TABLE t AS SELECT 1",
    "ATTACH '{tmp}/other.db' AS other",
    "COPY (SELECT * FROM embeddings) TO '{tmp}/leak.csv'",
    "SELECT 1; DELETE FROM catalog.sample",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "CALL pragma_version()",
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_and_nothing_changes(filled: Context, sql: str, tmp_path: Path) -> None:
    before = query(filled, "SELECT count(*) AS n FROM catalog.sample").to_pylist()
    with pytest.raises(SynthdbError, match="read-only"):
        query(filled, sql.format(tmp=tmp_path))
    assert query(filled, "SELECT count(*) AS n FROM catalog.sample").to_pylist() == before == [{"n": 84}]
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "other.db").exists()


def test_engine_blocks_other_files_even_below_the_parser(filled: Context) -> None:
    with pytest.raises(SynthdbError, match=r"table function read_csv\(\) is refused"):
        query(filled, "SELECT * FROM read_csv('/etc/passwd')")
    con = connect(filled)  # the sandboxed connection itself, without the parse-tree check
    try:
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_csv('/etc/passwd')")
    finally:
        con.close()


@contextmanager
def catalog_reader(ctx: Context) -> Iterator[Context]:
    """The workspace through a least-privilege role on PostgreSQL (``--engine catalog`` refuses the
    superuser the tests connect as); the workspace itself on SQLite."""
    if ctx.catalog.dialect == "sqlite":
        yield ctx
        return
    role = f"synthdb_q_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ctx.catalog.engine.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    url = ctx.catalog.engine.url.set(username=role).render_as_string(hide_password=False)
    reader = Context.from_workspace(dataclasses.replace(ctx.ws, catalog_url=url))
    try:
        yield reader
    finally:
        reader.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()


def test_catalog_engine_is_read_only(filled: Context) -> None:
    with catalog_reader(filled) as reader:
        assert query(reader, "SELECT count(*) AS n FROM sample", engine="catalog").to_pylist() == [{"n": 84}]
        for sql in ("DELETE FROM sample", "UPDATE sample SET key = 'x'", "DROP TABLE sample"):
            with pytest.raises(SynthdbError, match="read-only"):
                query(reader, sql, engine="catalog")
        with pytest.raises(SynthdbError, match="one statement at a time|read-only"):
            query(reader, "SELECT 1; DROP TABLE sample", engine="catalog")
        with pytest.raises(SynthdbError, match="one statement at a time"):
            query(reader, "SELECT 1; SELECT 2", engine="catalog")
        like = "SELECT count(*) AS n FROM sample WHERE key LIKE '0-%' AND role = 'variation'"
        assert query(reader, like, engine="catalog").to_pylist() == [{"n": 42}]  # '%' is no placeholder
        plan = query(reader, "EXPLAIN SELECT * FROM sample", engine="catalog")
        assert plan.num_rows >= 1
    with filled.catalog.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Sample)).scalar_one() == 84


@pytest.mark.parametrize("engine", ["duckdb", "catalog"])
def test_columns_that_share_a_name_survive_every_format(filled: Context, engine: str, tmp_path: Path) -> None:
    """Regression: JSON kept the last of two ``a``, CSV wrote 14 names over 10 values, table crashed."""
    prefix = "catalog." if engine == "duckdb" else ""
    join = (
        f"SELECT * FROM {prefix}sample s JOIN {prefix}identity i ON i.id = s.identity_id "
        "ORDER BY s.id LIMIT 2"
    )
    with catalog_reader(filled) as reader:
        pair = query(reader, "SELECT 1 AS a, 2 AS a, 3 AS a_1", engine=engine)
        joined = query(reader, join, engine=engine)
    assert pair.column_names == ["a", "a_2", "a_1"]
    assert json.loads(write_result(pair, "json", None)) == [{"a": 1, "a_2": 2, "a_1": 3}]
    assert write_result(pair, "csv", None) == "a,a_2,a_1\n1,2,3"
    assert write_result(pair, "table", None).splitlines()[2].split() == ["1", "2", "3"]
    names = joined.column_names
    assert len(set(names)) == len(names) == 14 and {"id", "id_1", "label", "label_1"} <= set(names)
    rows = json.loads(write_result(joined, "json", None))
    assert len(rows) == 2 and all(len(row) == 14 and row["id_1"] == row["identity_id"] for row in rows)
    csv_rows = list(csv.reader(io.StringIO(write_result(joined, "csv", None))))
    assert [len(row) for row in csv_rows] == [14, 14, 14]
    write_result(joined, "parquet", tmp_path / "j.parquet")
    assert pq.read_table(tmp_path / "j.parquet").column_names == names
    assert len(write_result(joined, "table", None).splitlines()) == 4


def test_duckdb_hints_are_kept_on_one_line(filled: Context) -> None:
    cases = {
        "SELECT * FROM catalog.sampel": 'Did you mean "catalog.sample"',
        "SELECT * FROM sample": 'Did you mean "catalog.sample"',
        "SELECT kye FROM catalog.sample": 'Candidate bindings: "key"',
        "SELECT lenght(key) FROM catalog.sample": 'Did you mean "length"',
        "SELECT embedding::FLAOT[] FROM embeddings": "Type with name FLAOT does not exist! Did you mean",
    }
    for sql, hint in cases.items():
        with pytest.raises(SynthdbError, match=hint) as failed:
            query(filled, sql)
        assert "\n" not in str(failed.value) and "LINE 1" not in str(failed.value)


def test_unique_names_and_memory_limits() -> None:
    assert unique_names(["a", "a", "b", "a"]) == ["a", "a_1", "b", "a_2"]
    assert unique_names(["a", "a", "a_1"]) == ["a", "a_2", "a_1"]
    assert parse_memory("4GB") == 4 * 10**9 and parse_memory("512MiB") == 512 * 2**20
    for bad in ("lots", "4XB", "12"):
        with pytest.raises(SynthdbError, match="--memory-limit"):
            parse_memory(bad)


def test_cli_query_bounds_and_output(filled: Context, tmp_path: Path, synthdb_cli: CliRun) -> None:
    ws = ["-w", str(filled.ws.root), "query"]
    out = tmp_path / "r.csv"
    done = synthdb_cli(*ws, "SELECT 1 AS a, 2 AS a", "--format", "csv", "-o", str(out))
    assert done.exit_code == 0, done.output
    assert done.output.strip() == f"wrote 1 rows (2 columns, csv) to {out}"
    assert out.read_text() == "a,a_1\n1,2\n"
    slow = "SELECT sum(a.range * b.range) FROM range(200000) a, range(200000) b"
    stopped = synthdb_cli(*ws, slow, "--timeout", "1")
    assert stopped.exit_code == 1 and "1 s timeout" in stopped.output and stopped.output.count("\n") == 1
    bad = synthdb_cli(*ws, "SELECT 1", "--memory-limit", "lots")
    assert bad.exit_code == 1 and "--memory-limit 'lots' is not a size" in bad.output


def test_output_formats(filled: Context, tmp_path: Path) -> None:
    table = query(filled, "SELECT dataset, count(*) AS n FROM embeddings GROUP BY 1 ORDER BY 1")
    assert write_result(table, "csv", None) == "dataset,n\nalpha,60\nbeta,24"
    assert json.loads(write_result(table, "json", None)) == [
        {"dataset": "alpha", "n": 60},
        {"dataset": "beta", "n": 24},
    ]
    assert "alpha" in write_result(table, "table", None)
    write_result(table, "parquet", tmp_path / "r.parquet")
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == table.to_pylist()
    with pytest.raises(SynthdbError, match="needs --output"):
        write_result(table, "parquet", None)


def test_unreadable_shard_names_fsck(filled: Context) -> None:
    with filled.catalog.engine.connect() as conn:
        path = conn.execute(sa.select(Shard.path).where(Shard.content == "embedding").limit(1)).scalar_one()
    filled.store.abspath(path).write_bytes(b"not parquet at all")
    with pytest.raises(SynthdbError, match="synthdb fsck"):
        query(filled, "SELECT count(*) FROM embeddings")


def test_empty_workspace_has_empty_views(sqlite_ctx: Context) -> None:
    assert query(sqlite_ctx, "SELECT count(*) AS n FROM embeddings").to_pylist() == [{"n": 0}]
    assert query(sqlite_ctx, "SELECT count(*) AS n FROM latents").to_pylist() == [{"n": 0}]


def test_catalog_engine_takes_one_statement_and_unwritable_output_is_named(
    sqlite_ctx: Context, tmp_path: Path
) -> None:
    with pytest.raises(SynthdbError, match="one statement at a time"):
        query(sqlite_ctx, "SELECT 1; SELECT 2", engine="catalog")
    table = query(sqlite_ctx, "SELECT 1 AS one")
    for fmt in ("csv", "parquet"):
        with pytest.raises(SynthdbError, match="cannot write .*no-such-dir"):
            write_result(table, fmt, tmp_path / "no-such-dir" / f"out.{fmt}")


def test_init_warns_about_a_superuser_catalog_and_prints_grants_that_work(
    postgres_url: str, tmp_path: Path, synthdb_cli: CliRun
) -> None:
    """The printed SQL, run on the real server, gives an owner that can init and write the catalog and a
    reader that can only query it; init warns when its URL's role is a superuser."""
    loud = synthdb_cli("init", str(tmp_path / "su"), "--catalog-url", postgres_url)
    assert (
        loud.exit_code == 0 and "warning: the catalog role 'postgres' is privileged (superuser" in loud.output
    )
    owner, reader = (f"synthdb_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("o", "r"))
    sql = postgres_grants(postgres_url, owner, reader)
    url = sa.engine.make_url(postgres_url)
    printed = synthdb_cli("init", "--print-grants", "--catalog-url", postgres_url)
    assert printed.exit_code == 0 and f'ON DATABASE "{url.database}"' in printed.output
    fresh = f"synthdb_g_{uuid.uuid4().hex[:10]}"
    server = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{fresh}"')
    target = url.set(database=fresh)
    admin = sa.create_engine(target, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in postgres_grants(target.render_as_string(False), owner, reader).split(";"):
                body = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
                if body.strip():
                    conn.exec_driver_sql(body)
        ctx = init_workspace(tmp_path / "ws", catalog_url=target.set(username=owner).render_as_string(False))
        assert catalog_role_warning(ctx) is None
        create_dataset(ctx.catalog, "d", "synthetic", "generated")  # the owner writes
        as_reader = target.set(username=reader).render_as_string(False)
        rctx = Context.from_workspace(dataclasses.replace(ctx.ws, catalog_url=as_reader))
        assert query(rctx, "SELECT name FROM dataset", engine="catalog").to_pylist() == [{"name": "d"}]
        with pytest.raises(SynthdbError, match="refused the operation .*(read-only|permission denied)"):
            create_dataset(rctx.catalog, "e", "synthetic", "generated")  # the reader cannot
        rctx.close()
        ctx.close()
        assert "DROP" not in sql and "SUPERUSER" not in sql.replace("NOSUPERUSER", "")
    finally:
        admin.dispose()
        with server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {owner}")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {reader}")
        server.dispose()


# ------------------------------------------------------------------------ the stats view (issue 17)


@pytest.mark.slow
def test_stats_of_a_langevin_run_are_queryable(ctx: Context) -> None:
    """Regression: Langevin's per-iteration statistics were stored but not queryable. On SQLite and
    PostgreSQL, ``stats`` gives each row with its run, dataset and unit, as the shards hold them."""
    from synthdb.generate import units
    from synthdb.generate.references import LangevinParams, ReferenceParams, generate_references

    params = ReferenceParams(
        name="refs", num_identities=4, generator="stylegan2-tiny", batch_size=4,
        langevin=LangevinParams(iterations=3, repulsion_radius=0.5),
    )  # fmt: skip
    run_id = generate_references(ctx, params)
    got = query(ctx, f"SELECT iteration, dist_min, prop_ict FROM stats WHERE run_id = {run_id} ORDER BY 1")
    stored = sorted(units.read_stats(ctx, run_id), key=lambda row: row["iteration"])
    assert got.to_pylist() == [
        {k: row[k] for k in ("iteration", "dist_min", "prop_ict")} for row in stored
    ]  # fmt: skip
    assert [row["iteration"] for row in got.to_pylist()] == [0, 1, 2, 3]
    labels = query(ctx, "SELECT DISTINCT run_id, dataset, unit FROM stats ORDER BY unit").to_pylist()
    assert labels == [{"run_id": run_id, "dataset": "refs", "unit": u} for u in
                      ("iter/000000", "iter/000001", "iter/000002", "iter/final")]  # fmt: skip


@pytest.mark.slow
def test_stats_of_other_algorithms_unite_by_name(sqlite_ctx: Context) -> None:
    """ICT rows (batch, candidates, accepted) and Dispersion rows (which carry a ``unit`` column of their
    own) sit in one view: missing columns are NULL, and ``unit`` is the catalog's, once; the view joins
    with the catalog like any table."""
    from synthdb.generate.references import ReferenceParams, generate_references
    from synthdb.generate.variations import VariationParams, generate_variations

    tiny = {"generator": "stylegan2-tiny", "batch_size": 4}
    refs = ReferenceParams(name="refs", num_identities=3, algorithm="ict", ict=0.2, **tiny)
    ict = generate_references(sqlite_ctx, refs)
    variations = VariationParams(
        name="vars", references="refs", num_variations=2, iterations=1, global_coefficient=0.1, **tiny
    )
    disp = generate_variations(sqlite_ctx, variations)
    rows = query(
        sqlite_ctx,
        "SELECT r.kind, count(*) AS n, count(s.batch) AS batches, count(s.iteration) AS iterations "
        "FROM stats s JOIN catalog.run r ON r.id = s.run_id GROUP BY 1 ORDER BY 1",
    ).to_pylist()
    ict_rows, dispersion_rows = rows
    assert ict_rows["kind"] == "references" and ict_rows["batches"] == ict_rows["n"] >= 1
    assert ict_rows["iterations"] == 0
    assert dispersion_rows == {"kind": "variations", "n": 2, "batches": 0, "iterations": 2}  # 0 and final
    accepted = query(sqlite_ctx, f"SELECT sum(accepted) AS a FROM stats WHERE run_id = {ict}").to_pylist()
    assert accepted == [{"a": 3}]
    units = query(sqlite_ctx, f"SELECT DISTINCT unit FROM stats WHERE run_id = {disp}").to_pylist()
    assert units == [{"unit": "ids/000000"}]


def test_query_output_says_where_it_wrote(
    filled: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthdb_cli: CliRun
) -> None:
    """``-o`` with a relative path: the message names the absolute file (the command's cwd is not the
    reader's), for every format that writes a file."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for fmt in ("csv", "parquet"):
        done = synthdb_cli("query", "SELECT 1 AS a", "-o", f"r.{fmt}", "--format", fmt, ws=filled.ws.root)
        assert done.exit_code == 0, done.output
        written = here.resolve() / f"r.{fmt}"
        assert done.output.strip() == f"wrote 1 rows (1 columns, {fmt}) to {written}"
        assert written.is_file()
