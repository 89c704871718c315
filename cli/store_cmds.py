"""Store and query commands: query, fsck, gc, store adopt."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from synthdb import admin
from synthdb.analysis import query as q
from synthdb.cli.app import Options, cli, pass_options
from synthdb.cli.params import spec_option
from synthdb.params import Spec
from synthdb.progress import progress_bar
from synthdb.store import fsck as checks


@cli.command()
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(q.FORMATS),
    default="table",
    show_default=True,
    help="How the rows are printed or written (--output).",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the result to FILE.")
@click.option(
    "--engine",
    type=click.Choice(q.ENGINES),
    default="duckdb",
    show_default=True,
    help="duckdb: catalog + shard views; catalog: the SQL runs on the catalog database itself.",
)
@spec_option(
    "--timeout",
    "timeout_s",
    spec=Spec("Seconds before the statement is cancelled, where it runs.", low=0, low_open=True),
    base=float,
    default=q.DEFAULT_TIMEOUT_S,
)
@click.option(
    "--memory-limit",
    help="Working memory and the most a result may hold, e.g. 4GB (default: a quarter of RAM).",
)
@pass_options
def query(
    opts: Options,
    sql: str,
    fmt: str,
    output: str | None,
    engine: str,
    timeout_s: float,
    memory_limit: str | None,
) -> None:
    """Run read-only SQL over the catalog (schema `catalog`) and the views `embeddings`, `latents`, `nearest`
    and `stats`."""
    with opts.open() as ctx:
        table = q.query(ctx, sql, engine, timeout_s, memory_limit)
    if fmt == "table" and output is None and sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        view = Table(*table.column_names)
        for row in q.rows_of(table, 200):
            view.add_row(*(q.cell(v) for v in row))
        Console().print(view)
        return
    text = q.write_result(table, fmt, output)
    if text is not None:
        click.echo(text)
    else:
        where = Path(output).resolve()
        click.echo(f"wrote {table.num_rows} rows ({table.num_columns} columns, {fmt}) to {where}")


@cli.command()
@click.option("--quick", is_flag=True, help="Compare sizes only; skip re-hashing every shard.")
@click.option("--files", is_flag=True, help="Also check that every sample's image file exists (stat only).")
@pass_options
def fsck(opts: Options, quick: bool, files: bool) -> None:
    """Check store files against catalog rows: missing, corrupt, orphan, staged and foreign files."""
    with opts.open() as ctx, progress_bar(None, "fsck", opts.quiet, unit="files") as advance:
        report = checks.fsck(ctx.catalog, ctx.store, verify=not quick, advance=advance, files=files)
    for kind in ("missing", "corrupt", "orphans", "staged", "foreign"):
        for path in getattr(report, kind):
            click.echo(f"{kind.rstrip('s')}: {path}")
    for line in report.missing_files:
        click.echo(f"missing sample file: {line}")
    click.echo(report.summary(files))
    if not report.clean:
        sys.exit(1)


@cli.command()
@spec_option(
    "--min-age",
    spec=Spec("Keep unreferenced files younger than this many seconds (a live writer may own them).", low=0),
    base=float,
    default=300.0,
)
@pass_options
def gc(opts: Options, min_age: float) -> None:
    """Remove files no catalog row references, and retired shards."""
    with opts.open() as ctx:
        report = checks.gc(ctx.catalog, ctx.store, min_age=min_age)
    for path in report.removed_files:
        click.echo(f"removed {path}")
    for path in report.kept_young:
        click.echo(f"kept {path} (younger than {min_age:g}s; pass --min-age 0 to remove)")
    click.echo(f"{len(report.removed_files)} files and {report.removed_rows} retired rows removed")


@cli.group()
def store() -> None:
    """The workspace's store of shard and index files."""


@store.command()
@pass_options
def adopt(opts: Options) -> None:
    """Mark the configured store as this workspace's (.synthdb-store), for workspaces made before markers."""
    ws, store_id = admin.adopt(opts.workspace)
    click.echo(f"{ws.store} is this workspace's store (id {store_id}, recorded in {ws.config_path})")
