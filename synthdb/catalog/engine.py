"""Engine setup for SQLite and PostgreSQL catalogs, and the ``Catalog`` handle.

SQLite is tuned for many processes sharing one file: WAL (readers never block the writer), foreign
keys on, a busy timeout, and ``BEGIN IMMEDIATE`` for every write transaction (``Catalog.begin``) so
that two writers queue on the lock instead of deadlocking when both try to upgrade a read lock; reads
(``engine.connect()``) use a plain ``BEGIN`` and never wait for writers. SQLite's own busy handler
polls on a fixed schedule, so many writers that time out together would retry together; when a write
transaction cannot open within the busy timeout, ``Catalog.begin`` backs off exponentially with random
jitter and tries again, up to ``LOCK_WAIT_S`` in all, and only then tells the user (in one line) which
catalog stayed locked. The lock is taken when the transaction opens, so a retry never repeats work
that was done under it.

Opening errors are one line (:func:`_word_errors`): a SQLite "catalog" that is not a database
(``sqlite:////etc/passwd``), a damaged one (truncated, overwritten), one that cannot be opened (a folder,
a missing parent), and a PostgreSQL server that refuses the connection or does not answer within
``CONNECT_TIMEOUT_S`` become a :class:`SynthdbError` naming the catalog and the fix, wherever in a
command the catalog is first touched.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, RootTransaction
from sqlalchemy.orm import Session

from synthdb.errors import SynthdbError

BUSY_TIMEOUT_MS = 5_000  # one wait inside SQLite's busy handler, before we back off and retry
LOCK_WAIT_S = 600.0  # all waits for one transaction's write lock together
_FIRST_BACKOFF_S, _MAX_BACKOFF_S = 0.02, 2.0
_WRITER = "synthdb_writer"  # set on a connection's info while Catalog.begin holds it
CONNECT_TIMEOUT_S = 10  # a PostgreSQL server that does not answer (a firewall drops packets)
_DAMAGED = ("file is not a database", "database disk image is malformed", "malformed database schema")


def _tune_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI types are untyped
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front; readers take none (WAL gives them a snapshot), so a
        # long commit never makes a read wait or fail.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(_WRITER) else "BEGIN")


def _word_errors(engine: Engine) -> None:
    """Turn errors that say the catalog cannot be used into one-line SynthdbErrors, so that callers (the
    CLI among them) only ever see SynthdbError.

    SQLite lock waits are left alone (``Catalog.begin`` retries them), and so are failed pre-pings (the pool
    reconnects) and IntegrityErrors (a race between writers, which the caller handles).
    """
    url = engine.url.render_as_string(hide_password=True)

    @event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        reason = (
            " ".join(str(context.original_exception).split()) or type(context.original_exception).__name__
        )
        if engine.dialect.name == "sqlite" and any(text in reason for text in _DAMAGED):
            raise SynthdbError(
                f"the catalog {url} is damaged or not a database ({reason}): restore it from a backup, "
                "or fix catalog_url in synthdb.toml"
            )
        if engine.dialect.name == "sqlite" and "unable to open database file" in reason:
            raise SynthdbError(
                f"cannot open the catalog {url} ({reason}): check that it is a file whose folder exists "
                "and is writable, or fix catalog_url in synthdb.toml"
            )
        if engine.dialect.name == "postgresql" and context.connection is None and not context.is_pre_ping:
            raise SynthdbError(
                f"cannot connect to the catalog {url} ({reason}): check that it is running and reachable, "
                "or fix catalog_url in synthdb.toml"
            )
        error = context.sqlalchemy_exception
        if not isinstance(error, sa.exc.DBAPIError) or isinstance(error, sa.exc.IntegrityError):
            return
        if context.is_pre_ping or (engine.dialect.name == "sqlite" and _is_locked(error)):
            return
        raise SynthdbError(
            f"the catalog {url} refused the operation ({reason}): check that it is running and "
            "reachable and that its role may do this (`synthdb info` shows the catalog)"
        )


def make_engine(url: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    """Create an engine for a catalog URL, with the settings synthdb relies on."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise SynthdbError(
            f"catalog URL {url!r} is not a valid SQLAlchemy URL ({exc}): fix catalog_url"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed)
        _tune_sqlite(engine, busy_timeout_ms)
        _word_errors(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        timeout = {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT_S}
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=timeout)
        _word_errors(engine)
        return engine
    raise SynthdbError(
        f"catalog URL {parsed.render_as_string(hide_password=True)} uses '{parsed.get_backend_name()}': "
        "synthdb supports sqlite:/// and postgresql:// catalogs"
    )


def _is_locked(exc: sa.exc.OperationalError) -> bool:
    """SQLite's SQLITE_BUSY / SQLITE_LOCKED, as the sqlite3 module words them."""
    text = str(exc.orig)
    return "database is locked" in text or "database table is locked" in text


class Catalog:
    """A connection to one catalog database: engine, sessions and transactions.

    ``busy_timeout_ms`` and ``lock_wait_s`` (SQLite only) bound one wait in SQLite and all retries.
    """

    def __init__(
        self, url: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS, lock_wait_s: float = LOCK_WAIT_S
    ) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout_ms)
        self.lock_wait_s = lock_wait_s

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
        with self.begin() as conn, Session(bind=conn, expire_on_commit=False) as session:
            yield session
            session.flush()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A Core connection in one transaction (for bulk inserts and the shard commit).

        On SQLite the write lock is taken here (``BEGIN IMMEDIATE``), retried with backoff and jitter
        while another writer holds it (see the module docstring).
        """
        conn, transaction = self._open_transaction()
        with conn:
            try:
                with transaction:
                    yield conn
            finally:
                conn.info.pop(_WRITER, None)  # the DBAPI connection goes back to the pool as a reader

    def _open_transaction(self) -> tuple[Connection, RootTransaction]:
        """A connection whose transaction is open (and, on SQLite, holds the write lock)."""
        deadline = time.monotonic() + self.lock_wait_s
        backoff = _FIRST_BACKOFF_S
        while True:
            conn = None
            try:
                conn = self.engine.connect()
                conn.info[_WRITER] = True
                return conn, conn.begin()
            except sa.exc.OperationalError as exc:
                if conn is not None:
                    conn.info.pop(_WRITER, None)
                    conn.close()
                left = deadline - time.monotonic()
                if self.dialect != "sqlite" or not _is_locked(exc):
                    raise
                if left <= 0:
                    raise SynthdbError(
                        f"the catalog {self.display_url} stayed locked by another writer for "
                        f"{self.lock_wait_s:.0f} s: check `synthdb runs list` for a stuck process, "
                        "or retry when it is done"
                    ) from None
                time.sleep(min(left, backoff * random.uniform(0.5, 1.5)))
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def dispose(self) -> None:
        self.engine.dispose()
