"""Workspace commands: init, info, db upgrade/current/downgrade, demo."""

from __future__ import annotations

import json

import click

from synthdb import admin
from synthdb.cli.app import Options, cli, echo_rows, pass_options
from synthdb.cli.params import count_option, spec_option
from synthdb.params import Spec


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option(
    "--catalog-url", help="SQLAlchemy URL of the catalog (default: sqlite:///catalog.db in DIRECTORY)."
)
@click.option("--store", help="Store directory for shards and indexes (default: DIRECTORY/store).")
@click.option("--models-dir", help="Where model weights are kept (default: the user cache directory).")
@click.option(
    "--print-grants",
    is_flag=True,
    help="Print the SQL that creates least-privilege owner and reader roles for the PostgreSQL "
    "--catalog-url, and create nothing.",
)
def init(
    directory: str, catalog_url: str | None, store: str | None, models_dir: str | None, print_grants: bool
) -> None:
    """Create a workspace in DIRECTORY: synthdb.toml, the catalog schema and the store."""
    if print_grants:
        click.echo(admin.postgres_grants(catalog_url or ""))
        return
    made = admin.initialise(directory, catalog_url, store, models_dir)
    click.echo(f"initialised workspace {made.root}")
    echo_rows([("catalog", made.catalog), ("store", made.store)])
    if made.warning:
        click.echo(made.warning, err=True)


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
@count_option("--num-identities", 24, "Reference identities (Langevin).", hidden_alias="--identities")
@count_option("--num-variations", 4, "Variations per identity (Dispersion).", hidden_alias="--per-identity")
@count_option("--langevin-iterations", 10, "Langevin iterations.", hidden_alias="--iterations")
@spec_option("--seed", spec=Spec("Root seed of every random draw.", low=0), base=int, default=0)
@click.option(
    "--photos",
    type=click.Path(exists=True, file_okay=False),
    help="Real photos with a manifest.csv (file, identity), imported as the genuine dataset the references "
    "are checked against (make demo passes tests/data/faces); without it the leakage check is left out.",
)
@pass_options
def demo(
    opts: Options,
    directory: str | None,
    num_identities: int,
    num_variations: int,
    langevin_iterations: int,
    seed: int,
    photos: str | None,
) -> None:
    """Run the main job end to end on embedded defaults in a new workspace DIRECTORY (default: a temp dir)."""
    import tempfile

    from synthdb.demo import demo_summary, run_demo

    directory = directory or tempfile.mkdtemp(prefix="synthdb-demo-")
    result = run_demo(
        directory,
        num_identities,
        num_variations,
        langevin_iterations,
        seed=seed,
        photos=photos,
        quiet=opts.quiet,
    )
    for line in demo_summary(result):
        click.echo(line)
    for title, text in result.queries:
        click.echo(f"\n{title}\n{text}")
    click.echo(
        f"\nLook further: cd {result.workspace} && synthdb runs list && synthdb stats separability "
        f"demo-variations && ls datasets/demo-variations; open {result.report}"
    )
