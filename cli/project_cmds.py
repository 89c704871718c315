"""``synthdb project``: GAN inversion of aligned faces (image files or a catalog dataset) into latents."""

from __future__ import annotations

import click

from synthdb.cli.app import Options, cli, pass_options
from synthdb.cli.params import build, options, shard_options
from synthdb.latent.params import ProjectionParams


@cli.command(name="project")
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False, resolve_path=True))
@options(ProjectionParams)
@shard_options
@pass_options
def project_cmd(
    opts: Options,
    images: tuple[str, ...],
    shard_index: int | None,
    num_shards: int | None,
    **values: object,
) -> None:
    """Optimise a latent (and noise) per aligned face until the generator redraws it; the latents
    become a dataset of role-`projection` samples linked to their sources."""
    from synthdb.generate.units import resolve_shard
    from synthdb.latent.project import project

    params = build(ProjectionParams, values, images=list(images))
    shard = resolve_shard(shard_index, num_shards)
    with opts.open() as ctx:
        done = project(ctx, params, shard=shard, quiet=opts.quiet)
    click.echo(
        f"run {done.run_id}: {done.projected} of {done.targets} targets projected into "
        f"dataset {params.name} ({params.space}, {params.steps} steps, perceptual loss "
        f"{done.perceptual}; shard {shard[0] + 1} of {shard[1]})"
    )
