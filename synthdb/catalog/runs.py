"""Run rows: every command that writes records its parameters, seed, progress and outcome."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from synthdb import __version__
from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import Run
from synthdb.errors import SynthdbError

_run = Run.__table__


def start_run(
    catalog: Catalog,
    kind: str,
    algorithm: str | None = None,
    params: dict[str, Any] | None = None,
    seed: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> int:
    """Insert a ``running`` run row and return its id."""
    with catalog.begin() as conn:
        return conn.execute(
            sa.insert(_run)
            .values(
                heartbeat_at=sa.func.current_timestamp(),
                kind=kind,
                algorithm=algorithm,
                params=params or {},
                seed=seed,
                status="running",
                progress=0.0,
                shard_index=shard_index,
                shard_count=shard_count,
                host=socket.gethostname(),
                pid=os.getpid(),
                synthdb_version=__version__,
            )
            .returning(_run.c.id)
        ).scalar_one()


def process_alive(host: str | None, pid: int | None) -> bool:
    """Whether the process that recorded a ``running`` run may still be working on it: certainly not
    when it ran on this host and its pid is gone; assumed so when it ran elsewhere (no way to tell)."""
    if host != socket.gethostname() or pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def set_progress(catalog: Catalog, run_id: int, progress: float) -> None:
    """Record progress in [0, 1] and a heartbeat (a stale heartbeat marks a dead worker)."""
    with catalog.begin() as conn:
        conn.execute(
            sa.update(_run)
            .where(_run.c.id == run_id)
            .values(progress=progress, heartbeat_at=sa.func.current_timestamp())
        )


def finish_run(catalog: Catalog, run_id: int, status: str, error: str | None = None) -> None:
    with catalog.begin() as conn:
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "finished_at": sa.func.current_timestamp(),
        }
        if status == "succeeded":
            values["progress"] = 1.0
        conn.execute(sa.update(_run).where(_run.c.id == run_id).values(**values))


@contextmanager
def closing_run(catalog: Catalog, run_id: int) -> Iterator[int]:
    """Close an open run as succeeded, failed (with the error) or interrupted (Ctrl-C) when the block ends."""
    try:
        yield run_id
    except KeyboardInterrupt:
        finish_run(catalog, run_id, "interrupted", "interrupted by the user")
        raise
    except BaseException as exc:
        finish_run(catalog, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finish_run(catalog, run_id, "succeeded")


@contextmanager
def recorded_run(catalog: Catalog, kind: str, **fields: Any) -> Iterator[int]:
    """Start a run and close it as succeeded, failed or interrupted (see ``closing_run``)."""
    with closing_run(catalog, start_run(catalog, kind, **fields)) as run_id:
        yield run_id


def set_summary(catalog: Catalog, run_id: int, summary: dict[str, Any]) -> None:
    """Store what a run did (counts, named problems) for ``synthdb runs show`` and queries."""
    with catalog.begin() as conn:
        conn.execute(sa.update(_run).where(_run.c.id == run_id).values(summary=summary))


def list_runs(catalog: Catalog, limit: int = 50, kind: str | None = None) -> list[Run]:
    """The newest runs first (optionally of one kind)."""
    with Session(catalog.engine) as session:
        statement = sa.select(Run).order_by(Run.id.desc()).limit(limit)
        if kind:
            statement = statement.where(Run.kind == kind)
        return list(session.scalars(statement))


def get_run(catalog: Catalog, run_id: int) -> Run:
    with Session(catalog.engine) as session:
        run = session.get(Run, run_id)
    if run is None:
        raise SynthdbError(f"no run {run_id} in the catalog: `synthdb runs list` shows the runs")
    return run
