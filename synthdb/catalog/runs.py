"""Run rows: every command that writes records its parameters, seed, progress and outcome.

One lifecycle for every run, :func:`recorded_run`: it opens a run row (or reopens the one a resumed run
continues), yields its id, and closes it as succeeded, failed (with the error) or interrupted (Ctrl-C)
however the block ends. Rows come back as :class:`RunRow` values.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from synthdb import __version__
from synthdb.catalog.engine import Catalog
from synthdb.catalog.lookup import rows_in
from synthdb.catalog.schema import Run, RunStatus
from synthdb.errors import SynthdbError

_run = Run.__table__


@dataclass(frozen=True)
class RunRow:
    """Everything recorded about one run (``synthdb runs show``)."""

    id: int
    kind: str
    algorithm: str | None
    params: dict[str, Any]
    seed: int | None
    status: str
    progress: float
    shard_index: int | None
    shard_count: int | None
    host: str | None
    pid: int | None
    synthdb_version: str
    started_at: datetime
    heartbeat_at: datetime | None
    finished_at: datetime | None
    error: str | None
    summary: dict[str, Any] | None


_COLUMNS = [_run.c[f.name] for f in fields(RunRow)]


def _row(found: sa.Row) -> RunRow:
    return RunRow(**found._asdict())


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
                status=RunStatus.RUNNING,
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


def reopen_run(catalog: Catalog, run_id: int) -> None:
    """Mark a run ``running`` again, in this process, for a resume that continues it."""
    with catalog.begin() as conn:
        conn.execute(
            sa.update(_run)
            .where(_run.c.id == run_id)
            .values(status=RunStatus.RUNNING, error=None, finished_at=None, pid=os.getpid())
        )


def finish_run(catalog: Catalog, run_id: int, status: RunStatus, error: str | None = None) -> None:
    """Close a run with ``status`` (and the error that ended it)."""
    with catalog.begin() as conn:
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "finished_at": sa.func.current_timestamp(),
        }
        if status == RunStatus.SUCCEEDED:
            values["progress"] = 1.0
        conn.execute(sa.update(_run).where(_run.c.id == run_id).values(**values))


@contextmanager
def recorded_run(
    catalog: Catalog,
    kind: str,
    algorithm: str | None = None,
    params: dict[str, Any] | None = None,
    seed: int | None = None,
    shard: tuple[int, int] | None = None,
    resume: int | None = None,
) -> Iterator[int]:
    """A new run row, or run ``resume`` reopened, closed as succeeded, failed (with the error) or
    interrupted (Ctrl-C) when the block ends. ``shard`` is (index, count) of a job-array task."""
    if resume is None:
        run_id = start_run(
            catalog,
            kind,
            algorithm,
            params,
            seed,
            shard_index=shard[0] if shard else None,
            shard_count=shard[1] if shard else None,
        )
    else:
        reopen_run(catalog, resume)
        run_id = resume
    try:
        yield run_id
    except KeyboardInterrupt:
        finish_run(catalog, run_id, RunStatus.INTERRUPTED, "interrupted by the user")
        raise
    except BaseException as exc:
        finish_run(catalog, run_id, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finish_run(catalog, run_id, RunStatus.SUCCEEDED)


def set_summary(catalog: Catalog, run_id: int, summary: dict[str, Any]) -> None:
    """Store what a run did (counts, named problems) for ``synthdb runs show`` and queries."""
    with catalog.begin() as conn:
        conn.execute(sa.update(_run).where(_run.c.id == run_id).values(summary=summary))


def list_runs(catalog: Catalog, limit: int | None = 50, kind: str | None = None) -> list[RunRow]:
    """The newest runs first (optionally of one kind; ``limit`` None: all of them)."""
    statement = sa.select(*_COLUMNS).order_by(_run.c.id.desc()).limit(limit)
    if kind:
        statement = statement.where(_run.c.kind == kind)
    with catalog.engine.connect() as conn:
        return [_row(found) for found in conn.execute(statement)]


def get_run(catalog: Catalog, run_id: int) -> RunRow:
    """Run ``run_id``, or an error that says how to find the runs there are."""
    with catalog.engine.connect() as conn:
        found = conn.execute(sa.select(*_COLUMNS).where(_run.c.id == run_id)).first()
    if found is None:
        raise SynthdbError(f"no run {run_id} in the catalog: `synthdb runs list` shows the runs")
    return _row(found)


def still_running(catalog: Catalog, run_ids: list[int]) -> list[int]:
    """Those of ``run_ids`` whose row still says ``running`` (a process killed before closing it)."""
    with catalog.engine.connect() as conn:
        found = rows_in(conn, [_run.c.id], _run.c.id, run_ids, _run.c.status == RunStatus.RUNNING)
    return sorted(run_id for (run_id,) in found)
