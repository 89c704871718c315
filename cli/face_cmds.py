"""Face-model commands: models list/show/add/fetch, crop, embed."""

from __future__ import annotations

import sys

import click

from synthdb.cli.app import Options, cli, echo_rows, pass_options


@cli.group()
def models() -> None:
    """Networks synthdb knows (model cards) and their weights on this machine."""


@models.command(name="list")
@click.option("--kind", type=click.Choice(["embedder", "generator", "detector", "landmarks", "perceptual"]))
@pass_options
def models_list(opts: Options, kind: str | None) -> None:
    """List model cards, whether their weights are here, and their licences."""
    from synthdb import models as registry

    with opts.open() as ctx:
        rows = registry.status(ctx, kind)
    width = max(len(r.card.name) for r in rows)
    for r in rows:
        where = "embedded" if r.card.embedded else ("ready" if r.weights else "missing")
        commercial = {True: "commercial ok", False: "non-commercial"}.get(
            r.card.commercial_use, "terms unclear"
        )
        click.echo(f"{r.card.name.ljust(width)}  {r.card.kind:<10}  {where:<8}  {commercial}")


@models.command(name="show")
@click.argument("name")
@pass_options
def models_show(opts: Options, name: str) -> None:
    """Show a model card and where its weights are."""
    from synthdb import models as registry
    from synthdb.nets.cards import get_card

    card = get_card(name)
    with opts.open() as ctx:
        path = registry.weights_path(ctx, card)
    fields = [(k, v) for k, v in vars(card).items() if v not in ("", None, {})]
    echo_rows([*fields, ("weights", path or "not on this machine")])


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
    from synthdb import models as registry

    with opts.open() as ctx:
        click.echo(f"{name}: weights at {registry.add(ctx, name, file)}")


@models.command(name="fetch")
@click.argument("name")
@pass_options
def models_fetch(opts: Options, name: str) -> None:
    """Download a model's weights (sha256-checked) and register them."""
    from synthdb import models as registry

    with opts.open() as ctx:
        click.echo(f"{name}: weights at {registry.fetch(ctx, name, progress=not opts.quiet)}")


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--from", "source", required=True, help="Input geometry: mtcnn, dlib, ffhq, ffhq256, resize, ..."
)
@click.option("--to", "target", required=True, help="Output preset: arcface, ffhq, dlib150, iresnet_bob, ...")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory for PNGs.")
@click.option("--device", default="cpu", show_default=True)
def crop(images: tuple[str, ...], source: str, target: str, out: str, device: str) -> None:
    """Crop face images from one preset's geometry into another's."""
    from synthdb.faces.crop import crop_images

    report = crop_images(list(images), source, target, out, device=device)
    for result in report.results:
        click.echo(f"{result.source} -> {result.output}" if result.ok else f"{result.source}: {result.error}")
    click.echo(f"{report.written} of {len(report.results)} images cropped into {out}")
    if report.failed:
        sys.exit(1)


@cli.command()
@click.argument("dataset")
@click.option("--model", default="dlib-resnet", show_default=True, help="Embedder model card.")
@click.option(
    "--detector",
    type=click.Choice(["mtcnn", "dlib", "none"]),
    default="mtcnn",
    show_default=True,
    help="none: the images are already aligned crops of the model's preset.",
)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--unit-size", default=256, show_default=True, help="Samples per committed work unit.")
@click.option("--workers", type=int, help="Decoding processes (default: up to 2).")
@click.option("--device", default="cpu", show_default=True)
@pass_options
def embed(
    opts: Options,
    dataset: str,
    model: str,
    detector: str,
    batch_size: int,
    unit_size: int,
    workers: int | None,
    device: str,
) -> None:
    """Detect, align and embed every image of DATASET; resumable, one shard per work unit."""
    from synthdb.faces.embed_dataset import embed_dataset

    with opts.open() as ctx:
        report = embed_dataset(
            ctx, dataset, model, detector, batch_size, unit_size, workers, device, opts.quiet
        )
    if report.run_id is None:
        click.echo(f"{dataset}: all {report.already_done} images already embedded with {model}")
        return
    issues = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in report.issues.items()) or "no issues"
    click.echo(
        f"{dataset}: {report.embedded} images embedded with {model} ({detector}), "
        f"{report.already_done} done before; {issues} (run {report.run_id}; "
        "see catalog.sample_issue)"
    )
