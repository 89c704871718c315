"""``synthdb report DATASET --out DIR``: one static HTML page about a dataset, with its figures beside it.

The page answers what a paper's dataset section needs: how many identities and samples, how separable the
identities are under an embedder (histograms with the embedder's threshold, EER, FMR/FNMR operating
points where the pairs suffice to estimate them, DET and ROC), how spread each identity is, what the
samples look like (aligned crops of every identity, or a note of how many are not shown), which samples
could not be used (no face, several faces, unreadable), the latest leakage check, and where it all came
from (the runs that made or touched the dataset with their parameters and seeds, and the models with
their licences). It is plain HTML with PNG figures as files next to it: it opens from disk in any
browser, without a server or script, and fits a 1280-pixel-wide window (long hashes and paths wrap).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthdb import defaults
from synthdb.analysis import plots
from synthdb.analysis.binning import fit_to_data
from synthdb.analysis.histogram import resolve_space
from synthdb.analysis.histogram_report import threshold_line
from synthdb.analysis.separability import Operating, Separability, rad_text, separability
from synthdb.analysis.vectors import NO_IDENTITY, sample_rows
from synthdb.catalog import issues, shards
from synthdb.catalog.datasets import DatasetRow, get_dataset
from synthdb.catalog.datasets import dataset_id as lookup_dataset_id
from synthdb.catalog.model_rows import registered_rows
from synthdb.catalog.runs import RunRow, list_runs
from synthdb.catalog.samples import identity_labels
from synthdb.catalog.schema import CheckKind, DatasetKind, RunKind, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.nets.cards import get_card
from synthdb.store.hdf5 import natural_sort_key

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; max-width: 100%; }
table.wide { table-layout: fixed; width: 100%; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td { overflow-wrap: anywhere; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; max-width: 100%; }
img { max-width: 100%; height: auto; }
code { font-size: 0.85em; overflow-wrap: anywhere; }
.identity { display: flex; align-items: center; gap: 0.8em; margin: 0.25em 0; }
.identity .label { flex: 0 0 11em; overflow-wrap: anywhere; font-size: 0.9em; }
.identity img { min-width: 0; }
p.note { color: #555; }
"""
GRID_CELL = 96
DETECTORS = ("mtcnn", "dlib")
DETECT_SIDE = 400
RULE_OF_THREE = 3.0
"""Pairs needed per unit of error rate: with n pairs and no error, the 95 % bound on the rate is 3 / n, so
a rate t is measurable only from 3 / t pairs on."""


@dataclass
class Report:
    path: Path
    figures: list[Path]
    separability: Separability
    numbers: dict[str, str] = field(default_factory=dict)


def _e(value: object) -> str:
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[object]], numeric: set[int] | None = None,
           widths: list[int] | None = None) -> str:  # fmt: skip
    """An HTML table; ``widths`` (percent per column) fixes its layout so long cells wrap, not overflow."""
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{_e(v)}</td>" for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    if widths is None:
        return f"<table><tr>{head}</tr>{body}</table>"
    columns = "".join(f'<col style="width:{w}%">' for w in widths)
    return f'<table class="wide"><colgroup>{columns}</colgroup><tr>{head}</tr>{body}</table>'


# ----------------------------------------------------------------------------------------------- numbers


def _estimable(target: float, pairs: int, what: str) -> str | None:
    """Why a rate ``target`` cannot be estimated from ``pairs`` pairs, or None when it can."""
    needed = math.ceil(RULE_OF_THREE / target)
    if pairs >= needed:
        return None
    return f"not estimable: {pairs:,} {what} pairs; a rate of {target:g} needs {needed:,} or more (rule of 3)"


def _spread_text(sep: Separability, edges: np.ndarray) -> str:
    """The mean inter-class angle with the spread of the angles (std over pairs, from the bins) and the
    numerical error bound of the mean, each said for what it is."""
    mean = rad_text(sep.mean_inter_rad)
    if sep.mean_inter_rad is None or not sep.inter.counts.sum():
        return mean
    mids = (edges[:-1] + edges[1:]) / 2
    weights = sep.inter.counts / sep.inter.counts.sum()
    std = float(np.sqrt(weights @ (mids - sep.mean_inter_rad) ** 2))
    return f"{mean}; std over pairs {std:.4f} rad; the mean is exact to ±{sep.mean_bound_rad:.1e} rad"


def _rate(point: Operating | None) -> str:
    return "n/a" if point is None else f"{point.fmr:.4%} at {rad_text(point.threshold_rad)}"


def _perfect(sep: Separability) -> str | None:
    """A sentence when no threshold makes any error (the DET curve is then empty), else None."""
    if sep.eer is None or sep.eer.fmr > 0 or sep.eer.fnmr > 0:
        return None
    occupied = np.flatnonzero(sep.intra.counts)
    genuine = f" (genuine pairs below {sep.edges[occupied[-1] + 1]:.4f} rad)" if len(occupied) else ""
    return (
        f"perfect separation: every genuine pair is closer than every impostor pair{genuine}, the closest "
        f"impostor pair at {rad_text(sep.min_inter_rad)}: no error at any threshold between, so the DET "
        "curve has no point"
    )


def numbers(sep: Separability) -> dict[str, str]:
    """The headline numbers of the page, each distance with its unit; rates that the pairs cannot support
    say why instead."""
    fraction = "n/a" if sep.below_ict_fraction is None else f"{sep.below_ict_fraction:.4%}"
    out = {
        "samples": f"{sep.samples:,}",
        "identities": f"{sep.identities:,}",
        "inter-class (impostor) pairs": f"{sep.inter_pairs:,}",
        "intra-class (genuine) pairs": f"{sep.intra_pairs:,}",
        "min inter-class angle": rad_text(sep.min_inter_rad),
        "mean inter-class angle": _spread_text(sep, sep.edges),
        "mean intra-class angle": rad_text(sep.mean_intra_rad),
        f"inter-class pairs below the threshold {sep.ict_rad:.3f} rad": (
            f"{sep.below_ict:,} ({fraction}; {sep.ict_edge_pairs} within float32 error of it)"
        ),
        "EER": _rate(sep.eer) + (" (perfect separation)" if _perfect(sep) else ""),
    }
    for target, point in sep.fmr_at_fnmr.items():
        why = _estimable(target, sep.intra_pairs, "genuine")
        out[f"FMR at FNMR {target:g}"] = why or f"{point.fmr:.4%} at {rad_text(point.threshold_rad)}"
    for target, point in sep.fnmr_at_fmr.items():
        why = _estimable(target, sep.inter_pairs, "impostor")
        out[f"FNMR at FMR {target:g}"] = why or f"{point.fnmr:.4%} at {rad_text(point.threshold_rad)}"
    return out


# ------------------------------------------------------------------------------------------------ figures


def _figures(
    out: Path, sep: Separability, ict: float | None, title: str, histogram: tuple | None
) -> list[Path]:
    """The histogram (bins following the data unless ``histogram`` holds explicit ones) with the
    threshold line (the embedder's unless ``ict`` is given), DET and ROC."""
    if histogram is None:
        edges, (inter, intra) = fit_to_data(sep.edges, [sep.inter, sep.intra])
    else:
        edges, inter, intra = histogram
    line = threshold_line(sep.model, ict) or (sep.ict_rad, f"threshold {sep.ict_rad:.3f} rad")
    figures = [
        plots.plot_histograms(out / name, edges, inter, intra, "rad", line, title)
        for name in ("histogram.png", "histogram.svg")
    ]
    if sep.eer is not None:
        note = "perfect separation:\nno error at any threshold" if _perfect(sep) else None
        det = plots.plot_det(out / "det.png", sep.curve_fmr, sep.curve_fnmr, sep.eer.fmr, title, note)
        figures.append(det)
        figures.append(plots.plot_roc(out / "roc.png", sep.curve_fmr, sep.curve_fnmr, title))
    return figures


# -------------------------------------------------------------------------------------------- sample grid


@dataclass
class GridRow:
    """One identity of the sample grid: its label, its strip of crops, and how many samples it has."""

    label: str
    strip: Path
    shown: int
    samples: int
    uncropped: int


@dataclass
class Grid:
    rows: list[GridRow]
    identities: int
    preset: str


def embed_detector(ctx: Context, dataset: str, model: str) -> str:
    """The detector the newest embed run of ``dataset`` with ``model`` used (the crops its embeddings come
    from), else the default one."""
    for run in list_runs(ctx.catalog, limit=None, kind=RunKind.EMBED):
        if run.params.get("dataset") == dataset and run.params.get("model") == model:
            detector = run.params.get("detector")
            if detector in DETECTORS:
                return str(detector)
    return defaults.DETECTOR


class _Crops:
    """Aligned crops for the grid: photos through a detector, generated images from their framing."""

    def __init__(self, ctx: Context, dataset: DatasetRow, detector_name: str) -> None:
        from synthdb import zoo
        from synthdb.faces.align import Cropper

        recorded = (dataset.attributes or {}).get("preset")
        photos = dataset.kind == DatasetKind.GENUINE or not isinstance(recorded, str)
        source = detector_name if photos else recorded
        detector = zoo.detector(ctx, source) if photos else None
        self.cropper = Cropper(source, "arcface", detector=detector, value_range=(0.0, 255.0))
        self.root = Path(str(dataset.root))

    def __call__(self, relpath: str) -> tuple[np.ndarray, bool]:
        """(GRID_CELL square cell, aligned): an unaligned photo comes letterboxed, an unusable file grey."""
        import torch

        from synthdb.faces.detect import load_image
        from synthdb.untrusted import image_header, resolve_inside

        try:
            path = resolve_inside(self.root, relpath)
            image_header(path)  # size and pixel caps before decoding
            pixels = load_image(path)
        except SynthdbError:
            return np.full((GRID_CELL, GRID_CELL, 3), 200, np.uint8), False
        pixels = _shrunk(pixels)  # a 96-pixel cell needs no more, and detection cost grows with pixels
        batch = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            crops, statuses = self.cropper(batch)
        if not statuses[0].ok:
            return _letterbox(pixels), False
        crop = crops[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return _letterbox(crop), True


def _shrunk(pixels: np.ndarray) -> np.ndarray:
    """The photo scaled down to fit DETECT_SIDE pixels (unchanged when it fits)."""
    from PIL import Image

    if max(pixels.shape[:2]) <= DETECT_SIDE:
        return pixels
    image = Image.fromarray(pixels)
    image.thumbnail((DETECT_SIDE, DETECT_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _letterbox(pixels: np.ndarray) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(pixels)
    image.thumbnail((GRID_CELL, GRID_CELL))
    cell = Image.new("RGB", (GRID_CELL, GRID_CELL), "white")
    cell.paste(image, ((GRID_CELL - image.width) // 2, (GRID_CELL - image.height) // 2))
    return np.asarray(cell)


def _grid(
    ctx: Context, did: int, row: DatasetRow, model: str, out: Path, identities: int, per_identity: int
) -> Grid | None:
    """The first ``identities`` identities in natural order, ``per_identity`` aligned crops each (photos
    aligned from the detector their embeddings were made with)."""
    if row.root is None:
        return None
    rows = sample_rows(ctx, did)
    usable = np.array([p is not None for p in rows["path"]], np.bool_) & (rows["identity_id"] != NO_IDENTITY)
    present = np.unique(rows["identity_id"][usable])
    if not len(present):
        return None
    labels = identity_labels(ctx.catalog, present)
    ordered = sorted(present.tolist(), key=lambda i: natural_sort_key(labels.get(int(i), str(i))))
    crops = _Crops(ctx, row, embed_detector(ctx, row.name, model))
    grid = Grid([], len(ordered), "arcface")
    for n, identity in enumerate(ordered[:identities]):
        mine = np.flatnonzero(usable & (rows["identity_id"] == identity))
        mine = sorted(mine.tolist(), key=lambda i: natural_sort_key(rows["key"][i]))
        cells = [crops(rows["path"][i]) for i in mine[:per_identity]]
        marked = [not ok for _, ok in cells]
        strip = plots.sample_strip(out / "samples" / f"{n:04d}.png", [c for c, _ in cells], marked)
        label = labels.get(int(identity), str(identity))
        grid.rows.append(GridRow(label, strip, len(cells), len(mine), sum(marked)))
    return grid


def _grid_section(grid: Grid | None, out: Path) -> str:
    if grid is None:
        return "<h2>Samples</h2><p>The dataset has no image files to show.</p>"
    rows = []
    for r in grid.rows:
        total = f"{r.samples} sample{'s' if r.samples > 1 else ''}"
        more = f"{r.shown} of {total}" if r.samples > r.shown else total
        unaligned = f"; {r.uncropped} without a face to align (red frame)" if r.uncropped else ""
        rows.append(
            f'<div class="identity"><span class="label">{_e(r.label)}<br><small>{_e(more + unaligned)}'
            f'</small></span><img src="{_e(r.strip.relative_to(out).as_posix())}" alt="{_e(r.label)}"></div>'
        )
    hidden = grid.identities - len(grid.rows)
    note = (
        f'<p class="note" id="grid-more">{hidden:,} more identities not shown (the first {len(grid.rows)} in '
        "natural order of their labels are)</p>"
        if hidden
        else f'<p class="note" id="grid-more">All {grid.identities:,} identities are shown.</p>'
    )
    intro = f"<p>One row per identity: crops aligned to the {_e(grid.preset)} template.</p>"
    return f'<h2>Samples</h2>{intro}<div id="grid">{"".join(rows)}</div>{note}'


# ---------------------------------------------------------------------------------------------- sections


def _spread_section(sep: Separability, ctx: Context) -> str:
    spread = sep.spread
    if len(spread.identity_ids) == 0:
        return ""
    summary = _table(
        ["statistic over identities", "mean angle to centroid", "max angle to centroid"],
        [
            [what, rad_text(float(f(spread.mean_rad))), rad_text(float(f(spread.max_rad)))]
            for what, f in (("median", np.median), ("mean", np.mean), ("max", np.max))
        ],
        {1, 2},
    )
    widest = np.argsort(-spread.mean_rad)[:10]
    labels = identity_labels(ctx.catalog, spread.identity_ids[widest])
    rows = [
        [
            labels.get(int(spread.identity_ids[i]), spread.identity_ids[i]),
            int(spread.samples[i]),
            rad_text(float(spread.mean_rad[i])),
            rad_text(float(spread.max_rad[i])),
        ]
        for i in widest
    ]
    detail = _table(
        ["identity", "samples", "mean angle to centroid", "max angle to centroid"], rows, {1, 2, 3}
    )
    return f"<h2>Intra-class spread</h2>{summary}<h3>Widest identities</h3>{detail}"


def _issues_section(ctx: Context, did: int) -> str:
    """Samples a run could not use (no face, several faces, unreadable), by model and kind."""
    counted = issues.counts_by_space(ctx.catalog, did)
    if not counted:
        return '<h2 id="issues">Sample issues</h2><p>No run recorded an issue with a sample of it.</p>'
    counts = [[c.space or "", c.kind.replace("_", " "), c.samples] for c in counted]
    examples = issues.examples(ctx.catalog, did, 20)
    first = [[key, kind.replace("_", " "), space or ""] for key, kind, space in examples]
    table = _table(["model", "issue", "samples"], counts, {2})
    listed = _table(["sample", "issue", "model"], first)
    return (
        '<h2 id="issues">Sample issues</h2><p>A sample with an issue is left out of what needed it (an '
        "embedding, a crop), never silently: several faces means the largest was used.</p>"
        f"{table}<h3>First ones</h3>{listed}"
    )


def _nearest_section(ctx: Context, dataset: str) -> str:
    """The latest leakage checks (``check nearest``) with this dataset on either side."""
    checks = [
        r
        for r in list_runs(ctx.catalog, limit=None, kind=RunKind.CHECK)
        if r.algorithm == CheckKind.NEAREST and dataset in (r.params.get("query"), r.params.get("against"))
    ][:5]
    if not checks:
        return (
            '<h2 id="nearest">Leakage (nearest identities)</h2><p>No leakage check involves this dataset: '
            f"<code>synthdb check nearest {_e(dataset)} --against DATASET --model MODEL</code> runs one.</p>"
        )
    rows = []
    for r in checks:
        s = r.summary or {}
        angle = s.get("min_angle_rad")
        rows.append([
            r.id, r.params.get("query"), r.params.get("against"), r.params.get("model"), r.params.get("by"),
            f"{r.params.get('threshold_rad', float('nan')):.4f} rad", s.get("queries", ""),
            s.get("leaking_queries", ""), s.get("leak_pairs", ""),
            "" if angle is None else rad_text(angle), r.status,
        ])  # fmt: skip
    headers = ["run", "query", "against", "model", "by", "threshold", "query identities", "leaking",
               "leak pairs", "closest", "status"]  # fmt: skip
    return (
        '<h2 id="nearest">Leakage (nearest identities)</h2><p>The latest checks, newest first; a leak is '
        "a query identity with a match below the threshold.</p>"
        f"{_table(headers, rows, {6, 7, 8}, [5, 10, 10, 10, 7, 10, 9, 8, 8, 12, 11])}"
    )


def _provenance(ctx: Context, did: int, name: str) -> tuple[DatasetRow, list[RunRow], list[list[str]]]:
    """The dataset row, the runs that made or touched it, and the models of its shards (catalog rows, else
    the model cards)."""
    row = get_dataset(ctx.catalog, name)
    found = shards.committed(ctx.catalog, dataset_id=did)
    shard_runs = {shard.run_id for shard in found}
    spaces = {shard.space for shard in found if shard.space}
    runs = sorted(list_runs(ctx.catalog, limit=None), key=lambda r: r.id)
    registered = registered_rows(ctx.catalog, spaces)
    models = [[m.name, m.kind, m.architecture, m.license or "", m.sha256 or ""] for m in registered]
    for space in sorted(spaces - {m.name for m in registered}):
        try:
            card = get_card(space)
        except SynthdbError:
            continue  # a space that is no known network (e.g. a test's model name): nothing to cite
        models.append([card.name, card.kind, card.architecture, card.license, card.sha256])
    mentions = {"dataset", "query", "against", "name"}
    touched = [
        r
        for r in runs
        if r.id == row.created_by_run_id
        or r.id in shard_runs
        or any(r.params.get(key) == name for key in mentions if isinstance(r.params, dict))
    ]
    return row, touched, models


# ---------------------------------------------------------------------------------------------------- api


def report(
    ctx: Context,
    dataset: str,
    out: str | Path,
    model: str | None = None,
    ict: float | None = None,
    bins: int | None = None,
    value_range: tuple[float, float] | None = None,
    grid_identities: int = 32,
    grid_samples: int = 6,
    device: str | None = None,
    quiet: bool = False,
) -> Report:
    """Write ``out/index.html`` and its figures for ``dataset`` under embedder ``model``.

    ``ict`` is the threshold (default: the embedder's); the histogram's ``bins`` and ``value_range`` follow
    the data unless given. The grid shows ``grid_samples`` aligned crops of each of the first
    ``grid_identities`` identities and says how many more there are.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthdbError(f"--out {out} is a file: name a directory for the page and its figures")
    out.mkdir(parents=True, exist_ok=True)
    _, model = resolve_space(ctx, dataset, ShardContent.EMBEDDING, model)
    did = lookup_dataset_id(ctx.catalog, dataset)
    sep = separability(ctx, dataset, model, ict=ict, device=device, quiet=quiet)
    histogram = None
    if bins is not None or value_range is not None:
        from synthdb.analysis.histogram import histogram as exact_histogram

        found = exact_histogram(
            ctx, dataset, model, bins=bins, value_range=value_range, device=device, quiet=quiet
        )
        histogram = (found.edges, found.inter, found.intra)
    title = f"{dataset} · {model}"
    figures = _figures(out, sep, ict, title, histogram)
    row, runs, models = _provenance(ctx, did, dataset)
    grid = _grid(ctx, did, row, model, out, grid_identities, grid_samples)
    figures += [r.strip for r in grid.rows] if grid else []
    shown = numbers(sep)
    page = _page(dataset, model, row, sep, shown, figures, runs, models, ctx, did, grid, out)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return Report(path, figures, sep, shown)


def _page(
    dataset: str,
    model: str,
    row: DatasetRow,
    sep: Separability,
    shown: dict[str, str],
    figures: list[Path],
    runs: list[RunRow],
    models: list[Any],
    ctx: Context,
    did: int,
    grid: Grid | None,
    out: Path,
) -> str:
    captions = {
        "histogram.png": "Inter- vs intra-class angles (rad) over the range the pairs occupy; dashed: the "
        f"threshold {sep.ict_rad:.3f} rad",
        "det.png": "DET curve (genuine = same identity, impostor = different identities)",
        "roc.png": "ROC curve",
    }
    figs = "".join(
        f'<figure><img src="{_e(f.name)}" alt="{_e(captions[f.name])}">'
        f"<figcaption>{_e(captions[f.name])}</figcaption></figure>"
        for f in figures
        if f.name in captions
    )
    number_rows = "".join(f'<tr><th>{_e(k)}</th><td class="num">{_e(v)}</td></tr>' for k, v in shown.items())
    notes = [*sep.notes, *([_perfect(sep)] if _perfect(sep) else [])]
    run_rows = [
        [r.id, r.kind, r.algorithm or "", "" if r.seed is None else r.seed, r.status, r.started_at,
         r.synthdb_version, json.dumps(r.params, sort_keys=True, default=str)]
        for r in runs
    ]  # fmt: skip
    run_table = (
        _table(["run", "kind", "algorithm", "seed", "status", "started", "synthdb", "parameters"], run_rows,
               widths=[4, 7, 11, 5, 10, 11, 9, 43])  # fmt: skip
        if run_rows
        else "<p>No run is recorded for this dataset.</p>"
    )
    model_table = (
        _table(["model", "kind", "architecture", "licence", "sha256"], models, widths=[16, 10, 14, 20, 40])
        if models
        else "<p>No model row is registered for the spaces of this dataset.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthdb report: {_e(dataset)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Dataset {_e(dataset)}</h1>
<p>{_e(row.kind)} dataset from {_e(row.source)}; embeddings of <code>{_e(model)}</code>.
{_e(row.description or "")}</p>
<h2>Separability ({_e(model)})</h2>
<table id="numbers">{number_rows}</table>
{"<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>" if notes else ""}
{figs}
{_spread_section(sep, ctx)}
{_grid_section(grid, out)}
{_issues_section(ctx, did)}
{_nearest_section(ctx, dataset)}
<h2>Provenance</h2>
<h3>Runs</h3>
{run_table}
<h3>Models</h3>
{model_table}
</body></html>
"""
