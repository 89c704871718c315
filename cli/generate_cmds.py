"""Generation commands: ``generate image`` (more generators and algorithms join this group)."""

from __future__ import annotations

import click

from synthdb.cli.app import Options, cli, pass_options


@cli.group()
def generate() -> None:
    """Synthesize images and latents with GAN generators."""


@generate.command(name="image")
@click.option(
    "--generator",
    "spec",
    required=True,
    help="stylegan2-tiny (untrained), a generator model card, or a .pkl / synthdb generator file.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the z latents.")
@click.option("--num", default=1, show_default=True, help="Number of images from seeds (tiled 8 per row).")
@click.option("--truncation", default=0.7, show_default=True, help="Truncation psi (1: none).")
@click.option(
    "--latents",
    type=click.Path(exists=True, dir_okay=False),
    help="A Sample .h5 file: render its latent instead of seeds.",
)
@click.option("--w-plus", is_flag=True, help="With --latents: use w_plus_latent even when w_latent exists.")
@click.option(
    "--noise-mode",
    type=click.Choice(["const", "random", "none"]),
    default="const",
    show_default=True,
    help="const: the same latent always gives the same image.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output image (.png).")
@click.option("--device", default="cpu", show_default=True)
@pass_options
def generate_image(
    opts: Options,
    spec: str,
    seed: int,
    num: int,
    truncation: float,
    latents: str | None,
    w_plus: bool,
    noise_mode: str,
    out: str,
    device: str,
) -> None:
    """Render images from seeds or from a sample's latents into one PNG."""
    from synthdb.generate.image import generate_images, load_generator

    generator = load_generator(spec, opts.workspace, device)
    result = generate_images(
        generator,
        out,
        seed=seed,
        num=num,
        truncation=truncation,
        latents=latents,
        w_plus=w_plus,
        noise_mode=noise_mode,
    )
    click.echo(
        f"{result.path}: {result.count} image(s) ({result.columns}x{result.rows}) from "
        f"{result.generator}, {result.source}"
    )
