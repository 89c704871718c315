"""Figures of the analyses: inter vs intra histograms, DET and ROC curves (PNG or SVG), sample strips.

Figures are drawn with matplotlib's object API on the Agg canvas (``Figure`` + ``savefig``), never with
pyplot: no global backend or figure state, so plotting works headless, in threads and in tests. The
format follows the file's suffix (``.png`` or ``.svg``). Axes name their units (angles in radians).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from synthdb.analysis.histogram import ClassHistogram
from synthdb.errors import SynthdbError

FORMATS = (".png", ".svg")
_GAP = 4


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise SynthdbError(f"cannot plot to '{path.name}': name a .png or .svg file")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, selectable, readable
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_histograms(
    path: str | Path,
    edges: np.ndarray,
    inter: ClassHistogram | None,
    intra: ClassHistogram | None,
    unit: str = "rad",
    threshold: tuple[float, str] | None = None,
    title: str = "",
) -> Path:
    """Inter- and intra-class distance histograms (fraction of the class's pairs per bin) over the bins
    given, and the threshold line ``(value, legend)``. Each class is one artist (filled, outlined), so
    its legend swatch is what its bars look like."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for name, hist, colour in (
        ("inter-class (impostor)", inter, "tab:red"),
        ("intra-class (genuine)", intra, "tab:blue"),
    ):
        if hist is not None and hist.pairs:
            ax.stairs(
                hist.normalized,
                edges,
                label=f"{name}, {hist.pairs:,} pairs",
                fill=True,
                facecolor=to_rgba(colour, 0.35),
                edgecolor=colour,
                linewidth=1.2,
            )
    if threshold is not None:
        ax.axvline(threshold[0], color="black", linestyle="--", label=threshold[1])
    ax.set_xlim(float(edges[0]), float(edges[-1]))
    ax.set_xlabel(f"{'angle' if unit == 'rad' else 'distance'} ({unit})")
    ax.set_ylabel("fraction of pairs per bin")
    ax.set_title(title, parse_math=False)  # dataset names may hold '$'
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_det(
    path: str | Path,
    fmr: np.ndarray,
    fnmr: np.ndarray,
    eer: float | None = None,
    title: str = "",
    note: str | None = None,
) -> Path:
    """DET curve: FNMR against FMR, both on log axes (zero rates are clipped to the axis floor); ``note``
    is written across the axes (a curve with no error at all has no point to draw)."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    floor = 1e-6
    ax.loglog(np.maximum(fmr, floor), np.maximum(fnmr, floor), color="tab:purple", label="DET")
    if eer is not None:
        ax.plot([max(eer, floor)], [max(eer, floor)], "ko", label=f"EER {eer:.4%}")
    if note:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", wrap=True, fontsize="small")
    ax.set_xlabel("false match rate (FMR)")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, parse_math=False)  # dataset names may hold '$'
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_roc(path: str | Path, fmr: np.ndarray, fnmr: np.ndarray, title: str = "") -> Path:
    """ROC curve: true match rate (1 - FNMR) against FMR on a log axis."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    floor = 1e-6
    ax.semilogx(np.maximum(fmr, floor), 1 - fnmr, color="tab:green")
    ax.set_xlabel("false match rate (FMR)")
    ax.set_ylabel("true match rate (1 - FNMR)")
    ax.set_xlim(floor, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, parse_math=False)  # dataset names may hold '$'
    return _save(fig, path)


def sample_strip(path: str | Path, cells: Sequence[np.ndarray], marked: Sequence[bool] = ()) -> Path:
    """One identity's images side by side (each an H x W x 3 uint8 array, all the same size) as a PNG, a
    red frame around the ``marked`` ones (shown uncropped: no face was found to align)."""
    if not cells:
        raise SynthdbError("no image to show: pass at least one")
    height, width = cells[0].shape[:2]
    strip = Image.new("RGB", (len(cells) * (width + _GAP) - _GAP, height), "white")
    for i, pixels in enumerate(cells):
        cell = Image.fromarray(pixels)
        if i < len(marked) and marked[i]:
            ImageDraw.Draw(cell).rectangle((0, 0, width - 1, height - 1), outline=(220, 30, 30), width=3)
        strip.paste(cell, (i * (width + _GAP), 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path
