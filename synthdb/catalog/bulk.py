"""Bulk writes into the catalog: id allocation, identities and samples, many rows per round trip.

Ids are allocated before rows are inserted so that the shard files that reference them can be written
first (see :mod:`synthdb.catalog.commits`). On PostgreSQL the table's sequence hands out the ids; SQLite
has no sequence, so the next free id of each table lives in ``id_reservation``, bumped by every
allocation, and ids handed out and not yet used are never handed out again (an allocation is a short
write transaction of its own, or part of the caller's). Rows go in with one executemany on SQLite and
one COPY on PostgreSQL, where psycopg would otherwise send one statement per row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection

from synthdb.catalog.lookup import mapping_in
from synthdb.catalog.schema import Identity, IdReservation, Sample, SampleRole, member
from synthdb.errors import SynthdbError

_reservation = IdReservation.__table__


_JSON_NULL = json.dumps(None)


@dataclass(frozen=True)
class Rows:
    """Rows of one table encoded for the driver (JSON columns as text, one tuple per row).

    Encoding 200,000 sample rows takes a few hundred milliseconds of Python: a commit builds them while its
    shard files are written, so that the write lock is held only to send them (:func:`insert`).
    """

    table: sa.Table
    names: tuple[str, ...]
    values: list[tuple[Any, ...]]


def encode(table: sa.Table, columns: dict[str, Sequence[Any]]) -> Rows:
    """Rows given column by column (equal lengths); JSON values serialised as SQLAlchemy does (None is
    stored as JSON null)."""
    encoded = [
        [_JSON_NULL if v is None else json.dumps(v) for v in values]
        if isinstance(table.c[name].type, sa.JSON)
        else values
        for name, values in columns.items()
    ]
    return Rows(table, tuple(columns), list(zip(*encoded, strict=True)))


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows (dicts with the same keys) inside the caller's transaction, in bulk (see
    :func:`insert`)."""
    if rows:
        names = list(rows[0])
        insert_columns(conn, table, {name: [row[name] for row in rows] for name in names})


def insert_columns(conn: Connection, table: sa.Table, columns: dict[str, Sequence[Any]]) -> None:
    """Insert rows given column by column (equal lengths) inside the caller's transaction, in bulk."""
    insert(conn, encode(table, columns))


def insert(conn: Connection, rows: Rows) -> None:
    """Insert encoded rows inside the caller's transaction, in bulk.

    SQLite gets one DBAPI executemany of plain tuples, about 1.5x faster than SQLAlchemy's per-row
    parameter processing (the commit protocol inserts while it holds the write lock). On PostgreSQL an
    executemany is one statement per row, pipelined; COPY streams all rows in one command, several times
    faster for the millions of rows an import writes. Errors are raised as the SQLAlchemy exceptions an
    executemany would raise (IntegrityError for a duplicate key or a missing referenced row), so callers
    see the same behaviour on both engines.
    """
    if not rows.values:
        return
    table, names = rows.table, list(rows.names)
    if conn.dialect.name == "sqlite":
        quote = conn.dialect.identifier_preparer.quote
        marks = ", ".join("?" for _ in names)
        statement = f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) VALUES ({marks})"
        conn.exec_driver_sql(statement, rows.values)
    elif conn.dialect.driver == "psycopg":
        _copy(conn, table, names, rows.values)
    else:  # a PostgreSQL URL naming another driver
        conn.execute(sa.insert(table), [dict(zip(names, row, strict=True)) for row in rows.values])


def _copy(conn: Connection, table: sa.Table, names: list[str], values: list[tuple[Any, ...]]) -> None:
    """COPY rows into ``table`` on PostgreSQL (psycopg), errors raised as SQLAlchemy's."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(name) for name in names)
    )
    cursor = conn.connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in values:
                copy.write_row(row)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(
            f"COPY {table.name}", None, exc, psycopg.Error, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()


def allocate_ids(conn: Connection, table: sa.Table, count: int) -> np.ndarray:
    """Reserve ``count`` primary-key values of ``table`` that no other writer will get (see the module
    docstring); on SQLite the caller's transaction must be a write transaction (``Catalog.begin``)."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            sa.text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table.name, "n": count},
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=count)
    used = conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one()
    reserved = conn.execute(
        sa.select(_reservation.c.next_id).where(_reservation.c.table_name == table.name)
    ).scalar_one_or_none()
    start = max(used + 1, reserved or 1)
    if reserved is None:
        conn.execute(sa.insert(_reservation).values(table_name=table.name, next_id=start + count))
    else:
        conn.execute(
            sa.update(_reservation)
            .where(_reservation.c.table_name == table.name)
            .values(next_id=start + count)
        )
    return np.arange(start, start + count, dtype=np.int64)


def existing_identities(conn: Connection, dataset_id: int, labels: Iterable[str]) -> dict[str, int]:
    """label -> id of the identities of a dataset that carry one of ``labels``."""
    table = Identity.__table__
    return mapping_in(conn, table.c.label, table.c.id, labels, table.c.dataset_id == dataset_id)


def identity_ids(
    conn: Connection,
    dataset_id: int,
    labels: Sequence[str],
    attributes: Sequence[dict[str, Any] | None] | None = None,
) -> np.ndarray:
    """Ids of the identities with these labels in a dataset, creating the missing ones (get-or-create)."""
    wanted = list(dict.fromkeys(labels))
    known = existing_identities(conn, dataset_id, wanted)
    missing = [label for label in wanted if label not in known]
    if missing:
        attrs = dict(zip(labels, attributes, strict=True)) if attributes is not None else {}
        ids = allocate_ids(conn, Identity.__table__, len(missing))
        reserved = dict(zip(missing, (int(i) for i in ids), strict=True))
        known.update(insert_identities(conn, dataset_id, reserved, attrs))
    return np.fromiter((known[label] for label in labels), dtype=np.int64, count=len(labels))


def insert_identities(
    conn: Connection,
    dataset_id: int,
    reserved: dict[str, int],
    attributes: dict[str, dict[str, Any] | None] | None = None,
) -> dict[str, int]:
    """Create the identities ``label -> reserved id`` that do not exist yet; return label -> id as
    committed, ours or those another writer created first (then their id differs from the reserved one).
    """
    attributes = attributes or {}
    rows = [
        {"id": ident, "dataset_id": dataset_id, "label": label, "attributes": attributes.get(label)}
        for label, ident in reserved.items()
    ]
    if conn.dialect.name == "postgresql":
        return _insert_identities_concurrently(conn, Identity.__table__, dataset_id, rows)
    # SQLite: the caller holds the write lock, so nobody can add these labels between lookup and insert.
    found = existing_identities(conn, dataset_id, reserved)
    insert_rows(conn, Identity.__table__, [row for row in rows if row["label"] not in found])
    return {**reserved, **found}


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


def sample_rows(
    dataset_id: int,
    ids: np.ndarray,
    keys: Sequence[str],
    identity_ids: np.ndarray | None,
    role: str,
    labels: Sequence[str | None] | None = None,
    paths: Sequence[str | None] | None = None,
    attributes: Sequence[dict[str, Any] | None] | None = None,
    run_id: int | None = None,
) -> Rows:
    """Sample rows with pre-allocated ids, checked and encoded for :func:`insert`."""
    member(SampleRole, role, "sample role")
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
    if identity_ids is None:
        idents = none
    elif isinstance(identity_ids, np.ndarray) and identity_ids.dtype.kind in "iu":
        idents = identity_ids.tolist()
    else:  # a sequence that may hold None (samples without identity)
        idents = [None if i is None else int(i) for i in identity_ids]
    columns = {
        "id": np.asarray(ids, dtype=np.int64).tolist(),
        "dataset_id": [dataset_id] * count,
        "identity_id": idents,
        "key": list(keys),
        "path": list(paths) if paths is not None else none,
        "role": [str(role)] * count,
        "label": list(labels) if labels is not None else none,
        "attributes": list(attributes) if attributes is not None else none,
        "run_id": [run_id] * count,
    }
    return encode(Sample.__table__, columns)


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
    """Insert sample rows with pre-allocated ids in one executemany (one COPY on PostgreSQL)."""
    insert(conn, sample_rows(dataset_id, ids, keys, identity_ids, role, labels, paths, attributes, run_id))
