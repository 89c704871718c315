"""``synthdb project``: GAN inversion of aligned faces (image files or a catalog dataset) into latents."""

from __future__ import annotations

import click

from synthdb import defaults
from synthdb.cli.app import Options, cli, pass_options


@cli.command(name="project")
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False, resolve_path=True))
@click.option("--dataset", help="Project the samples of this catalog dataset instead of image files.")
@click.option("--protocol", "protocols", multiple=True, help="Only members of this protocol (repeatable).")
@click.option("--group", help="Protocol group: train (default with --protocol), dev, eval, ... or all.")
@click.option("--name", required=True, help="Name of the output dataset (shared by re-runs and shards).")
@click.option(
    "--generator",
    default=defaults.GENERATOR,
    show_default=True,
    help="Generator: a model card, a file, or a tiny configuration (stylegan2-tiny... are UNTRAINED).",
)
@click.option(
    "--embedder", default=defaults.EMBEDDER, show_default=True, help="Its features: --perceptual embedder."
)
@click.option(
    "--perceptual",
    type=click.Choice(["lpips", "embedder"]),
    help="Perceptual loss: LPIPS VGG16 (needs `synthdb models add` of vgg16-imagenet and lpips-vgg-v0.1) "
    "or the --embedder's features. Default: lpips when both files are added, else embedder.",
)
@click.option("--space", type=click.Choice(["w", "w+"]), default="w", show_default=True)
@click.option("--steps", default=1000, show_default=True, help="Optimisation steps per target.")
@click.option(
    "--crop", is_flag=True, help="Detect and align photos to the generator's framing first (else: aligned)."
)
@click.option(
    "--detector",
    type=click.Choice(["dlib", "mtcnn"]),
    default=defaults.PROJECTION_DETECTOR,
    show_default=True,
)
@click.option("--seed", default=0, show_default=True, help="Root seed of every random draw.")
@click.option("--batch-size", default=8, show_default=True, help="Targets optimised together.")
@click.option("--init-lr", "initial_learning_rate", default=0.1, show_default=True)
@click.option("--constant-lr", "constant_learning_rate", is_flag=True, help="No learning-rate ramps.")
@click.option("--reg-noise-weight", "regularize_noise_weight", default=1e5, show_default=True)
@click.option("--perceptual-weight", default=1.0, show_default=True)
@click.option("--pixel-weight", default=1.0, show_default=True)
@click.option(
    "--random-start", is_flag=True, help="Start from a random w (psi --truncation), not from w_avg."
)
@click.option("--truncation", default=defaults.TRUNCATION, show_default=True)
@click.option(
    "--video",
    type=click.Path(file_okay=False, resolve_path=True),
    help="Write DIR/<key>.gif: target | synthesis as the optimisation goes.",
)
@click.option("--shard-index", type=int, help="This job's shard (default: SLURM/SGE array task, else 0).")
@click.option("--num-shards", type=int, help="Number of shards (default: the job array's size, else 1).")
@click.option("--device", default="cpu", show_default=True)
@pass_options
def project_cmd(
    opts: Options,
    images: tuple[str, ...],
    protocols: tuple[str, ...],
    random_start: bool,
    shard_index: int | None,
    num_shards: int | None,
    **kw: object,
) -> None:
    """Optimise a latent (and noise) per aligned face until the generator redraws it; the latents
    become a dataset of role-`projection` samples linked to their sources."""
    from synthdb.generate.units import resolve_shard
    from synthdb.latent.project import ProjectionParams, project

    params = ProjectionParams(
        images=list(images),
        protocols=list(protocols),
        start_wavg=not random_start,
        **kw,  # type: ignore[arg-type]
    )
    shard = resolve_shard(shard_index, num_shards)
    with opts.open() as ctx:
        done = project(ctx, params, shard=shard, quiet=opts.quiet)
    click.echo(
        f"run {done.run_id}: {done.projected} of {done.targets} targets projected into "
        f"dataset {params.name} ({params.space}, {params.steps} steps, perceptual loss "
        f"{done.perceptual}; shard {shard[0] + 1} of {shard[1]})"
    )
