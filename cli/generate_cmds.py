"""Generation commands: ``generate image``, ``references``, ``variations`` and ``images``.

The options of ``references`` and ``variations`` are made from their parameter dataclasses
(:mod:`synthdb.generate.params`), so the command line and the API share every default, range and help text.
"""

from __future__ import annotations

import click

from synthdb import defaults
from synthdb.cli.app import Options, cli, pass_options
from synthdb.cli.params import build, count_option, device_option, options, shard_options, spec_option
from synthdb.generate.params import ReferenceParams, VariationParams
from synthdb.params import Spec


@cli.group()
def generate() -> None:
    """Synthesize images and latents with GAN generators."""


@generate.command(name="image")
@click.option(
    "--generator",
    "spec",
    default=defaults.GENERATOR,
    show_default=True,
    help="A generator model card, stylegan2-tiny / eg3d-tiny (untrained), or a .pkl / synthdb generator.",
)
@spec_option("--seed", spec=Spec("Seed of the z latents.", low=0), base=int, default=0)
@count_option("--num", 1, "Number of images from seeds (tiled 8 per row).")
@click.option(
    "--truncation", default=defaults.TRUNCATION, show_default=True, help="Truncation psi (1: none)."
)
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
@click.option("--fov", type=float, help="EG3D: camera field of view, degrees [default: 18].")
@click.option("--pitch", type=float, help="EG3D: camera pitch from the frontal view, degrees [default: 0].")
@click.option("--yaw", type=float, help="EG3D: camera yaw from the frontal view, degrees [default: 0].")
@click.option(
    "--save-depth", is_flag=True, help="EG3D: also write the depth maps, float32 (N, h, w), to OUT_depth.npy."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output image (.png).")
@device_option()
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
    fov: float | None,
    pitch: float | None,
    yaw: float | None,
    save_depth: bool,
    out: str,
    device: str | None,
) -> None:
    """Render images from seeds or from a sample's latents into one PNG (EG3D: from a camera, with depth)."""
    from synthdb.generate.render import render

    result = render(
        spec,
        out,
        workspace=opts.workspace,
        device=device,
        seed=seed,
        num=num,
        truncation=truncation,
        latents=latents,
        w_plus=w_plus,
        noise_mode=noise_mode,
        fov=fov,
        pitch=pitch,
        yaw=yaw,
        save_depth=save_depth,
    )
    click.echo(
        f"{result.path}: {result.count} image(s) ({result.columns}x{result.rows}) from "
        f"{result.generator}, {result.source}"
    )
    if result.depth_path is not None:
        click.echo(f"{result.depth_path}: depth maps")


@generate.command(name="references")
@options(ReferenceParams)
@pass_options
def generate_references_cmd(opts: Options, **values: object) -> None:
    """Reference identities (random, ICT rejection or Langevin repulsion) into a new dataset.

    Langevin runs across processes and machines under torchrun (gloo on CPU, NCCL with --device cuda):
    ``torchrun --nproc-per-node N -m synthdb.cli.main generate references ...``."""
    from synthdb.generate.references import generate_references

    params = build(ReferenceParams, values)
    with opts.open() as ctx:
        run_id = generate_references(ctx, params, quiet=opts.quiet)
    click.echo(
        f"run {run_id}: {params.num_identities} {params.algorithm} references in dataset {params.name}"
    )


@generate.command(name="variations")
@options(VariationParams)
@shard_options
@pass_options
def generate_variations_cmd(
    opts: Options, shard_index: int | None, num_shards: int | None, **values: object
) -> None:
    """Variations of each reference identity (Dispersion, DisCo, covariates) into a dataset shared by all
    shards."""
    from synthdb.generate.units import resolve_shard
    from synthdb.generate.variations import generate_variations

    params = build(VariationParams, values)
    shard = resolve_shard(shard_index, num_shards)
    with opts.open() as ctx:
        run_id = generate_variations(ctx, params, shard=shard, quiet=opts.quiet)
    click.echo(
        f"run {run_id}: {params.algorithm} variations of {params.references} in dataset {params.name} "
        f"(shard {shard[0] + 1} of {shard[1]})"
    )


@generate.command(name="images")
@click.argument("dataset")
@click.option("--generator", help="The generator of the latents [default: the one that made them].")
@click.option(
    "--crop", help="Reframe into this crop preset (arcface, dlib150, ...); default: the raw output."
)
@click.option(
    "--root", type=click.Path(file_okay=False), help="Image directory (default: workspace/datasets/NAME)."
)
@count_option("--batch-size", 16, "Images per synthesis pass.")
@device_option()
@pass_options
def generate_images_cmd(
    opts: Options,
    dataset: str,
    generator: str | None,
    crop: str | None,
    root: str | None,
    batch_size: int,
    device: str | None,
) -> None:
    """Render the images of a generated dataset's stored latents (constant noise) and record their paths."""
    from synthdb.generate.dataset_images import generate_dataset_images

    with opts.open() as ctx:
        rendered = generate_dataset_images(
            ctx, dataset, generator, crop, root, batch_size, device, opts.quiet
        )
    click.echo(f"{dataset}: {rendered.count} image(s) written to {rendered.root}")
