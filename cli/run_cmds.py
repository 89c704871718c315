"""``synthdb runs``: what ran, with which parameters, and how it ended."""

from __future__ import annotations

import json

import click

from synthdb.catalog.runs import get_run, list_runs
from synthdb.catalog.schema import RunKind
from synthdb.cli.app import Options, cli, echo_rows, pass_options
from synthdb.cli.params import count_option


@cli.group()
def runs() -> None:
    """Runs recorded in the catalog (every command that writes is one)."""


@runs.command(name="list")
@count_option("--limit", 30, "Newest runs to list.")
@click.option("--kind", type=click.Choice([k.value for k in RunKind]), help="Only runs of this kind.")
@pass_options
def runs_list(opts: Options, limit: int, kind: str | None) -> None:
    """The newest runs first."""
    with opts.open() as ctx:
        rows = list_runs(ctx.catalog, limit, kind)
    click.echo(f"{'ID':>6}  {'KIND':<10} {'ALGORITHM':<24} {'STATUS':<12} {'DONE':>5}  STARTED")
    for run in rows:
        click.echo(
            f"{run.id:>6}  {run.kind:<10} {run.algorithm or '':<24} {run.status:<12} "
            f"{run.progress:>5.0%}  {run.started_at:%Y-%m-%d %H:%M}"
        )


@runs.command(name="show")
@click.argument("run_id", type=int)
@pass_options
def runs_show(opts: Options, run_id: int) -> None:
    """Everything recorded about one run: parameters, seed, progress, summary, error."""
    with opts.open() as ctx:
        run = get_run(ctx.catalog, run_id)
    fields = (
        "id",
        "kind",
        "algorithm",
        "status",
        "progress",
        "seed",
        "shard_index",
        "shard_count",
        "host",
        "pid",
        "synthdb_version",
        "started_at",
        "heartbeat_at",
        "finished_at",
        "error",
    )
    rows = [(name, getattr(run, name)) for name in fields if getattr(run, name) is not None]
    rows += [("params", json.dumps(run.params, sort_keys=True)), ("summary", json.dumps(run.summary))]
    echo_rows(rows)


@runs.command(name="resume")
@click.argument("run_id", type=int)
@pass_options
def runs_resume(opts: Options, run_id: int) -> None:
    """Continue an interrupted or failed generation run from its last committed work unit.

    A Langevin run may resume across processes: ``torchrun --nproc-per-node N -m synthdb.cli.main runs
    resume ID``."""
    from synthdb.generate.resume import resume_run

    with opts.open() as ctx:
        summary = resume_run(ctx, run_id, quiet=opts.quiet)
    click.echo(f"run {run_id}: {summary}")
