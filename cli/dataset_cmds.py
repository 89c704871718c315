"""``synthdb datasets``: list, show, rename and delete the catalog's datasets."""

from __future__ import annotations

import json
import sys

import click

from synthdb import datasets as api
from synthdb.cli.app import Options, cli, echo_rows, pass_options
from synthdb.errors import SynthdbError


@cli.group(name="datasets")
def datasets_group() -> None:
    """The datasets in the catalog (imported, generated, projected)."""


@datasets_group.command(name="list")
@pass_options
def datasets_list(opts: Options) -> None:
    """Every dataset, by name, with its kind, source and counts."""
    with opts.open() as ctx:
        rows = api.list_datasets(ctx)
    for row in rows:
        click.echo(
            f"{row.name:<24} {row.kind:<10} {row.source:<12} {row.samples:>9} samples "
            f"{row.identities:>8} identities  {row.created_at:%Y-%m-%d %H:%M}"
        )
    if not rows:
        click.echo("no datasets yet: `synthdb import` or `synthdb generate references` makes one")


@datasets_group.command(name="show")
@click.argument("name")
@pass_options
def datasets_show(opts: Options, name: str) -> None:
    """Where a dataset's images are, what it holds, and the runs that wrote into it."""
    with opts.open() as ctx:
        details = api.show_dataset(ctx, name)
    d, c = details.dataset, details.contents
    rows: list[tuple[str, object]] = [
        ("name", d.name),
        ("id", d.id),
        ("kind", d.kind),
        ("source", d.source),
        ("root", d.root or "(none: latents only)"),
        ("samples", f"{c.samples} ({', '.join(f'{n} {role}' for role, n in c.roles.items()) or 'none'})"),
        ("identities", c.identities),
        ("protocols", c.protocols),
        ("sample issues", c.issues),
        ("indexes", c.indexes),
    ]
    rows += [
        (f"shards {g.content}", f"{g.space or '-'}: {g.shards} files, {g.rows} rows, {g.bytes} bytes")
        for g in c.shard_groups
    ]
    rows += [(f"run {r.id}", f"{r.kind} {r.algorithm or ''} {r.status}") for r in details.writers]
    if d.attributes:
        rows.append(("attributes", json.dumps(d.attributes, sort_keys=True)))
    echo_rows(rows)


@datasets_group.command(name="rename")
@click.argument("name")
@click.argument("new_name")
@pass_options
def datasets_rename(opts: Options, name: str, new_name: str) -> None:
    """Rename dataset NAME to NEW_NAME."""
    with opts.open() as ctx:
        row = api.rename_dataset(ctx, name, new_name)
    click.echo(f"dataset '{name}' is now '{row.name}'")


def _confirmation(yes: bool):  # noqa: ANN202 - a callback for the library's delete
    """``--yes`` agrees; on a terminal the user is asked; otherwise (piped, scripted) nobody can answer, so
    the delete is refused rather than waiting on input."""

    def confirm(details: api.DatasetDetails) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise SynthdbError(f"deleting {details.describe()} needs --yes (no terminal to ask on)")
        return click.confirm(f"delete {details.describe()}?", default=False, err=True)

    return confirm


@datasets_group.command(name="delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@pass_options
def datasets_delete(opts: Options, name: str, yes: bool) -> None:
    """Delete dataset NAME and its catalog rows; `synthdb gc` then removes its shard files."""
    with opts.open() as ctx:
        deleted = api.delete_dataset(ctx, name, _confirmation(yes))
    if deleted is None:
        click.echo(f"dataset '{name}' kept")
        return
    click.echo(
        f"deleted {deleted.describe()}; `synthdb gc` removes its {deleted.shard_files} shard files "
        "(image files are never deleted)"
    )
