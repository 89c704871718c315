"""Face commands: crop image files, embed a catalog dataset."""

from __future__ import annotations

import sys

import click

from synthdb import defaults
from synthdb.cli.app import Options, cli, pass_options
from synthdb.cli.params import count_option, device_option, spec_option
from synthdb.params import Spec


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--from", "source", required=True, help="Input geometry: mtcnn, dlib, ffhq, ffhq256, resize, ..."
)
@click.option("--to", "target", required=True, help="Output preset: arcface, ffhq, dlib150, iresnet_bob, ...")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory for PNGs.")
@device_option()
def crop(images: tuple[str, ...], source: str, target: str, out: str, device: str | None) -> None:
    """Crop face images from one preset's geometry into another's."""
    from synthdb.crop_files import crop_images

    report = crop_images(list(images), source, target, out, device=device)
    for result in report.results:
        click.echo(f"{result.source} -> {result.output}" if result.ok else f"{result.source}: {result.error}")
    click.echo(f"{report.written} of {len(report.results)} images cropped into {out}")
    if report.failed:
        sys.exit(1)


@cli.command()
@click.argument("dataset")
@click.option("--model", default=defaults.EMBEDDER, show_default=True, help="Embedder model card.")
@click.option(
    "--detector",
    type=click.Choice(["mtcnn", "dlib", "none"]),
    default=defaults.DETECTOR,
    show_default=True,
    help="none: the images are already aligned crops of the model's preset.",
)
@count_option("--batch-size", 32, "Images per embedder pass.")
@count_option("--unit-size", 256, "Samples per committed work unit.")
@spec_option(
    "--workers", spec=Spec("Decoding processes; 0: in this process [default: up to 2].", low=0), base=int
)
@device_option()
@click.option(
    "--replace",
    is_flag=True,
    help="Retire the dataset's embeddings (and issues) of this model first and re-embed every image, e.g. "
    "with another --detector.",
)
@pass_options
def embed(
    opts: Options,
    dataset: str,
    model: str,
    detector: str,
    batch_size: int,
    unit_size: int,
    workers: int | None,
    device: str | None,
    replace: bool,
) -> None:
    """Detect, align and embed every image of DATASET; resumable, one shard per work unit."""
    from synthdb.embed_dataset import embed_dataset

    with opts.open() as ctx:
        report = embed_dataset(
            ctx, dataset, model, detector, batch_size, unit_size, workers, device, opts.quiet, replace
        )
    issues = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in report.issues.items()) or "no issues"
    if report.run_id is None:
        click.echo(f"{dataset}: all {report.already_done} images already embedded with {model}; {issues}")
        return
    click.echo(
        f"{dataset}: {report.embedded} images embedded with {model} ({detector}), "
        f"{report.already_done} done before; in the dataset: {issues} (run {report.run_id}; "
        "see catalog.sample_issue)"
    )
