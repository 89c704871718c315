"""Histogram bins that follow the data: the occupied range, a bin count from the number of pairs.

Why: a fixed 0..pi range with 1024 bins leaves most of a dlib-resnet histogram empty (its angles sit
between about 0.1 and 1.2 rad) and makes the bins so narrow that a few hundred pairs look like spikes.
The histograms are exact on a fine uniform grid (one pass over all pairs); here the grid's bins are
summed into wider ones that span only the bins holding pairs, which keeps the counts exact (a sum of
exact counts) and costs no second pass. Works on any dataclass with the fields of
:class:`synthdb.analysis.histogram.ClassHistogram` (``counts``, ``near_edges``), replaced, not mutated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

H = TypeVar("H")
MIN_BINS, MAX_BINS = 10, 1024
FIT_GRID = 1024
"""Grid bins over the natural range (0..pi rad, 0..max latent distance) that fitted bins are summed from."""


def auto_bins(pairs: int) -> int:
    """The Rice rule, 2 n^(1/3) bins for n pairs, between MIN_BINS and MAX_BINS: wide enough that each
    bin holds many pairs, narrow enough to show the shape."""
    return int(min(MAX_BINS, max(MIN_BINS, math.ceil(2 * max(pairs, 1) ** (1 / 3)))))


def occupied(histograms: Sequence[Any]) -> tuple[int, int] | None:
    """[first, last + 1) of the grid bins holding a pair in any of ``histograms``; None when all are empty."""
    counts = [np.asarray(h.counts) for h in histograms if h is not None]
    if not counts:
        return None
    used = np.flatnonzero(np.sum(counts, axis=0))
    return (int(used[0]), int(used[-1]) + 1) if len(used) else None


def fit_to_data(
    edges: np.ndarray, histograms: Sequence[H | None], bins: int | None = None, pairs: int | None = None
) -> tuple[np.ndarray, list[H | None]]:
    """Sum uniform grid bins into ``bins`` (default :func:`auto_bins` of ``pairs``) equal bins spanning the
    occupied range, widened on the grid to a whole number of grid bins per bin.

    ``bins`` is exact when the occupied range spans at least that many grid bins; otherwise every
    occupied grid bin becomes one bin. Pairs outside the grid (``below``/``above``) stay counted there.
    """
    span = occupied(histograms)
    if span is None:
        return edges, list(histograms)
    first, last = span
    grid = len(edges) - 1
    wanted = bins or auto_bins(pairs if pairs is not None else _pairs(histograms))
    per = max(1, math.ceil((last - first) / wanted))
    count = math.ceil((last - first) / per)
    first = max(0, min(first, grid - per * count))  # widen downwards when the top is the grid's end
    stops = np.arange(first, first + per * count + 1, per)
    return edges[stops], [None if h is None else _summed(h, stops) for h in histograms]


def _summed(histogram: H, stops: np.ndarray) -> H:
    counts = np.asarray(histogram.counts)  # type: ignore[attr-defined]
    near = np.asarray(histogram.near_edges)  # type: ignore[attr-defined]
    summed = np.add.reduceat(counts, stops[:-1]) if len(stops) > 1 else counts[:0]
    return dataclasses.replace(histogram, counts=summed, near_edges=near[stops])  # type: ignore[type-var]


def _pairs(histograms: Sequence[Any]) -> int:
    return sum(int(h.pairs) for h in histograms if h is not None)
