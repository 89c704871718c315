"""``synthdb export DATASET --format F OUT``: write a dataset in a format trainers and evaluators read."""

from __future__ import annotations

import click

from synthdb.cli.app import Options, cli, pass_options
from synthdb.cli.params import build, options
from synthdb.export.job import ExportOptions

FORMAT_NAMES = ("imagefolder", "recordio", "webdataset", "bob", "pairs-bin", "synthetics-h5")


@cli.command(name="export")
@click.argument("dataset")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(FORMAT_NAMES),
    help="imagefolder | recordio (insightface) | webdataset | bob (CSVDatabase) | pairs-bin "
    "(insightface .bin) | synthetics-h5 (reference samples.h5).",
)
@options(ExportOptions)
@pass_options
def export_command(opts: Options, dataset: str, out: str, fmt: str, **values: object) -> None:
    """Export DATASET into the folder OUT; re-running after an interruption resumes it."""
    from dataclasses import asdict

    from synthdb.export.api import export

    chosen = build(ExportOptions, values, quiet=opts.quiet)
    with opts.open() as ctx:
        report = export(ctx, dataset, fmt, out, **asdict(chosen))
    if report.note:
        click.echo(report.note)
        return
    counts, output = report.manifest["counts"], report.manifest["output"]
    facts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in output.items() if isinstance(v, int))
    click.echo(
        f"exported '{report.dataset}' as {report.format} to {report.out} (run {report.run_id}): "
        f"{counts['selected']} samples selected; {facts}"
    )
    for kind, n in counts["excluded"].items():
        click.echo(f"{n} samples left out: {kind.replace('_', ' ')}")
    for note in report.manifest.get("notes", []):
        click.echo(f"note: {note}")
    if counts["skipped"]:
        first = report.manifest["skipped"][0]
        click.echo(
            f"{counts['skipped']} samples skipped ({counts['skipped_by_kind']}); first: "
            f"{first['key']}: {first['reason']} (all in {report.out}/manifest.json)"
        )
