"""Bulk writes into the catalog: id allocation, identities and samples, many rows per round trip.

Ids are allocated before rows are inserted so that the shard files that reference them can be
written while the rows are being inserted (see ``synthdb.store.commit``). On SQLite the caller holds
the write lock (``BEGIN IMMEDIATE``), so ``max(id)`` is stable; on PostgreSQL the table's sequence
hands out the ids. Rows go in with one executemany on SQLite and one COPY on PostgreSQL, where
psycopg would otherwise send one statement per row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection

from synthdb.catalog.schema import SAMPLE_ROLES, Identity, Sample
from synthdb.errors import SynthdbError


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows (dicts with the same keys) inside the caller's transaction, in bulk.

    On PostgreSQL an executemany is one statement per row, pipelined; COPY streams all rows in one
    command, several times faster for the millions of rows an import writes. JSON values are
    serialised as SQLAlchemy does (None is stored as JSON null), and a COPY error is raised as the
    SQLAlchemy exception an executemany would raise (IntegrityError for a duplicate key or a missing
    referenced row), so callers see the same behaviour on both engines.
    """
    if not rows:
        return
    if conn.dialect.driver != "psycopg":  # SQLite, or a PostgreSQL URL naming another driver
        conn.execute(sa.insert(table), list(rows))
        return
    names = list(rows[0])
    encode = [isinstance(table.c[name].type, sa.JSON) for name in names]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(name) for name in names)
    )
    cursor = conn.connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    [
                        json.dumps(row[n]) if is_json else row[n]
                        for n, is_json in zip(names, encode, strict=True)
                    ]
                )
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(
            f"COPY {table.name}", None, exc, psycopg.Error, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()


def allocate_ids(conn: Connection, table: sa.Table, count: int) -> np.ndarray:
    """Reserve ``count`` primary-key values of ``table`` inside the current transaction."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            sa.text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table.name, "n": count},
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=count)
    start = conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one()
    return np.arange(start + 1, start + 1 + count, dtype=np.int64)


def identity_ids(
    conn: Connection,
    dataset_id: int,
    labels: Sequence[str],
    attributes: Sequence[dict[str, Any] | None] | None = None,
) -> np.ndarray:
    """Ids of the identities with these labels in a dataset, creating the missing ones (get-or-create)."""
    table = Identity.__table__
    wanted = list(dict.fromkeys(labels))
    known: dict[str, int] = {}
    for start in range(0, len(wanted), 10_000):  # bounded IN lists
        chunk = wanted[start : start + 10_000]
        rows = conn.execute(
            sa.select(table.c.label, table.c.id).where(
                table.c.dataset_id == dataset_id, table.c.label.in_(chunk)
            )
        )
        known.update({label: ident for label, ident in rows})
    missing = [label for label in wanted if label not in known]
    if missing:
        attrs = dict(zip(labels, attributes, strict=True)) if attributes is not None else {}
        ids = allocate_ids(conn, table, len(missing))
        rows = [
            {"id": int(i), "dataset_id": dataset_id, "label": label, "attributes": attrs.get(label)}
            for i, label in zip(ids, missing, strict=True)
        ]
        if conn.dialect.name == "postgresql":
            known.update(_insert_identities_concurrently(conn, table, dataset_id, rows))
        else:  # SQLite: the caller holds the write lock, nobody else can be adding these labels
            insert_rows(conn, table, rows)
            known.update(zip(missing, (int(i) for i in ids), strict=True))
    return np.fromiter((known[label] for label in labels), dtype=np.int64, count=len(labels))


# Staging table of _insert_identities_concurrently: a per-session TEMP copy of identity's columns.
_INCOMING = sa.Table(
    "synthdb_identity_incoming",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger),
    sa.Column("dataset_id", sa.BigInteger),
    sa.Column("label", sa.String),
    sa.Column("attributes", sa.JSON),
)


def _insert_identities_concurrently(
    conn: Connection, table: sa.Table, dataset_id: int, rows: list[dict[str, Any]]
) -> dict[str, int]:
    """Insert identity rows on PostgreSQL where other writers may be creating the same labels right now
    (processes writing into one dataset); return label -> id as committed, ours or theirs.

    A plain insert fails with a unique violation when another transaction commits a label first, so the
    rows are COPYed into a temporary table and moved with ``ON CONFLICT DO NOTHING``, which waits for
    that transaction and then skips the label (as fast as COPY alone, unlike a row-by-row upsert). Rows
    move in label order, so two writers with overlapping labels lock them in the same order and cannot
    deadlock. The ids are read back afterwards (READ COMMITTED: the query sees what committed meanwhile).
    """
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {_INCOMING.name} (LIKE {table.name}) ON COMMIT DELETE ROWS"
    )
    conn.exec_driver_sql(f"DELETE FROM {_INCOMING.name}")  # an earlier call in this transaction
    insert_rows(conn, _INCOMING, rows)
    columns = ", ".join(c.name for c in _INCOMING.columns)
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {_INCOMING.name} ORDER BY label "
        "ON CONFLICT (dataset_id, label) DO NOTHING"
    )
    found = conn.exec_driver_sql(
        f"SELECT i.label, i.id FROM {table.name} i JOIN {_INCOMING.name} n "
        "ON i.dataset_id = n.dataset_id AND i.label = n.label"
    )
    return dict(found.all())


def insert_samples(
    conn: Connection,
    dataset_id: int,
    ids: np.ndarray,
    keys: Sequence[str],
    identity_ids: np.ndarray | None,
    role: str,
    labels: Sequence[str | None] | None = None,
    paths: Sequence[str | None] | None = None,
    attributes: Sequence[dict[str, Any] | None] | None = None,
    run_id: int | None = None,
) -> None:
    """Insert sample rows with pre-allocated ids in one executemany."""
    if role not in SAMPLE_ROLES:
        raise SynthdbError(f"sample role '{role}' is not one of {', '.join(SAMPLE_ROLES)}")
    count = len(keys)
    for name, column in (
        ("ids", ids),
        ("identity_ids", identity_ids),
        ("labels", labels),
        ("paths", paths),
        ("attributes", attributes),
    ):
        if column is not None and len(column) != count:
            raise SynthdbError(f"{name} has {len(column)} entries for {count} sample keys")
    none = [None] * count
    rows = [
        {
            "id": int(i),
            "dataset_id": dataset_id,
            "identity_id": None if ident is None else int(ident),
            "key": key,
            "path": path,
            "role": role,
            "label": label,
            "attributes": attrs,
            "run_id": run_id,
        }
        for i, ident, key, path, label, attrs in zip(
            ids,
            none if identity_ids is None else identity_ids,
            keys,
            paths or none,
            labels or none,
            attributes or none,
            strict=True,
        )
    ]
    insert_rows(conn, Sample.__table__, rows)
