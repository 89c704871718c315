"""One run lifecycle (recorded_run) for every command: success, failure, Ctrl-C, resume."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from synthdb.catalog.runs import finish_run, get_run, list_runs, recorded_run, still_running
from synthdb.catalog.schema import Run, RunKind, RunStatus
from synthdb.context import Context
from synthdb.errors import SynthdbError


def test_a_run_that_succeeds(ctx: Context) -> None:
    with recorded_run(ctx.catalog, RunKind.INDEX, "Flat", {"k": 1}, seed=7, shard=(1, 3)) as run_id:
        assert get_run(ctx.catalog, run_id).status == RunStatus.RUNNING
    run = get_run(ctx.catalog, run_id)
    assert (run.kind, run.algorithm, run.params, run.seed) == ("index", "Flat", {"k": 1}, 7)
    assert (run.status, run.progress, run.error) == ("succeeded", 1.0, None)
    assert (run.shard_index, run.shard_count, run.pid) == (1, 3, os.getpid())
    assert run.finished_at is not None
    with ctx.catalog.engine.connect() as conn:  # stored as the plain string, not an enum's repr
        assert conn.execute(sa.select(Run.status, Run.kind)).one() == ("succeeded", "index")


def test_a_run_that_fails_or_is_interrupted(ctx: Context) -> None:
    with pytest.raises(ValueError), recorded_run(ctx.catalog, RunKind.EXPORT) as failed:
        raise ValueError("disk on fire")
    with pytest.raises(KeyboardInterrupt), recorded_run(ctx.catalog, RunKind.EMBED) as stopped:
        raise KeyboardInterrupt
    assert (get_run(ctx.catalog, failed).status, get_run(ctx.catalog, failed).error) == (
        "failed",
        "ValueError: disk on fire",
    )
    assert get_run(ctx.catalog, stopped).status == RunStatus.INTERRUPTED
    assert [r.id for r in list_runs(ctx.catalog)] == [stopped, failed]
    assert [r.id for r in list_runs(ctx.catalog, kind="export")] == [failed]


def test_a_resumed_run_is_reopened_not_duplicated(ctx: Context) -> None:
    with pytest.raises(RuntimeError), recorded_run(ctx.catalog, RunKind.REFERENCES, "random") as run_id:
        raise RuntimeError("killed")
    with recorded_run(ctx.catalog, RunKind.REFERENCES, "random", resume=run_id) as again:
        run = get_run(ctx.catalog, again)
        assert (again, run.status, run.error, run.finished_at) == (run_id, "running", None, None)
    assert get_run(ctx.catalog, run_id).status == RunStatus.SUCCEEDED
    assert len(list_runs(ctx.catalog)) == 1


def test_runs_still_marked_running(ctx: Context) -> None:
    """What an export asks of the runs that used its folder before: which never closed their row."""
    with recorded_run(ctx.catalog, RunKind.EXPORT) as done:
        pass
    with recorded_run(ctx.catalog, RunKind.EXPORT) as live:
        assert still_running(ctx.catalog, [done, live, 999]) == [live]
        finish_run(ctx.catalog, live, RunStatus.INTERRUPTED, "stopped")
        assert still_running(ctx.catalog, [done, live]) == []
    assert get_run(ctx.catalog, live).status == RunStatus.SUCCEEDED  # the block's end closes it last


def test_an_unknown_run_is_a_one_line_error(ctx: Context) -> None:
    with pytest.raises(SynthdbError, match=r"^no run 42 in the catalog: `synthdb runs list` shows the runs$"):
        get_run(ctx.catalog, 42)
