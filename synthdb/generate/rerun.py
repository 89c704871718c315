"""Running a generation command again after it was interrupted: resume the run it left, or say why not.

A generation run's output dataset exists from its first unit on. Running the same command again used to
record a new run that failed at once ("the dataset exists already"), or, for variations, one that
recomputed every unit and collided with the samples already there. :func:`run_to_continue` looks first:
the run that wrote this dataset (this job-array shard of it) with the same parameters and left it
unfinished is resumed, and says so on stderr; one with other parameters, a live one, or a finished one
is refused before anything is recorded, with the command that helps (``synthdb runs resume N`` or
another ``--name``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from synthdb.catalog import datasets, runs
from synthdb.catalog.runs import RunRow
from synthdb.catalog.schema import RunStatus
from synthdb.context import Context
from synthdb.errors import SynthdbError

SHOWN_DIFFERENCES = 3


def comparable(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as they read back from a run row (JSON), so stored and new parameters compare equal."""
    return json.loads(json.dumps(params))


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    """``num_identities 10 then, 20 now`` for the first few parameters that differ."""
    keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    shown = [f"{k} {stored.get(k)!r} then, {wanted.get(k)!r} now" for k in keys[:SHOWN_DIFFERENCES]]
    return "; ".join(shown) + (" ..." if len(keys) > SHOWN_DIFFERENCES else "")


def run_to_continue(
    ctx: Context,
    kind: str,
    name: str,
    params: dict[str, Any],
    shard: tuple[int, int] = (0, 1),
    shared_attributes: dict[str, Any] | None = None,
) -> int | None:
    """The run to resume instead of starting a new one for output dataset ``name``, or None (start one).

    Refuses (one line, nothing recorded) a run of this command still alive, one left unfinished with other
    parameters, one that finished already, and a dataset of another command: any existing dataset unless
    the output is shared by job-array shards (``shared_attributes``, which the dataset must carry)."""
    row = datasets.find_dataset(ctx.catalog, name)
    if row is None:
        return None
    wanted = comparable(params)
    mine = [
        run
        for run in runs.dataset_writers(ctx.catalog, row.id)
        if run.kind == kind and (run.shard_index or 0, run.shard_count or 1) == shard
    ]
    for run in mine:
        if runs.is_live(run):
            raise SynthdbError(
                f"dataset '{name}' is being written by run {run.id} (pid {run.pid} on {run.host}): wait for "
                f"it, or choose another --name"
            )
    for run in reversed(mine):  # the newest first
        if run.status != RunStatus.SUCCEEDED and run.params == wanted:
            note = f"dataset '{name}': resuming run {run.id} ({_state(run)}), which has the same parameters"
            print(note, file=sys.stderr)
            return run.id
    unfinished = [run for run in mine if run.status != RunStatus.SUCCEEDED]
    if unfinished:
        raise SynthdbError(_other_parameters(name, unfinished[-1], wanted))
    shareable = shared_attributes is not None and (row.attributes or {}) == comparable(shared_attributes)
    if not shareable:
        made = f" (made by run {mine[-1].id})" if mine else ""
        raise SynthdbError(f"a dataset named '{name}' exists already{made}: choose another --name")
    if mine:
        part = f" (shard {shard[0] + 1} of {shard[1]})" if shard[1] > 1 else ""
        raise SynthdbError(
            f"dataset '{name}'{part} was made by run {mine[-1].id} already: choose another --name for another"
        )
    return None


def _other_parameters(name: str, run: RunRow, wanted: dict[str, Any]) -> str:
    return (
        f"dataset '{name}' was left unfinished by run {run.id} ({_state(run)}) with other parameters "
        f"({differences(run.params, wanted)}): continue it with `synthdb runs resume {run.id}`, or choose "
        "another --name"
    )


def _state(run: RunRow) -> str:
    """``interrupted``, ``failed``, or ``killed`` for a run whose row still says running."""
    return "killed" if run.status == RunStatus.RUNNING else run.status
