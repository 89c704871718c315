"""Identity-analysis commands: index build, check nearest, stats histogram/separability, report.

Each command parses its options, calls one ``synthdb.analysis`` function and prints what it returned;
every distance printed names its unit (radians for angles).
"""

from __future__ import annotations

import json

import click

from synthdb.analysis.params import EvaluateParams
from synthdb.cli.app import Options, cli, echo_rows, pass_options
from synthdb.cli.params import angle_option, build, count_option, device_option, options, spec_option
from synthdb.params import Spec

ICT_HELP = "Inter-class threshold, radians [default: the embedder's threshold]."


@cli.group(name="index")
def index_group() -> None:
    """FAISS indexes over committed embeddings."""


@index_group.command(name="build")
@click.argument("dataset")
@click.option("--model", help="Embedder whose embeddings are indexed [default: the dataset's only one].")
@click.option(
    "--factory",
    default="Flat",
    show_default=True,
    help="FAISS index_factory string: Flat, IVF4096,Flat, HNSW32, ...",
)
@spec_option(
    "--by",
    "per",
    spec=Spec(
        "sample: one vector per sample; identity: the normalised centroid of each identity.",
        choices=("sample", "identity"),
    ),
    default="sample",
    hidden_alias="--per",
)
@click.option("--rebuild", is_flag=True, help="Rebuild even when the index covers every committed shard.")
@spec_option(
    "--target-recall",
    spec=Spec("recall@1 (a fraction) the default nprobe/efSearch reaches.", low=0, low_open=True, high=1),
    base=float,
    default=0.99,
)
@pass_options
def index_build(
    opts: Options,
    dataset: str,
    model: str | None,
    factory: str,
    per: str,
    rebuild: bool,
    target_recall: float,
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
@click.option("--model", help="Embedder of both datasets [default: the one they share, when only one].")
@count_option("--k", 5, "Nearest REF identities per query identity.")
@angle_option(
    "--threshold", "Angle in radians below which a match is a leak [default: the embedder's threshold]."
)
@click.option(
    "--by",
    type=click.Choice(["identity", "sample", "all"]),
    default="identity",
    show_default=True,
    help="identity: centroids; sample: the reference sample against every REF sample; all: every sample "
    "against every REF sample, and byte-identical image files (near and exact duplicates).",
)
@click.option("--factory", default="Flat", show_default=True, help="FAISS index of the REF side.")
@count_option("--show", 20, "Leaks (and exact duplicates) to print.")
@pass_options
def check_nearest_cmd(
    opts: Options,
    query: str,
    against: str,
    model: str | None,
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
    keys = report.sample_keys
    for m in report.matches(leaks_only=True)[:show]:
        samples = f" ({keys[m.query_sample_id]} ~ {keys[m.ref_sample_id]})" if keys else ""
        click.echo(
            f"  {m.query_identity:<24} -> {m.ref_identity:<24} rank {m.rank}  {m.angle_rad:.4f} rad{samples}"
        )
    if by == "all":
        click.echo(
            f"{len(report.exact)} pairs of byte-identical image files"
            + (f" ({report.unreadable} image files could not be read)" if report.unreadable else "")
        )
        for d in report.exact[:show]:
            note = " (same identity)" if d.same_identity else ""
            click.echo(f"  {d.query_key} == {d.ref_key}  sha256 {d.sha256[:16]}{note}")
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
    "--class",
    "pair_class",
    type=click.Choice(["inter", "intra", "both"]),
    default="both",
    show_default=True,
    help="Pairs of different identities (inter), of one identity (intra), or both.",
)
@click.option(
    "--space",
    type=click.Choice(["embedding", "latent"]),
    default="embedding",
    show_default=True,
    help="embedding: angles (rad); latent: Euclidean distances.",
)
@click.option("--column", help="Latent column, --space latent [default: w].")
@count_option("--bins", None, "Histogram bins [default: 2 n^(1/3) for n pairs, 10 to 1024].")
@click.option(
    "--range",
    "value_range",
    nargs=2,
    type=float,
    help="lo hi: radians for angles, Euclidean latent distances [default: the range the pairs occupy].",
)
@click.option(
    "--export", type=click.Path(dir_okay=False), help=".dat file: left edge, then one column per class."
)
@click.option("--plot", type=click.Path(dir_okay=False), help=".png or .svg figure.")
@angle_option("--ict", "Draw the threshold line at this angle, radians, on --plot [default: the embedder's].")
@count_option("--sample", None, "Estimate the inter-class histogram from N random pairs, bounds per bin.")
@device_option()
@pass_options
def stats_histogram(
    opts: Options,
    dataset: str,
    model: str | None,
    pair_class: str,
    space: str,
    column: str | None,
    bins: int | None,
    value_range: tuple[float, float] | None,
    export: str | None,
    plot: str | None,
    ict: float | None,
    sample: int | None,
    device: str | None,
) -> None:
    """Exact inter/intra-class distance histograms over all pairs of DATASET (under torchrun, the pairs are
    spread over the processes and rank 0 reports)."""
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
            sample=sample,
        )
    result, classes = report.histogram, report.classes
    if not result.leader:
        return
    rows = [
        ("space", f"{result.space} of {result.model} ({result.metric}, {result.unit})"),
        ("samples", f"{result.samples:,} in {result.identities:,} identities"),
        ("range", f"[{result.edges[0]:g}, {result.edges[-1]:g}] {result.unit}, {len(result.edges) - 1} bins"),
    ]
    if result.processes > 1:
        rows.append(("processes", f"{result.processes} (torchrun), counts summed exactly"))
    for name, h in classes:
        rows.append(
            (
                f"{name} pairs",
                f"{h.pairs:,} ({h.below:,} below, {h.above:,} above the range; "
                f"{h.edge_pairs:,} within float32 error of a bin edge)",
            )
        )
        if h.bounds is not None:
            widest = float((h.bounds[1] - h.bounds[0]).max() / 2) if len(h.counts) else 0.0
            rows.append(
                (
                    f"{name} estimate",
                    f"from {h.sampled:,} random pairs: every bin within its bounds with {h.confidence:.0%} "
                    f"confidence (widest +-{widest:,.0f} pairs)",
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
@angle_option("--ict", ICT_HELP)
@count_option("--bins", 1024, "Histogram bins over [0, pi] rad (the EER uses 2^20 finer cells).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the numbers as JSON: angles in radians, rates in [0, 1]."
)
@device_option()
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
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    shown = result.headline(with_spread=True)
    echo_rows([("model", result.model), *shown.items(), *(("note", n) for n in result.notes)])


@cli.command()
@click.argument("dataset")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Directory for index.html and figures."
)
@click.option("--model", help="Embedder; optional when the dataset has embeddings of one model only.")
@angle_option("--ict", ICT_HELP)
@count_option("--bins", None, "Histogram bins [default: 2 n^(1/3) for n pairs, 10 to 1024].")
@click.option(
    "--range", "value_range", nargs=2, type=float, help="Histogram lo hi, rad [default: the pairs' range]."
)
@device_option()
@pass_options
def report(
    opts: Options,
    dataset: str,
    out: str,
    model: str | None,
    ict: float | None,
    bins: int | None,
    value_range: tuple[float, float] | None,
    device: str | None,
) -> None:
    """One static HTML page about DATASET: numbers, figures, samples, issues, leakage, provenance."""
    from synthdb.analysis.report import report as write_report

    with opts.open() as ctx:
        result = write_report(
            ctx, dataset, out, model, ict, bins, value_range or None, device=device, quiet=opts.quiet
        )
    click.echo(f"{result.path} ({len(result.figures)} figures)")


@cli.group()
def evaluate() -> None:
    """How well an embedder verifies a dataset's pairs."""


@evaluate.command(name="pairs")
@click.argument("dataset")
@options(EvaluateParams)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON: angles in radians.")
@pass_options
def evaluate_pairs_cmd(opts: Options, dataset: str, as_json: bool, **values: object) -> None:
    """10-fold verification accuracy (insightface's protocol) and TAR at FAR (bob's) of DATASET's pairs:
    a protocol's (LFW View 2, IJB-C) or a pairs-bin export's."""
    from synthdb.analysis.evaluate import evaluate_pairs

    params = build(EvaluateParams, values, dataset=dataset)
    with opts.open() as ctx:
        result = evaluate_pairs(ctx, params)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    unscored = f"; {result.unscored} left out: a side without an embedding" if result.unscored else ""
    rows = [
        (
            "pairs",
            f"{result.pairs} of {result.source} ({result.genuine} genuine, "
            f"{result.impostor} impostor{unscored})",
        ),
        ("model", result.model),
        (
            f"accuracy ({len(result.fold_accuracy)} folds)",
            f"{result.accuracy:.5f} +- {result.accuracy_std:.5f}",
        ),
        ("fold thresholds", " ".join(f"{t:.4f}" for t in result.fold_threshold_rad) + " rad"),
    ]
    for p in result.tar_at_far:
        rows.append(
            (
                f"TAR at FAR {p.far_target:g}",
                f"{p.tar:.5f} (threshold {p.threshold_rad:.4f} rad, FAR {p.far:.2e})",
            )
        )
    if result.not_estimable:
        targets = ", ".join(f"{t:g}" for t in result.not_estimable)
        rows.append(("not estimable", f"TAR at FAR {targets}: fewer than one impostor pair at that rate"))
    if result.scores_file is not None:
        rows.append(("scores", f"{result.scores_file} (bob reads it with bob.bio.base.score.load.split)"))
    echo_rows(rows)


@cli.command(name="show")
@click.argument("sample")
@click.option("--dataset", help="The dataset of SAMPLE when it is a key that several datasets have.")
@click.option(
    "--crop-out",
    type=click.Path(file_okay=False),
    help="Also write the aligned crop each embedding was computed from, as DIR/<model>/<file>.png.",
)
@pass_options
def show_cmd(opts: Options, sample: str, dataset: str | None, crop_out: str | None) -> None:
    """Everything about one SAMPLE (an id or a key): its image, crops, issues, vectors and the run that
    made it."""
    from synthdb.analysis.show import show_sample

    with opts.open() as ctx:
        view = show_sample(ctx, sample, dataset, crop_out)
    row = view.sample
    identity = "none" if row.identity is None else f"{row.identity} (id {row.identity_id})"
    size = f", {view.image_size[0]}x{view.image_size[1]} px" if view.image_size else ""
    rows: list[tuple[str, object]] = [
        ("sample", f"{row.id} {row.key}"),
        ("dataset", row.dataset),
        ("identity", identity),
        ("role", row.role + (f", label {row.label}" if row.label else "")),
        ("image", f"{view.image or '-'} ({view.image_state}{size})"),
    ]
    if row.attributes:
        rows.append(("attributes", json.dumps(row.attributes, sort_keys=True)))
    if view.made_by:
        made = view.made_by
        rows.append(
            (
                "made by",
                f"run {made['run']} ({made['kind']}, {made['algorithm'] or '-'}, seed {made['seed']})",
            )
        )
    for v in view.vectors:
        how = f", cropped by {v.detector}" if v.detector else ""
        rows.append(
            (
                f"{v.content} {v.space}",
                f"{v.column}: {v.dims} dims, norm {v.norm:.4f} (shard {v.shard_id}, run {v.run_id}{how})",
            )
        )
    for issue in view.issues:
        detail = json.dumps(issue.detail, sort_keys=True) if issue.detail else ""
        rows.append(("issue", f"{issue.kind} in {issue.space} (run {issue.run_id}) {detail}".rstrip()))
    rows += [("crop", path) for path in view.crops]
    echo_rows(rows)
