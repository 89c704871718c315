"""``synthdb export DATASET --format F OUT``: write a dataset in a format trainers and evaluators read."""

from __future__ import annotations

import click

from synthdb.cli.app import Options, cli, pass_options

FORMAT_NAMES = ("imagefolder", "recordio", "webdataset", "bob", "pairs-bin", "synthetics-h5")


@cli.command(name="export")
@click.argument("dataset")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(FORMAT_NAMES),
    help="imagefolder | recordio (insightface) | webdataset | bob (CSVDatabase) | pairs-bin "
    "(insightface .bin) | synthetics-h5 (reference samples.h5).",
)
@click.option("--where", help="SQL predicate over sample s and identity i, e.g. \"s.role = 'reference'\".")
@click.option("--crop", help="Align into this preset (arcface, iresnet_bob, ffhq, dlib150, ...).")
@click.option(
    "--from",
    "source",
    help="Geometry of the images for --crop: mtcnn/dlib (photos) or the "
    "generator's preset (ffhq256, ...). Default: the dataset's, else mtcnn.",
)
@click.option(
    "--size",
    type=int,
    help="Output side in pixels (default: 112 for recordio and pairs-bin, else the image's own).",
)
@click.option("--quality", type=int, default=95, show_default=True, help="JPEG quality.")
@click.option("--protocol", help="Catalog protocol (bob; pairs-bin: take its pairs).")
@click.option("--group", help="Protocol group holding the pairs (pairs-bin).")
@click.option("--pairs", type=int, help="pairs-bin: sample this many pairs (default 6000), half genuine.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of sampled pairs.")
@click.option("--embedding-model", help="synthetics-h5: the embedding space to include.")
@click.option(
    "--shard-max-count",
    type=int,
    default=100_000,
    show_default=True,
    help="webdataset: samples per shard at most.",
)
@click.option(
    "--shard-max-size",
    type=int,
    default=1_000_000_000,
    show_default=True,
    help="webdataset: bytes per shard at most.",
)
@click.option("--workers", type=int, help="Image threads (default: CPU count, at most 8).")
@pass_options
def export_command(
    opts: Options,
    dataset: str,
    out: str,
    fmt: str,
    where: str | None,
    crop: str | None,
    source: str | None,
    size: int | None,
    quality: int,
    protocol: str | None,
    group: str | None,
    pairs: int | None,
    seed: int,
    embedding_model: str | None,
    shard_max_count: int,
    shard_max_size: int,
    workers: int | None,
) -> None:
    """Export DATASET into the folder OUT; re-running after an interruption resumes it."""
    from synthdb.export.api import export

    with opts.open() as ctx:
        report = export(
            ctx,
            dataset,
            fmt,
            out,
            where=where,
            crop=crop,
            source=source,
            size=size,
            quality=quality,
            protocol=protocol,
            group=group,
            pairs=pairs,
            seed=seed,
            embedding_model=embedding_model,
            shard_max_count=shard_max_count,
            shard_max_bytes=shard_max_size,
            workers=workers,
            quiet=opts.quiet,
        )
    if report.note:
        click.echo(report.note)
        return
    counts, output = report.manifest["counts"], report.manifest["output"]
    facts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in output.items() if isinstance(v, int))
    click.echo(
        f"exported '{report.dataset}' as {report.format} to {report.out} (run {report.run_id}): "
        f"{counts['selected']} samples selected; {facts}"
    )
    for kind, n in counts["excluded"].items():
        click.echo(f"{n} samples left out: {kind.replace('_', ' ')}")
    if counts["skipped"]:
        first = report.manifest["skipped"][0]
        click.echo(
            f"{counts['skipped']} samples skipped ({counts['skipped_by_kind']}); first: "
            f"{first['key']}: {first['reason']} (all in {report.out}/manifest.json)"
        )
