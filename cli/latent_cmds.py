"""Latent commands: covariate directions from projections (``analyze``), listing, editing."""

from __future__ import annotations

import click

from synthdb.cli.app import Options, cli, echo_rows, pass_options
from synthdb.cli.params import spec_option
from synthdb.params import Spec

COVARIATE_NAMES = ["pose", "illumination", "smile", "scream", "disgust", "squint", "surprise"]


@cli.group()
def latent() -> None:
    """Covariate directions in W (linear SVMs on projected Multi-PIE) and latent editing."""


@latent.command(name="analyze")
@click.argument("projections")
@click.option(
    "--protocol",
    type=click.Choice(["U", "E_lit", "P_center_lit", "all"]),
    default="all",
    show_default=True,
    help="U: illumination; P_center_lit: pose; E_lit: the 5 expressions; all: every one.",
)
@click.option("--name", help="Name of the direction set (default: PROJECTIONS, or PROJECTIONS-PROTOCOL).")
@click.option("--generator", help="The generator of the latents (needed only when the dataset has several).")
@spec_option("--seed", spec=Spec("Seed of the SVM solver.", low=0), base=int, default=0)
@pass_options
def analyze_cmd(
    opts: Options, projections: str, protocol: str, name: str | None, generator: str | None, seed: int
) -> None:
    """Fit covariate directions on the PROJECTIONS dataset and store them as a named direction set."""
    from synthdb.latent.svm_directions import analyze_projections

    name = name or (projections if protocol == "all" else f"{projections}-{protocol}")
    with opts.open() as ctx:
        found = analyze_projections(ctx, projections, name, protocol, seed, generator, opts.quiet)
    click.echo(f"direction set {found.name} ({found.generator}, protocol {found.protocol}):")
    echo_rows(
        [
            (
                d.name,
                f"{d.classes[0]} {d.counts[0]} vs {d.classes[1]} {d.counts[1]}, train accuracy "
                f"{d.accuracy:.3f}, mean projection {d.neg.mean:.3f} / {d.pos.mean:.3f}"
                + ("" if d.converged else " (solver did not converge)"),
            )
            for d in found.directions
        ]
    )


@latent.command(name="list")
@pass_options
def list_cmd(opts: Options) -> None:
    """The direction sets in the catalog."""
    from synthdb.latent.directions import list_sets

    with opts.open() as ctx:
        sets = list_sets(ctx.catalog)
    if not sets:
        click.echo("no direction sets: make one with `synthdb latent analyze PROJECTIONS`")
        return
    echo_rows([(s.name, f"{s.generator}, protocol {s.protocol}: {', '.join(s.names)}") for s in sets])


@latent.command(name="edit")
@click.option("--directions", required=True, help="A direction set (`synthdb latent list`).")
@click.option(
    "--input",
    "source",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A Sample .h5 file with a w_latent.",
)
@click.option("--edit", type=click.Choice(COVARIATE_NAMES), help="Set this covariate to STRENGTH x its mean.")
@click.option("--strength", "-s", default=1.0, show_default=True, help="Multiple of the positive-side mean.")
@click.option(
    "--neutralise",
    "--neutralize",
    is_flag=True,
    help="First remove pose and illumination and set a neutral expression.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output Sample .h5 file.")
@pass_options
def edit_cmd(
    opts: Options, directions: str, source: str, edit: str | None, strength: float, neutralise: bool, out: str
) -> None:
    """Edit the w latent of a sample along a covariate direction."""
    from synthdb.latent.edit import edit_sample_file

    with opts.open() as ctx:
        path = edit_sample_file(ctx.catalog, directions, source, out, edit, strength, neutralise)
    steps = (["neutralised"] if neutralise else []) + ([f"{edit} x {strength:g}"] if edit else [])
    done = " and ".join(steps)
    click.echo(f"{path}: {done} with direction set {directions}")
