"""Figures of the analyses: inter vs intra histograms, DET and ROC curves, sample grids (PNG or SVG).

Figures are drawn with matplotlib's object API on the Agg canvas (``Figure`` + ``savefig``), never with
pyplot: no global backend or figure state, so plotting works headless, in threads and in tests. The
format follows the file's suffix (``.png`` or ``.svg``). Axes name their units (angles in radians).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from synthdb.analysis.histogram import ClassHistogram
from synthdb.errors import SynthdbError

FORMATS = (".png", ".svg")
_THUMB = 160


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise SynthdbError(f"cannot plot to '{path.name}': name a .png or .svg file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_histograms(
    path: str | Path,
    edges: np.ndarray,
    inter: ClassHistogram | None,
    intra: ClassHistogram | None,
    unit: str = "rad",
    ict: float | None = None,
    title: str = "",
) -> Path:
    """Inter- and intra-class distance histograms (fraction of the class's pairs per bin), ICT line."""
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
                color=colour,
                fill=True,
                alpha=0.35,
            )
            ax.stairs(hist.normalized, edges, color=colour)
    if ict is not None:
        ax.axvline(ict, color="black", linestyle="--", label=f"ICT {ict:g} {unit}")
    ax.set_xlabel(f"{'angle' if unit == 'rad' else 'distance'} ({unit})")
    ax.set_ylabel("fraction of pairs per bin")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_det(
    path: str | Path, fmr: np.ndarray, fnmr: np.ndarray, eer: float | None = None, title: str = ""
) -> Path:
    """DET curve: FNMR against FMR, both on log axes (zero rates are clipped to the axis floor)."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    floor = 1e-6
    ax.loglog(np.maximum(fmr, floor), np.maximum(fnmr, floor), color="tab:purple", label="DET")
    if eer is not None:
        ax.plot([max(eer, floor)], [max(eer, floor)], "ko", label=f"EER {eer:.4%}")
    ax.set_xlabel("false match rate (FMR)")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
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
    ax.set_title(title)
    return _save(fig, path)


def _thumbnail(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((_THUMB, _THUMB))
            return np.asarray(image)
    except (OSError, UnidentifiedImageError):
        return None


def plot_sample_grid(path: str | Path, rows: Sequence[tuple[str, Sequence[Path]]], title: str = "") -> Path:
    """A grid of sample images, one row per identity (``(label, image paths)``); unreadable files show as
    an empty cell marked 'unreadable'."""
    if not rows:
        raise SynthdbError("no identity has images to show: the dataset has no image files")
    columns = max(len(images) for _, images in rows)
    fig = Figure(figsize=(1.4 * columns + 1.2, 1.4 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                pixels = _thumbnail(images[c])
                if pixels is None:
                    ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize="x-small")
                else:
                    ax.imshow(pixels)
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)
