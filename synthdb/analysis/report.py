"""``synthdb report DATASET --out DIR``: one static HTML page about a dataset, with its figures beside it.

The page answers what a paper's dataset section needs: how many identities and samples, how separable the
identities are under an embedder (histograms with the ICT, EER, FMR/FNMR operating points, DET and ROC),
how spread each identity is, what the samples look like, and where it all came from (the runs that made
or touched the dataset with their parameters and seeds, and the models with their licences). It is plain
HTML with PNG figures as files next to it: it opens from disk in any browser, without a server or script.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthdb.analysis import plots
from synthdb.analysis.histogram import resolve_space
from synthdb.analysis.separability import Separability, rad_text, separability
from synthdb.analysis.vectors import NO_IDENTITY, sample_rows
from synthdb.catalog import shards
from synthdb.catalog.datasets import DatasetRow, get_dataset
from synthdb.catalog.datasets import dataset_id as lookup_dataset_id
from synthdb.catalog.model_rows import registered_rows
from synthdb.catalog.runs import RunRow, list_runs
from synthdb.catalog.samples import identity_labels
from synthdb.catalog.schema import ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.nets.cards import get_card

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; }
img { max-width: 100%; }
code { font-size: 0.85em; }
"""


@dataclass
class Report:
    path: Path
    figures: list[Path]
    separability: Separability
    numbers: dict[str, str] = field(default_factory=dict)


def _e(value: object) -> str:
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[object]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{_e(v)}</td>" for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


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


def _grid_rows(ctx: Context, did: int, root: str | None, identities: int, per_identity: int) -> list:
    if root is None:
        return []
    rows = sample_rows(ctx, did)
    has_image = np.array([p is not None for p in rows["path"]], np.bool_) & (
        rows["identity_id"] != NO_IDENTITY
    )
    wanted = np.unique(rows["identity_id"][has_image])[:identities]
    labels = identity_labels(ctx.catalog, wanted)
    grid = []
    for identity in wanted:
        paths = rows["path"][has_image & (rows["identity_id"] == identity)][:per_identity]
        grid.append((labels.get(int(identity), str(identity)), [Path(root) / p for p in paths]))
    return grid


def report(
    ctx: Context,
    dataset: str,
    out: str | Path,
    model: str | None = None,
    ict: float | None = None,
    bins: int = 1024,
    grid_identities: int = 8,
    grid_samples: int = 6,
    device: str | None = None,
    quiet: bool = False,
) -> Report:
    """Write ``out/index.html`` and its figures for ``dataset`` under embedder ``model``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthdbError(f"--out {out} is a file: name a directory for the page and its figures")
    out.mkdir(parents=True, exist_ok=True)
    _, model = resolve_space(ctx, dataset, ShardContent.EMBEDDING, model)
    did = lookup_dataset_id(ctx.catalog, dataset)
    sep = separability(ctx, dataset, model, ict=ict, bins=bins, device=device, quiet=quiet)
    ict = sep.ict_rad
    title = f"{dataset} · {model}"
    figures = [
        plots.plot_histograms(out / "histogram.png", sep.edges, sep.inter, sep.intra, "rad", ict, title),
        plots.plot_histograms(out / "histogram.svg", sep.edges, sep.inter, sep.intra, "rad", ict, title),
    ]
    if sep.eer is not None:
        figures.append(plots.plot_det(out / "det.png", sep.curve_fmr, sep.curve_fnmr, sep.eer.fmr, title))
        figures.append(plots.plot_roc(out / "roc.png", sep.curve_fmr, sep.curve_fnmr, title))
    row, runs, models = _provenance(ctx, did, dataset)
    grid = _grid_rows(ctx, did, row.root, grid_identities, grid_samples)
    if grid:
        figures.append(plots.plot_sample_grid(out / "samples.png", grid, dataset))
    shown = sep.headline()
    page = _page(dataset, model, row, sep, shown, figures, runs, models, ctx)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return Report(path, figures, sep, shown)


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
) -> str:
    pngs = [f for f in figures if f.suffix == ".png"]
    captions = {
        "histogram.png": (
            f"Inter- vs intra-class angles (rad), {len(sep.edges) - 1} bins, ICT {sep.ict_rad:g} rad"
        ),
        "det.png": "DET curve (genuine = same identity, impostor = different identities)",
        "roc.png": "ROC curve",
        "samples.png": "Sample images, one row per identity",
    }
    figs = "".join(
        f'<figure><img src="{_e(f.name)}" alt="{_e(captions.get(f.name, f.name))}">'
        f"<figcaption>{_e(captions.get(f.name, f.name))}</figcaption></figure>"
        for f in pngs
    )
    number_rows = "".join(f'<tr><th>{_e(k)}</th><td class="num">{_e(v)}</td></tr>' for k, v in shown.items())
    run_rows = [
        [
            r.id,
            r.kind,
            r.algorithm or "",
            "" if r.seed is None else r.seed,
            r.status,
            r.started_at,
            r.synthdb_version,
            json.dumps(r.params, sort_keys=True, default=str),
        ]
        for r in runs
    ]
    notes = "".join(f"<li>{_e(n)}</li>" for n in sep.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthdb report: {_e(dataset)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Dataset {_e(dataset)}</h1>
<p>{_e(row.kind)} dataset from {_e(row.source)}; embeddings of <code>{_e(model)}</code>.
{_e(row.description or "")}</p>
<h2>Separability ({_e(model)})</h2>
<table id="numbers">{number_rows}</table>
{f"<ul>{notes}</ul>" if notes else ""}
{figs}
{_spread_section(sep, ctx)}
<h2>Provenance</h2>
<h3>Runs</h3>
{
        _table(["run", "kind", "algorithm", "seed", "status", "started", "synthdb", "parameters"], run_rows)
        if run_rows
        else "<p>No run is recorded for this dataset.</p>"
    }
<h3>Models</h3>
{
        _table(["model", "kind", "architecture", "licence", "sha256"], models)
        if models
        else "<p>No model row is registered for the spaces of this dataset.</p>"
    }
</body></html>
"""
