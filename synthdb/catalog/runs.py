"""Run rows: every command that writes records its parameters, seed, progress and outcome.

One lifecycle for every run, :func:`recorded_run`: it opens a run row (or reopens the one a resumed run
continues), yields its id, and closes it as succeeded, failed (with the error) or interrupted (Ctrl-C)
however the block ends. An interrupted run raises :class:`RunInterrupted`, which names the run and the
command that continues it (:func:`continue_hint`), so Ctrl-C never ends in a bare "Aborted!".
Rows come back as :class:`RunRow` values.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from synthdb import __version__
from synthdb.catalog.engine import Catalog
from synthdb.catalog.lookup import rows_in
from synthdb.catalog.schema import (
    Dataset,
    Run,
    RunKind,
    RunStatus,
    Sample,
    SampleIssue,
    Shard,
    ShardState,
)
from synthdb.errors import SynthdbError

_run, _shard, _issue, _sample = Run.__table__, Shard.__table__, SampleIssue.__table__, Sample.__table__
_dataset = Dataset.__table__
RESUMABLE = (RunKind.REFERENCES, RunKind.VARIATIONS, RunKind.PROJECT)
"""Kinds that ``synthdb runs resume ID`` continues; the others continue by running their command again."""


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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C inside :func:`recorded_run`: the run is closed as interrupted; ``hint`` says how to continue."""

    def __init__(self, run_id: int, kind: str, hint: str) -> None:
        super().__init__(f"run {run_id} ({kind}) stopped and is recorded as interrupted; {hint}")
        self.run_id, self.kind, self.hint = run_id, kind, hint


def continue_hint(run: RunRow) -> str:
    """How to continue an unfinished run: ``synthdb runs resume ID`` for generation and projection runs,
    the run's own command for imports, embeds and image rendering (each continues where the last stopped),
    else its command again."""
    if run.kind in RESUMABLE:
        return f"continue it with `synthdb runs resume {run.id}`"
    p = run.params
    if run.kind == RunKind.EMBED:
        dataset, model, detector = (shlex.quote(str(p.get(k))) for k in ("dataset", "model", "detector"))
        command = f"synthdb embed {dataset} --model {model} --detector {detector}"
    elif run.kind == RunKind.IMPORT:
        where = shlex.quote(str(p.get("file") or p.get("root")))
        if run.algorithm == "csv":  # the manifest's name is not recorded, its folder is
            where = f"{where}/MANIFEST.csv"
        update = " --update" if p.get("update") else ""
        command = f"synthdb import {run.algorithm} {where} --name {shlex.quote(str(p.get('name')))}{update}"
    elif run.kind == RunKind.IMAGES:
        command = f"synthdb generate images {shlex.quote(str(p.get('dataset')))}"
    else:
        return f"run its command again (`synthdb runs show {run.id}` shows its parameters)"
    return f"continue it with `{command}` (it does what run {run.id} left undone)"


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
        run = get_run(catalog, run_id)
        raise RunInterrupted(run_id, run.kind, continue_hint(run)) from None
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


def space_writers(catalog: Catalog, dataset_id: int, content: str, space: str) -> list[RunRow]:
    """The runs whose committed ``content`` shards in ``space``, or sample issues in ``space``, a dataset
    holds, oldest first (which detector made a dataset's embeddings, say)."""
    by_shard = sa.select(_shard.c.run_id).where(
        _shard.c.dataset_id == dataset_id,
        _shard.c.content == content,
        _shard.c.space == space,
        _shard.c.state == ShardState.COMMITTED,
    )
    by_issue = (
        sa.select(_issue.c.run_id)
        .join(_sample, _sample.c.id == _issue.c.sample_id)
        .where(_sample.c.dataset_id == dataset_id, _issue.c.space == space)
    )
    statement = (
        sa.select(*_COLUMNS).where(_run.c.id.in_(sa.union(by_shard, by_issue))).order_by(_run.c.id)
    )
    with catalog.engine.connect() as conn:
        return [_row(found) for found in conn.execute(statement)]


def dataset_writers(catalog: Catalog, dataset_id: int) -> list[RunRow]:
    """The runs that wrote into a dataset, oldest first: the one that created it and those with samples or
    shards in it (what a rename or delete must not pull out from under, what a re-run may resume)."""
    created = sa.select(_dataset.c.created_by_run_id).where(_dataset.c.id == dataset_id)
    by_shard = sa.select(_shard.c.run_id).where(_shard.c.dataset_id == dataset_id)
    by_sample = sa.select(_sample.c.run_id).where(_sample.c.dataset_id == dataset_id).distinct()
    statement = (
        sa.select(*_COLUMNS)
        .where(_run.c.id.in_(sa.union(created, by_shard, by_sample)))
        .order_by(_run.c.id)
    )
    with catalog.engine.connect() as conn:
        return [_row(found) for found in conn.execute(statement)]


def running(catalog: Catalog) -> list[RunRow]:
    """Runs whose row says ``running`` (alive, or killed before they could close it), oldest first."""
    statement = sa.select(*_COLUMNS).where(_run.c.status == RunStatus.RUNNING).order_by(_run.c.id)
    with catalog.engine.connect() as conn:
        return [_row(found) for found in conn.execute(statement)]


def unfinished(catalog: Catalog, kinds: Sequence[str]) -> list[RunRow]:
    """Runs of ``kinds`` that did not succeed (running, interrupted or failed), oldest first: those
    ``synthdb runs resume`` may still continue."""
    statement = (
        sa.select(*_COLUMNS)
        .where(_run.c.status != RunStatus.SUCCEEDED, _run.c.kind.in_(list(kinds)))
        .order_by(_run.c.id)
    )
    with catalog.engine.connect() as conn:
        return [_row(found) for found in conn.execute(statement)]


def is_live(run: RunRow) -> bool:
    """Whether a run may still be writing: ``running`` and its process not known to be gone."""
    return run.status == RunStatus.RUNNING and process_alive(run.host, run.pid)
