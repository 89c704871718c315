"""Bulk catalog insert: 200,000 sample rows into SQLite and PostgreSQL (goal: SQLite >= 50,000 rows/s).

Rows carry a key, an identity, a role, a label and a small JSON attribute dict, inserted in one
transaction with pre-allocated ids (``synthdb.catalog.bulk``). PostgreSQL uses
``SYNTHDB_TEST_POSTGRES_URL`` (or the local default) and a scratch database that is dropped after.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from synthdb.catalog import bulk, migrate
from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import Sample

ROWS, PER_IDENTITY, REPEATS = 200_000, 16, 3
PG = os.environ.get("SYNTHDB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def measure(url: str) -> float:
    catalog = Catalog(url)
    migrate.upgrade(catalog.engine)
    with catalog.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO dataset (id, name, kind, source) VALUES (1, 'b', 'synthetic', 'x')")
        )
        idents = bulk.identity_ids(conn, 1, [f"{i // PER_IDENTITY:05d}" for i in range(ROWS)])
    rates = []
    for rep in range(REPEATS):
        keys = [f"{rep}/{i}" for i in range(ROWS)]
        attrs = [{"pose": i % 7, "session": rep} for i in range(ROWS)]
        t0 = time.perf_counter()
        with catalog.begin() as conn:
            ids = bulk.allocate_ids(conn, Sample.__table__, ROWS)
            bulk.insert_samples(
                conn, 1, ids, keys, idents, "variation", labels=["augmentation"] * ROWS, attributes=attrs
            )
        rates.append(ROWS / (time.perf_counter() - t0))
    catalog.dispose()
    return statistics.median(rates)


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        results["sqlite (WAL file)"] = measure(f"sqlite:///{tmp}/bench.db")
    admin = sa.create_engine(
        PG.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    name = f"synthdb_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        results["postgresql"] = measure(
            str(admin.url.set(database=name).render_as_string(hide_password=False))
        )
    except sa.exc.OperationalError as exc:
        print(f"postgresql skipped: {str(exc.orig).splitlines()[0]}")
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{'catalog':<20}{'rows/s (median of 3 x 200k)':>30}")
    for engine, rate in results.items():
        print(f"{engine:<20}{rate:>30,.0f}")
    print(f"sqlite vs goal 50,000 rows/s: {results['sqlite (WAL file)'] / 50_000:.2f}x")


if __name__ == "__main__":
    main()
