"""The one chunked ``IN`` lookup every catalog module uses to fetch rows by a list of ids, labels or keys.

SQLite caps the parameters of one statement (32,766) and PostgreSQL sends them all in one message, so a
list of a million ids is looked up ``CHUNK`` at a time, never in one statement and never one by one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

CHUNK = 10_000


def rows_in(
    conn: Connection,
    columns: Iterable[sa.ColumnElement[Any]],
    key: sa.ColumnElement[Any],
    values: Iterable[Any],
    *where: sa.ColumnElement[bool],
) -> list[tuple[Any, ...]]:
    """``columns`` of the rows whose ``key`` is one of ``values`` (and that match ``where``), any order."""
    wanted = sorted(set(values))
    found: list[tuple[Any, ...]] = []
    statement = sa.select(*columns).where(*where)
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        found.extend(tuple(row) for row in conn.execute(statement.where(key.in_(chunk))))
    return found


def mapping_in(
    conn: Connection,
    key: sa.ColumnElement[Any],
    value: sa.ColumnElement[Any],
    values: Iterable[Any],
    *where: sa.ColumnElement[bool],
) -> dict[Any, Any]:
    """``{key: value}`` of the rows whose ``key`` is one of ``values`` (see :func:`rows_in`)."""
    return dict(rows_in(conn, (key, value), key, values, *where))
