"""Workspace commands: init, info, db upgrade/current/downgrade, demo."""

from __future__ import annotations

import json

import click

from synthdb import admin
from synthdb.cli.app import Options, cli, echo_rows, pass_options


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option(
    "--catalog-url", help="SQLAlchemy URL of the catalog (default: sqlite:///catalog.db in DIRECTORY)."
)
@click.option("--store", help="Store directory for shards and indexes (default: DIRECTORY/store).")
@click.option("--models-dir", help="Where model weights are kept (default: the user cache directory).")
def init(directory: str, catalog_url: str | None, store: str | None, models_dir: str | None) -> None:
    """Create a workspace in DIRECTORY: synthdb.toml, the catalog schema and the store."""
    ctx = admin.init_workspace(directory, catalog_url, store, models_dir)
    click.echo(f"initialised workspace {ctx.ws.root}")
    echo_rows([("catalog", ctx.catalog.display_url), ("store", ctx.store.root)])
    ctx.close()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_options
def info(opts: Options, as_json: bool) -> None:
    """Show the workspace, its catalog URL and schema revision, and row counts per table."""
    with opts.open() as ctx:
        data = admin.info(ctx)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    counts = data.pop("counts")
    echo_rows(
        [(k.replace("_", " "), v) for k, v in data.items()] + [(f"rows in {t}", n) for t, n in counts.items()]
    )


@cli.group()
def db() -> None:
    """Catalog schema migrations."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_options
def upgrade(opts: Options, revision: str) -> None:
    """Migrate the catalog schema to the newest revision this synthdb knows."""
    click.echo(f"catalog at revision {admin.upgrade(opts.workspace, revision)}")


@db.command()
@pass_options
def current(opts: Options) -> None:
    """Print the catalog's schema revision and the newest known one."""
    now, head = admin.current(opts.workspace)
    click.echo(f"{now or '(empty)'} (head: {head})")


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--identities", default=16, show_default=True, help="Reference identities (Langevin).")
@click.option("--per-identity", default=4, show_default=True, help="Variations per identity (Dispersion).")
@click.option("--iterations", default=6, show_default=True, help="Langevin iterations.")
@click.option("--seed", default=0, show_default=True)
@pass_options
def demo(
    opts: Options, directory: str | None, identities: int, per_identity: int, iterations: int, seed: int
) -> None:
    """Run the main job end to end on embedded defaults in a new workspace DIRECTORY (default: a temp dir)."""
    import tempfile

    from synthdb.demo import run_demo

    directory = directory or tempfile.mkdtemp(prefix="synthdb-demo-")
    result = run_demo(directory, identities, per_identity, iterations, seed=seed, quiet=opts.quiet)
    click.echo(
        f"workspace {result.workspace}: {result.identities} Langevin reference identities, "
        f"{result.variations} Dispersion variations, {result.images} images rendered from their latents."
    )
    click.echo(
        "The generator is stylegan2-tiny: random-initialised and UNTRAINED (no face-generator weights "
        "ship with synthdb), so the images show the machinery, not faces; the embedder is the "
        "embedded dlib-resnet."
    )
    for title, text in result.queries:
        click.echo(f"\n{title}\n{text}")
    click.echo(
        f"\nLook further: cd {result.workspace} && synthdb runs list && synthdb stats separability "
        "demo-variations && ls datasets/demo-variations"
    )
