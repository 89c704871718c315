"""``synthdb stats histogram``: the exact histograms of a dataset, and the files they are written to.

The histograms come from :func:`synthdb.analysis.histogram.histogram`; this adds what the command leaves
behind: the reference package's ``.dat`` (left bin edges, then one normalised column per class) and a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synthdb import defaults
from synthdb.analysis.histogram import ClassHistogram, Histogram, histogram, write_dat
from synthdb.analysis.plots import plot_histograms
from synthdb.context import Context
from synthdb.errors import SynthdbError


@dataclass(frozen=True)
class HistogramReport:
    """The histograms, and where the ``.dat`` export and the figure went (None: not asked for)."""

    histogram: Histogram
    dat: Path | None = None
    figure: Path | None = None

    @property
    def classes(self) -> list[tuple[str, ClassHistogram]]:
        """(name, histogram) of the classes computed, inter first: the ``.dat`` column order."""
        both = (("inter", self.histogram.inter), ("intra", self.histogram.intra))
        return [(name, h) for name, h in both if h is not None]


def threshold_line(model: str, ict: float | None) -> tuple[float, str] | None:
    """(angle, legend) of the threshold drawn on a histogram: ``ict`` when given, else the embedder card's
    verification threshold; None for a model without a card (nothing synthdb can vouch for)."""
    if ict is not None:
        return ict, f"ICT {ict:.3f} rad"
    try:
        return defaults.threshold(model), f"{model} threshold {defaults.threshold(model):.3f} rad"
    except SynthdbError:
        return None


def histogram_report(
    ctx: Context,
    dataset: str,
    model: str | None = None,
    pair_class: str = "both",
    space: str = "embedding",
    bins: int | None = None,
    value_range: tuple[float, float] | None = None,
    column: str | None = None,
    device: str | None = None,
    quiet: bool = False,
    *,
    export: str | Path | None = None,
    plot: str | Path | None = None,
    ict: float | None = None,
    sample: int | None = None,
) -> HistogramReport:
    """:func:`~synthdb.analysis.histogram.histogram` (range and bins follow the data unless given), then
    the ``.dat`` to ``export`` and the figure to ``plot``, with the threshold line at ``ict`` rad (default:
    the embedder's verification threshold, for angles). ``sample``: the inter-class histogram estimated from
    that many random pairs. Under torchrun only rank 0 writes the files."""
    result = histogram(
        ctx, dataset, model, pair_class, space, bins, value_range, column, device, quiet, sample=sample
    )
    report = HistogramReport(result)
    if not result.leader:
        return report
    if export is not None:
        write_dat(export, result.left_edges, [h.normalized for _, h in report.classes])
        report = HistogramReport(result, Path(export))
    if plot is not None:
        title = f"{dataset} · {result.model}"
        line = threshold_line(result.model, ict) if result.unit == "rad" else None
        figure = plot_histograms(plot, result.edges, result.inter, result.intra, result.unit, line, title)
        report = HistogramReport(result, report.dat, figure)
    return report
