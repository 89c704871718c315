"""Model commands: the cards synthdb knows and the weights a workspace has (``synthdb models ...``).

Each command imports :mod:`synthdb.zoo` when it runs: it loads torch and every network.
"""

from __future__ import annotations

import click

from synthdb.cli.app import Options, cli, echo_rows, pass_options

#: The kinds of model cards (``synthdb.nets.cards.KINDS``, which loads torch).
KINDS = ["generator", "embedder", "detector", "landmarks", "perceptual"]


@cli.group()
def models() -> None:
    """Networks synthdb knows (model cards) and their weights on this machine."""


@models.command(name="list")
@click.option("--kind", type=click.Choice(KINDS), help="Only models of this kind.")
@pass_options
def models_list(opts: Options, kind: str | None) -> None:
    """List model cards and tiny configurations, whether their weights are here, and their licences
    (outside a workspace: only embedded weights count as here)."""
    from synthdb import zoo

    with zoo.workspace_if_any(opts.workspace) as ctx:
        rows = zoo.status(ctx, kind)
    width = max(len(r.card.name) for r in rows)
    click.echo(f"{'NAME'.ljust(width)}  {'KIND':<10}  {'WEIGHTS':<9}  USE")
    for r in rows:
        where = "embedded" if r.card.embedded else ("ready" if r.weights else "missing")
        where = "untrained" if r.card.name in zoo.TINY else where
        commercial = {True: "commercial ok", False: "non-commercial"}.get(
            r.card.commercial_use, "terms unclear"
        )
        click.echo(f"{r.card.name.ljust(width)}  {r.card.kind:<10}  {where:<9}  {commercial}")


@models.command(name="show")
@click.argument("name")
@pass_options
def models_show(opts: Options, name: str) -> None:
    """Show a model card (or tiny configuration) and where its weights are."""
    from synthdb import zoo

    with zoo.workspace_if_any(opts.workspace) as ctx:
        found = zoo.model_status(ctx, name)
    fields = [(k, v) for k, v in vars(found.card).items() if v not in ("", None, {})]
    weights = "drawn from a fixed seed (untrained)" if name in zoo.TINY else "not on this machine"
    echo_rows([*fields, ("weights", found.weights or weights)])


@models.command(name="add")
@click.argument("name")
@click.option(
    "--file",
    "file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The weights file you have.",
)
@pass_options
def models_add(opts: Options, name: str, file: str) -> None:
    """Copy a weights file into the models directory, verify it and register it."""
    from synthdb import zoo

    with opts.open() as ctx:
        click.echo(f"{name}: weights at {zoo.add(ctx, name, file)}")


@models.command(name="fetch")
@click.argument("name")
@pass_options
def models_fetch(opts: Options, name: str) -> None:
    """Download a model's weights (sha256-checked) and register them."""
    from synthdb import zoo

    with opts.open() as ctx:
        click.echo(f"{name}: weights at {zoo.fetch(ctx, name, progress=not opts.quiet)}")
