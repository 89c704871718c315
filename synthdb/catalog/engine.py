"""Engine setup for SQLite and PostgreSQL catalogs, and the ``Catalog`` handle.

SQLite is tuned for many processes sharing one file: WAL (readers never block the writer),
foreign keys on, a long busy timeout, and ``BEGIN IMMEDIATE`` for every transaction so that two
writers queue on the lock instead of deadlocking when both try to upgrade a read lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from synthdb.errors import SynthdbError

BUSY_TIMEOUT_MS = 120_000


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI types are untyped
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """Create an engine for a catalog URL, with the settings synthdb relies on."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise SynthdbError(
            f"catalog URL {url!r} is not a valid SQLAlchemy URL ({exc}): fix catalog_url"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed)
        _tune_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise SynthdbError(
        f"catalog URL {parsed.render_as_string(hide_password=True)} uses '{parsed.get_backend_name()}': "
        "synthdb supports sqlite:/// and postgresql:// catalogs"
    )


class Catalog:
    """A connection to one catalog database: engine, sessions and transactions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for messages and ``synthdb info``."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session in one transaction, committed on success and rolled back on error."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A Core connection in one transaction (for bulk inserts and the shard commit)."""
        with self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
