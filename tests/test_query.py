"""``synthdb query``: DuckDB over the catalog and shards, read-only on SQLite and PostgreSQL catalogs."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from synthdb.analysis.query import query, write_result
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.schema import Sample, Shard
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.commit import NewSamples, ShardSpec, commit


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


def test_engine_blocks_other_files_even_in_a_select(filled: Context) -> None:
    with pytest.raises(SynthdbError, match="query failed: Permission Error"):
        query(filled, "SELECT * FROM read_csv('/etc/passwd')")


def test_catalog_engine_is_read_only(filled: Context) -> None:
    assert query(filled, "SELECT count(*) AS n FROM sample", engine="catalog").to_pylist() == [{"n": 84}]
    for sql in ("DELETE FROM sample", "UPDATE sample SET key = 'x'", "SELECT 1; DROP TABLE sample"):
        with pytest.raises(SynthdbError, match="read-only"):
            query(filled, sql, engine="catalog")
    with filled.catalog.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Sample)).scalar_one() == 84


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
