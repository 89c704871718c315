"""``synthdb stats histogram``: the exact histograms of a dataset, and the files they are written to.

The histograms come from :func:`synthdb.analysis.histogram.histogram`; this adds what the command leaves
behind: the reference package's ``.dat`` (left bin edges, then one normalised column per class) and a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synthdb.analysis.histogram import ClassHistogram, Histogram, histogram, write_dat
from synthdb.analysis.plots import plot_histograms
from synthdb.context import Context


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


def histogram_report(
    ctx: Context,
    dataset: str,
    model: str | None = None,
    pair_class: str = "both",
    space: str = "embedding",
    bins: int = 1024,
    value_range: tuple[float, float] | None = None,
    column: str | None = None,
    device: str | None = None,
    quiet: bool = False,
    *,
    export: str | Path | None = None,
    plot: str | Path | None = None,
    ict: float | None = None,
) -> HistogramReport:
    """:func:`~synthdb.analysis.histogram.histogram`, then the ``.dat`` to ``export`` and the figure (with
    the ICT line at ``ict`` rad when given) to ``plot``."""
    result = histogram(ctx, dataset, model, pair_class, space, bins, value_range, column, device, quiet)
    report = HistogramReport(result)
    if export is not None:
        write_dat(export, result.left_edges, [h.normalized for _, h in report.classes])
        report = HistogramReport(result, Path(export))
    if plot is not None:
        title = f"{dataset} · {result.model}"
        figure = plot_histograms(plot, result.edges, result.inter, result.intra, result.unit, ict, title)
        report = HistogramReport(result, report.dat, figure)
    return report
