"""Identity-analysis commands: index build, check nearest, stats histogram/separability, report.

Each command parses its options, calls one ``synthdb.analysis`` function and prints what it returned;
every distance printed names its unit (radians for angles).
"""

from __future__ import annotations

import json

import click

from synthdb.cli.app import Options, cli, echo_rows, pass_options

_DEVICE = click.option(
    "--device", help="torch device for the pair scans (default: cuda when visible, else cpu)."
)


@cli.group(name="index")
def index_group() -> None:
    """FAISS indexes over committed embeddings."""


@index_group.command(name="build")
@click.argument("dataset")
@click.option("--model", required=True, help="Embedder whose committed embeddings are indexed.")
@click.option(
    "--factory",
    default="Flat",
    show_default=True,
    help="FAISS index_factory string: Flat, IVF4096,Flat, HNSW32, ...",
)
@click.option("--per", type=click.Choice(["sample", "identity"]), default="sample", show_default=True)
@click.option("--rebuild", is_flag=True, help="Rebuild even when the index covers every committed shard.")
@click.option(
    "--target-recall", default=0.99, show_default=True, help="recall@1 the default nprobe/efSearch reaches."
)
@pass_options
def index_build(
    opts: Options, dataset: str, model: str, factory: str, per: str, rebuild: bool, target_recall: float
) -> None:
    """Build (or extend, or reuse when fresh) the index of DATASET's embeddings."""
    from synthdb.analysis.index import build_index

    with opts.open() as ctx:
        info = build_index(ctx, dataset, model, factory, per, rebuild, target_recall, quiet=opts.quiet)
    rows = [
        ("index", info.id),
        ("action", info.action),
        ("vectors", f"{info.ntotal:,} ({per})"),
        ("file", info.path),
    ]
    if info.search_param:
        measured = (
            "" if info.recall_at_1 is None else f" (recall@1 {info.recall_at_1:.4f} measured on the data)"
        )
        rows.append((info.search_param, f"{info.search_value}{measured}"))
    echo_rows(rows)


@cli.group()
def check() -> None:
    """Checks whose results are committed as result shards and runs."""


@check.command(name="nearest")
@click.argument("query")
@click.option("--against", required=True, help="REF dataset (the same as QUERY finds duplicate identities).")
@click.option("--model", required=True, help="Embedder of both datasets.")
@click.option("--k", default=5, show_default=True, help="Nearest REF identities per query identity.")
@click.option(
    "--threshold",
    type=float,
    help="Angle in radians below which a match is a leak [default: the embedder's threshold].",
)
@click.option(
    "--by",
    type=click.Choice(["identity", "sample"]),
    default="identity",
    show_default=True,
    help="identity: centroids; sample: the reference sample against every REF sample.",
)
@click.option("--factory", default="Flat", show_default=True, help="FAISS index of the REF side.")
@click.option("--show", default=20, show_default=True, help="Leaks (or nearest pairs) to print.")
@pass_options
def check_nearest_cmd(
    opts: Options,
    query: str,
    against: str,
    model: str,
    k: int,
    threshold: float | None,
    by: str,
    factory: str,
    show: int,
) -> None:
    """For every QUERY identity, the nearest REF identities and their angles (rad); leaks listed."""
    from synthdb.analysis.nearest import check_nearest

    with opts.open() as ctx:
        report = check_nearest(ctx, query, against, model, k, threshold, by, factory, opts.quiet)
    queries = len(report.query_identity_ids)
    click.echo(
        f"{report.leaking_queries} of {queries} identities of {query} have a match in {against} "
        f"below {report.threshold_rad:g} rad ({int(report.leak_mask.sum())} pairs)"
    )
    listed = report.matches(leaks_only=True)[:show]
    for m in listed:
        click.echo(f"  {m.query_identity:<24} -> {m.ref_identity:<24} rank {m.rank}  {m.angle_rad:.4f} rad")
    click.echo(
        f'run {report.run_id}; all rows: synthdb query "SELECT * FROM nearest WHERE run_id = {report.run_id}"'
    )


@cli.group()
def stats() -> None:
    """Statistics over all pairs of a dataset."""


@stats.command(name="histogram")
@click.argument("dataset")
@click.option(
    "--model", help="Embedder (embedding space) or generator (latent space); optional when only one."
)
@click.option(
    "--class", "pair_class", type=click.Choice(["inter", "intra", "both"]), default="both", show_default=True
)
@click.option(
    "--space",
    type=click.Choice(["embedding", "latent"]),
    default="embedding",
    show_default=True,
    help="embedding: angles (rad); latent: Euclidean distances.",
)
@click.option("--column", help="Latent column (default w).")
@click.option("--bins", default=1024, show_default=True)
@click.option("--range", "value_range", nargs=2, type=float, help="lo hi (default 0 pi rad; latents: 0 max).")
@click.option(
    "--export", type=click.Path(dir_okay=False), help=".dat file: left edge, then one column per class."
)
@click.option("--plot", type=click.Path(dir_okay=False), help=".png or .svg figure.")
@click.option("--ict", type=float, help="Draw the ICT line at this angle (rad) on --plot.")
@_DEVICE
@pass_options
def stats_histogram(
    opts: Options,
    dataset: str,
    model: str | None,
    pair_class: str,
    space: str,
    column: str | None,
    bins: int,
    value_range: tuple[float, float] | None,
    export: str | None,
    plot: str | None,
    ict: float | None,
    device: str | None,
) -> None:
    """Exact inter/intra-class distance histograms over all pairs of DATASET."""
    from synthdb.analysis.histogram_report import histogram_report

    with opts.open() as ctx:
        report = histogram_report(
            ctx,
            dataset,
            model,
            pair_class,
            space,
            bins,
            value_range or None,
            column,
            device,
            opts.quiet,
            export=export,
            plot=plot,
            ict=ict,
        )
    result, classes = report.histogram, report.classes
    rows = [
        ("space", f"{result.space} of {result.model} ({result.metric}, {result.unit})"),
        ("samples", f"{result.samples:,} in {result.identities:,} identities"),
        ("range", f"[{result.edges[0]:g}, {result.edges[-1]:g}] {result.unit}, {len(result.edges) - 1} bins"),
    ]
    for name, h in classes:
        rows.append(
            (
                f"{name} pairs",
                f"{h.pairs:,} ({h.below:,} below, {h.above:,} above the range; "
                f"{h.edge_pairs:,} within float32 error of a bin edge)",
            )
        )
    if result.closest_inter is not None:
        distance, a, b = result.closest_inter
        rows.append(("closest inter pair", f"{distance:.6f} {result.unit} (samples {a}, {b})"))
    if result.dropped_without_identity:
        rows.append(("left out", f"{result.dropped_without_identity} samples without an identity"))
    if report.dat is not None:
        rows.append(("exported", f"{report.dat} (left edge, {', '.join(n for n, _ in classes)})"))
    if report.figure is not None:
        rows.append(("plot", report.figure))
    echo_rows(rows)


@stats.command(name="separability")
@click.argument("dataset")
@click.option("--model", help="Embedder; optional when the dataset has embeddings of one model only.")
@click.option("--ict", type=float, help="Inter-class threshold, radians [default: the embedder's threshold].")
@click.option("--bins", default=1024, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@_DEVICE
@pass_options
def stats_separability(
    opts: Options,
    dataset: str,
    model: str | None,
    ict: float | None,
    bins: int,
    as_json: bool,
    device: str | None,
) -> None:
    """Min/mean inter-class angle, pairs below the ICT, intra-class spread, EER and FMR/FNMR points."""
    from synthdb.analysis.separability import separability

    with opts.open() as ctx:
        result = separability(ctx, dataset, model, ict, bins, device=device, quiet=opts.quiet)
    shown = result.headline(with_spread=True)
    if as_json:
        click.echo(json.dumps({"dataset": dataset, "model": result.model, **shown}, indent=2))
        return
    echo_rows([("model", result.model), *shown.items(), *(("note", n) for n in result.notes)])


@cli.command()
@click.argument("dataset")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Directory for index.html and figures."
)
@click.option("--model", help="Embedder; optional when the dataset has embeddings of one model only.")
@click.option("--ict", type=float, help="Inter-class threshold, radians [default: the embedder's threshold].")
@_DEVICE
@pass_options
def report(
    opts: Options, dataset: str, out: str, model: str | None, ict: float | None, device: str | None
) -> None:
    """One static HTML page about DATASET: numbers, figures, provenance."""
    from synthdb.analysis.report import report as write_report

    with opts.open() as ctx:
        result = write_report(ctx, dataset, out, model, ict, device=device, quiet=opts.quiet)
    click.echo(f"{result.path} ({len(result.figures)} figures)")
