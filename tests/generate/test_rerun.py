"""Ctrl-C, and running a command again after it: the interrupted run is named with the command that continues
it, and the same command again resumes it (:mod:`synthdb.generate.rerun`, :func:`synthdb.catalog.runs.
recorded_run`, the CLI's one-line handler) instead of failing on its own dataset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from synthdb.admin import init_workspace
from synthdb.catalog import runs
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.runs import RunInterrupted, get_run, list_runs, recorded_run
from synthdb.catalog.schema import DatasetKind, RunKind, RunStatus, Sample, Shard
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate.references import LangevinParams, ReferenceParams, generate_references
from synthdb.generate.variations import VariationParams, generate_variations
from tests.conftest import CliRun

TINY = "stylegan2-tiny"
REFS = ReferenceParams(name="refs", num_identities=3, algorithm="random", generator=TINY, batch_size=1)


def _count(ctx: Context, table: type) -> int:
    with ctx.catalog.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def _interrupt(ctx: Context, run_id: int) -> None:
    """Close a run as Ctrl-C does (:func:`recorded_run`)."""
    runs.finish_run(ctx.catalog, run_id, RunStatus.INTERRUPTED, "interrupted by the user")


CTRL_C_COMMAND = [
    "generate", "references", "--name", "refs", "--num-identities", "4", "--generator", TINY,
    "--batch-size", "4", "--langevin-iterations", "60", "--langevin-repulsion-radius", "0.5",
]  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_names_the_run_and_the_same_command_resumes_it(tmp_path: Path) -> None:
    """Regression: Ctrl-C printed only "Aborted!", and running the command again said the dataset existed
    and recorded a failed run. Now one line names the run and ``synthdb runs resume ID`` (exit 130), and
    the same command again resumes that run, says so, and records no other."""
    with init_workspace(tmp_path / "ws", models_dir=str(tmp_path / "models")) as ctx:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHDB_")}
        command = [sys.executable, "-m", "synthdb.cli.main", "-w", str(ctx.ws.root), *CTRL_C_COMMAND]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 240
        while _count(ctx, Shard) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the first iteration is committed: the run is under way
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == (
            "Ctrl-C: run 1 (references) stopped and is recorded as interrupted; continue it with "
            "`synthdb runs resume 1`"
        )
        assert "Aborted" not in err + out and "Traceback" not in err
        assert get_run(ctx.catalog, 1).status == RunStatus.INTERRUPTED
        again = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
        assert again.returncode == 0, again.stderr
        assert "dataset 'refs': resuming run 1 (interrupted), which has the same parameters" in again.stderr
        assert again.stdout.startswith("run 1: 4 langevin references")
        assert [run.status for run in list_runs(ctx.catalog)] == [RunStatus.SUCCEEDED]
        assert _count(ctx, Sample) == 4


def test_recorded_run_turns_ctrl_c_into_the_command_that_continues(sqlite_ctx: Context) -> None:
    """Every kind of run gets its own way to continue: ``runs resume`` for generation, the command itself
    for imports, embeds and renders (they continue where they stopped), its parameters otherwise."""
    cases = [
        (RunKind.VARIATIONS, "dispersion", {}, "continue it with `synthdb runs resume {id}`"),
        (RunKind.EMBED, "dlib-resnet/mtcnn",
         {"dataset": "my faces", "model": "dlib-resnet", "detector": "mtcnn"},
         "continue it with `synthdb embed 'my faces' --model dlib-resnet --detector mtcnn`"),
        (RunKind.IMPORT, "imagefolder", {"root": "/data/casia", "name": "casia", "update": True},
         "continue it with `synthdb import imagefolder /data/casia --name casia --update`"),
        (RunKind.IMAGES, "render", {"dataset": "refs"}, "continue it with `synthdb generate images refs`"),
        (RunKind.INDEX, "Flat", {}, "run its command again (`synthdb runs show {id}` shows its parameters)"),
    ]  # fmt: skip
    for kind, algorithm, params, hint in cases:
        run = recorded_run(sqlite_ctx.catalog, kind, algorithm, params)
        with pytest.raises(RunInterrupted) as stopped, run:
            raise KeyboardInterrupt
        run_id = stopped.value.run_id
        assert stopped.value.hint.startswith(hint.format(id=run_id))
        assert str(stopped.value).startswith(f"run {run_id} ({kind}) stopped and is recorded as interrupted")
        assert get_run(sqlite_ctx.catalog, run_id).status == RunStatus.INTERRUPTED


def test_runs_resume_on_an_embed_or_import_run_points_at_its_command(
    sqlite_ctx: Context, synthdb_cli: CliRun
) -> None:
    embed = runs.start_run(
        sqlite_ctx.catalog, RunKind.EMBED, "dlib-resnet/dlib", {"dataset": "faces", "model": "dlib-resnet",
                                                               "detector": "dlib"}
    )  # fmt: skip
    imported = runs.start_run(sqlite_ctx.catalog, RunKind.IMPORT, "csv", {"root": "/photos", "name": "list"})
    for run_id in (embed, imported):
        runs.finish_run(sqlite_ctx.catalog, run_id, RunStatus.INTERRUPTED)
    output = synthdb_cli("runs", "resume", str(embed), ws=sqlite_ctx, code=1).output
    assert output.count("\n") == 1
    assert f"run {embed} is an embed run: continue it with " in output
    assert "`synthdb embed faces --model dlib-resnet --detector dlib`" in output
    output = synthdb_cli("runs", "resume", str(imported), ws=sqlite_ctx, code=1).output
    assert "`synthdb import csv /photos/MANIFEST.csv --name list`" in output


def test_the_same_references_again_resumes_other_parameters_are_refused(sqlite_ctx: Context, capsys) -> None:  # noqa: ANN001
    """The decisions, none of which records a run it does not need: the same parameters resume the run
    left unfinished (also one killed without closing its row), other parameters are refused with the
    command that continues it, a finished dataset is refused, a live run is waited for."""
    ctx = sqlite_ctx
    first = generate_references(ctx, REFS)
    _interrupt(ctx, first)
    assert generate_references(ctx, REFS) == first
    assert "resuming run 1 (interrupted)" in capsys.readouterr().err
    assert [run.status for run in list_runs(ctx.catalog)] == [RunStatus.SUCCEEDED]
    _interrupt(ctx, first)
    with pytest.raises(SynthdbError, match="num_identities 3 then, 4 now") as refused:
        generate_references(ctx, replace(REFS, num_identities=4))
    assert "\n" not in str(refused.value)
    assert f"`synthdb runs resume {first}`, or choose another" in str(refused.value)
    assert len(list_runs(ctx.catalog)) == 1
    generate_references(ctx, REFS)
    with pytest.raises(SynthdbError, match=f"exists already \\(made by run {first}\\): choose another"):
        generate_references(ctx, REFS)
    create_dataset(ctx.catalog, "photos", DatasetKind.GENUINE, "imagefolder")
    with pytest.raises(SynthdbError, match="a dataset named 'photos' exists already: choose another --name"):
        generate_references(ctx, replace(REFS, name="photos", langevin=LangevinParams(1)))
    assert len(list_runs(ctx.catalog)) == 1  # no failed run recorded by any refusal
    with ctx.catalog.begin() as conn:  # alive: this process holds it
        conn.exec_driver_sql(f"UPDATE run SET status = 'running', pid = {os.getpid()} WHERE id = {first}")
    with pytest.raises(SynthdbError, match=f"is being written by run {first} .*wait for it"):
        generate_references(ctx, REFS)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    with ctx.catalog.begin() as conn:  # killed (SIGKILL): its row still says running, its process is gone
        conn.exec_driver_sql(f"UPDATE run SET pid = {int(gone.stdout)} WHERE id = {first}")
    assert generate_references(ctx, REFS) == first
    assert "resuming run 1 (killed)" in capsys.readouterr().err


@pytest.mark.slow
def test_the_same_variations_shard_again_resumes_instead_of_colliding(sqlite_ctx: Context) -> None:
    """Regression for variations: the same command again recomputed every unit in a new run and failed on
    the samples already there. Now it resumes; another shard of the job array still starts its own run; a
    finished shard and other parameters are refused, in one line, recording nothing."""
    ctx = sqlite_ctx
    generate_references(ctx, replace(REFS, num_identities=4))
    params = VariationParams(name="vars", references="refs", num_variations=2, iterations=1, generator=TINY,
                             identities_per_unit=1, global_coefficient=0.1)  # fmt: skip
    first = generate_variations(ctx, params, shard=(0, 2))
    samples = _count(ctx, Sample)
    _interrupt(ctx, first)
    assert generate_variations(ctx, params, shard=(0, 2)) == first and _count(ctx, Sample) == samples
    second = generate_variations(ctx, params, shard=(1, 2))
    assert second != first and _count(ctx, Sample) == samples + 2 * 2
    with pytest.raises(SynthdbError, match=r"dataset 'vars' \(shard 1 of 2\) was made by run \d+ already"):
        generate_variations(ctx, params, shard=(0, 2))
    with pytest.raises(SynthdbError, match=r"a dataset named 'vars' exists already \(made by run \d+\)"):
        generate_variations(ctx, replace(params, num_variations=3), shard=(0, 2))
    assert len(list_runs(ctx.catalog, None)) == 3  # references, two shards
