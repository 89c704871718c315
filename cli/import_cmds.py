"""``synthdb import SOURCE PATH``: index a genuine face database (or a samples.h5) into the catalog."""

from __future__ import annotations

import click

from synthdb.cli.app import Options, cli, pass_options
from synthdb.sources import registry


@cli.group(name="import")
def import_group() -> None:
    """Index a face database into the catalog (its files stay where they are)."""


def _make_command(source_name: str) -> None:
    is_file = registry.path_kind(source_name) == "file"
    defaults = {"samples": "the folder of samples.h5, else the file's stem", "csv": "the manifest's stem"}
    default_name = defaults.get(source_name, source_name)

    @import_group.command(name=source_name, help=registry.describe(source_name))
    @click.argument("path", type=click.Path(exists=True, file_okay=is_file, dir_okay=not is_file))
    @click.option("--name", help=f"Dataset name (default: {default_name}).")
    @click.option("--update", is_flag=True, help="Add files that appeared since the last import.")
    @click.option("--verify-images", is_flag=True, help="Decode every image (slow); default: stat only.")
    @pass_options
    def command(opts: Options, path: str, name: str | None, update: bool, verify_images: bool) -> None:
        with opts.open() as ctx:
            report = registry.import_named(
                ctx,
                source_name,
                path,
                name=name,
                update=update,
                verify_images=verify_images,
                quiet=opts.quiet,
            )
        if report.note:
            click.echo(report.note)
            return
        pairs = f", {report.pairs_added} pairs added" if report.pairs_added or report.pairs_existing else ""
        click.echo(
            f"dataset '{report.dataset}' (run {report.run_id}): {report.added} samples added, "
            f"{report.existing} already present, {report.scanned} scanned{pairs}"
        )
        for kind, count in report.problem_counts.items():
            listed = report.problems[kind]
            more = f" (+{count - len(listed)} more in the run summary)" if count > len(listed) else ""
            click.echo(f"{count} {kind.replace('_', ' ')}: {', '.join(listed[:10])}{more}")


for _name in registry.SOURCES:
    _make_command(_name)
