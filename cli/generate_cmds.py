"""Generation commands: ``generate image`` (more generators and algorithms join this group)."""

from __future__ import annotations

import click

from synthdb import defaults
from synthdb.cli.app import Options, cli, pass_options


@cli.group()
def generate() -> None:
    """Synthesize images and latents with GAN generators."""


@generate.command(name="image")
@click.option(
    "--generator",
    "spec",
    required=True,
    help="stylegan2-tiny / eg3d-tiny (untrained), a generator model card, or a .pkl / synthdb generator file",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the z latents.")
@click.option("--num", default=1, show_default=True, help="Number of images from seeds (tiled 8 per row).")
@click.option("--truncation", default=defaults.TRUNCATION, show_default=True, help="Truncation psi (1: none)")
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
    fov: float | None,
    pitch: float | None,
    yaw: float | None,
    save_depth: bool,
    out: str,
    device: str,
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


def _model_options(command):  # noqa: ANN001, ANN201 - a click decorator
    """--generator/--embedder/--seed/--batch-size/--device, shared by references and variations."""
    for option in reversed(
        [
            click.option(
                "--generator",
                default=defaults.GENERATOR,
                show_default=True,
                help="Generator: a model card (dcgan-digiface is embedded, trained on DigiFace-1M), a file, "
                "or a tiny configuration (stylegan2-tiny... are UNTRAINED: their images are not faces).",
            ),
            click.option("--embedder", default=defaults.EMBEDDER, show_default=True, help="Face embedder."),
            click.option("--seed", default=0, show_default=True, help="Root seed of every random draw."),
            click.option(
                "--batch-size", default=8, show_default=True, help="Images per forward/backward pass."
            ),
            click.option("--device", default="cpu", show_default=True),
        ]
    ):
        command = option(command)
    return command


@generate.command(name="references")
@click.option("--name", required=True, help="Name of the new synthetic dataset.")
@click.option("--num-identities", required=True, type=int)
@click.option(
    "--algorithm", type=click.Choice(["random", "ict", "langevin"]), default="langevin", show_default=True
)
@click.option("--ict", type=float, help="Inter-class threshold, radians [default: the embedder's threshold].")
@click.option(
    "--truncation",
    default=defaults.TRUNCATION,
    show_default=True,
    help="Truncation psi of the initial latents.",
)
@click.option("--avoid", help="A catalog dataset whose embeddings repel (ict: are kept >= ICT away).")
@click.option(
    "--max-candidates", default=100, show_default=True, help="ict: give up after this many per identity."
)
@click.option("--langevin-iterations", default=10, show_default=True)
@click.option(
    "--langevin-checkpoint-every", default=1, show_default=True, help="Iterations per committed unit."
)
@click.option("--langevin-repulsion-coefficient", "-k0", default=1.0, show_default=True)
@click.option(
    "--langevin-repulsion-radius",
    "-r0",
    type=float,
    help="Radians [default: the embedder's threshold x 1.7/1.4, the reference's r0/ICT ratio].",
)
@click.option(
    "--langevin-timestep",
    "-dt",
    type=float,
    help="Negative: adaptive factor [default: the generator card's, else the reference's -0.3].",
)
@click.option("--langevin-viscous-coefficient", "-gamma", default=1.0, show_default=True)
@click.option("--langevin-random-force", "-eta0", default=0.01, show_default=True)
@click.option("--langevin-latent-force", "-kl", default=0.0, show_default=True)
@click.option("--langevin-avoid-radius", type=float, help="Radius around --avoid embeddings (default: r0).")
@click.option(
    "--langevin-whole-graph/--langevin-bounded-memory",
    default=True,
    show_default=True,
    help="Bounded: a no-grad pass plus one backward per batch (for generators too large to hold every "
    "identity's graph); the same forces up to float rounding.",
)
@_model_options
@pass_options
def generate_references_cmd(opts: Options, **kw: object) -> None:
    """Reference identities (random, ICT rejection or Langevin repulsion) into a new dataset.

    Langevin runs across processes and machines under torchrun (gloo on CPU, NCCL with --device cuda):
    ``torchrun --nproc-per-node N -m synthdb.cli.main generate references ...``."""
    from synthdb.generate.references import LangevinParams, ReferenceParams, generate_references

    langevin = {k.removeprefix("langevin_"): kw.pop(k) for k in list(kw) if k.startswith("langevin_")}
    params = ReferenceParams(**kw, langevin=LangevinParams(**langevin))  # type: ignore[arg-type]
    with opts.open() as ctx:
        run_id = generate_references(ctx, params, quiet=opts.quiet)
    click.echo(
        f"run {run_id}: {params.num_identities} {params.algorithm} references in dataset {params.name}"
    )


@generate.command(name="variations")
@click.option("--name", required=True, help="Name of the new synthetic dataset.")
@click.option("--references", required=True, help="Dataset of reference identities.")
@click.option(
    "--algorithm",
    type=click.Choice(["dispersion", "disco", "covariates"]),
    default="dispersion",
    show_default=True,
    help="covariates: the 17 IJCB 2021 edits of each neutralised reference (needs --directions).",
)
@click.option("--num-variations", default=16, show_default=True, help="dispersion/disco (covariates: 17).")
@click.option("--dispersion-iterations", "iterations", default=20, show_default=True)
@click.option("--dispersion-embedding-coefficient", "embedding_coefficient", default=20.0, show_default=True)
@click.option("--dispersion-latent-coefficient", "latent_coefficient", default=1.0, show_default=True)
@click.option(
    "--dispersion-latent-radius",
    "latent_radius",
    type=float,
    help="Latent repulsion radius [default: the generator card's, else the reference's 12].",
)
@click.option(
    "--dispersion-latent-global-coefficient",
    "global_coefficient",
    type=float,
    help="Pull towards w_avg [default: the generator card's, else the reference's 1].",
)
@click.option("--dispersion-random-force", "random_force", default=0.05, show_default=True)
@click.option("--dispersion-viscous-coefficient", "viscous_coefficient", default=1.0, show_default=True)
@click.option("--dispersion-timestep", "timestep", default=0.05, show_default=True)
@click.option("--dispersion-initial-noise", "initial_noise", default=0.2, show_default=True)
@click.option(
    "--directions", help="disco/covariates: a direction set from `synthdb latent analyze` (`latent list`)."
)
@click.option("--pose-scaling", "-ps", default=1.0, show_default=True)
@click.option("--illumination-scaling", "-is", default=1.0, show_default=True)
@click.option("--expression-scaling", "-es", default=1.0, show_default=True)
@click.option(
    "--ict", type=float, help="Threshold of the prop_ict statistic, radians [default: the embedder's]."
)
@click.option(
    "--identities-per-unit", default=8, show_default=True, help="Identities per committed work unit."
)
@click.option("--shard-index", type=int, help="This job's shard (default: SLURM/SGE array task, else 0).")
@click.option("--num-shards", type=int, help="Number of shards (default: the job array's size, else 1).")
@_model_options
@pass_options
def generate_variations_cmd(
    opts: Options, shard_index: int | None, num_shards: int | None, **kw: object
) -> None:
    """Variations of each reference identity (Dispersion, DisCo, covariates) into a dataset shared by all
    shards."""
    from synthdb.generate.units import resolve_shard
    from synthdb.generate.variations import VariationParams, generate_variations

    params = VariationParams(**kw)  # type: ignore[arg-type]
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
@click.option("--batch-size", default=16, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@pass_options
def generate_images_cmd(
    opts: Options,
    dataset: str,
    generator: str | None,
    crop: str | None,
    root: str | None,
    batch_size: int,
    device: str,
) -> None:
    """Render the images of a generated dataset's stored latents (constant noise) and record their paths."""
    from synthdb.generate.dataset_images import generate_dataset_images

    with opts.open() as ctx:
        count = generate_dataset_images(ctx, dataset, generator, crop, root, batch_size, device, opts.quiet)
    click.echo(f"{dataset}: {count} image(s) written")
