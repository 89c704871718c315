"""One compiled pass over a CPU tile of pair scalars: cell counts, flagged positions, closest pair.

Why compiled: a tile's GEMM costs ~8 ms per million pairs on one core, and binning it with torch ops took
6-7 ms more (a multiply-add, a conversion, a flag lookup, ``nonzero``, ``aminmax``, ``bincount``, a masked
max), each a separate pass over 4 MiB and ``bincount`` alone ~3 ns per value. One loop that does all of it
per value while the tile is in cache costs ~2 ns per value. It is compiled by numba on first use (about a
second, once per process; numba is imported only then, so the CLI does not pay for it) and releases the GIL,
so the histogram's worker threads run it side by side.

The arithmetic is the torch path's (``EdgeBinner.add``): cell ``= int(t * scale + offset)`` in float32 (two
roundings; torch's vectorised op may fuse the multiply-add, so a value can land one cell apart), clamped into
the grid (its first and last cells are flagged, so a clamped value is binned exactly). Every value within the
tolerance of an edge lies in a flagged cell either way, and every value in a flagged cell is binned exactly,
so the bins and edge counts do not depend on which path counted them.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

_BUILDING = threading.Lock()
Kernels = tuple[Callable[..., tuple[int, int, float, int]], Callable[..., None]]


def _compiled() -> Kernels:
    """The kernels, compiled on the first call of :func:`count_tile` in this process. The histogram's worker
    threads all make that first call at once: the lock has one of them build the kernels and the others wait
    for them (``functools.cache`` alone let each thread build and compile its own, 1.3 s more per scan)."""
    with _BUILDING:
        return _build()


@functools.cache
def _build() -> Kernels:
    import numba

    options = {"nogil": True, "boundscheck": False, "cache": False}

    @numba.njit(inline="always", **options)
    def count(row: Any, j0: Any, j1: Any, base: Any, grid: Any, flags: Any, fine: Any, where: Any, n: int,
              extreme: Any) -> tuple[int, Any, Any]:  # fmt: skip
        """Count ``row[j0:j1]``; with ``extreme`` = (track, largest, best, at) also keep the most extreme.
        Indices are unsigned: numba then drops its negative-index fix-up, a third of the loop's time."""
        scale, offset, top = grid
        track, largest, best, at = extreme
        for j in range(j0, j1):
            v = row[j]
            x = v * scale + offset
            if not x >= 0:  # below the grid, or NaN
                x = np.float32(0)
            elif x > top:
                x = top
            c = np.uint32(x)
            fine[c] += 1
            if flags[c]:
                where[n] = base + j
                n += 1
            if track and (v > best if largest else v < best):  # strictly: the first of equals stays
                best, at = v, base + j
        return n, best, at

    @numba.njit(**options)
    def kernel(t: Any, diagonal: bool, intra_lo: Any, intra_hi: Any, count_all: bool, largest: bool,
               scale: Any, offset: Any, flags: Any, fine_all: Any, fine_intra: Any, where_all: Any,
               where_intra: Any) -> tuple[int, int, float, int]:  # fmt: skip
        rows, cols = t.shape
        grid = (scale, offset, np.float32(len(flags) - 1))
        width = np.uint64(cols)
        n_all = n_intra = 0
        best = np.float32(-np.inf if largest else np.inf)
        at = np.uint64(rows) * width  # no pair yet
        for r in range(rows):
            row, base = t[r], np.uint64(r) * width
            first = r + 1 if diagonal else 0
            lo = min(max(intra_lo[r], first), cols)  # the row's intra-class pairs are [lo, hi)
            hi = min(max(intra_hi[r], lo), cols)
            start, a, b = np.uint64(first), np.uint64(lo), np.uint64(hi)
            keep = (False, largest, best, at)
            if not count_all:
                n_intra, _, _ = count(row, a, b, base, grid, flags, fine_intra, where_intra, n_intra, keep)
                continue
            if a == b:  # no intra-class pair: one loop over the row, most rows of most tiles
                n_all, best, at = count(row, start, width, base, grid, flags, fine_all, where_all, n_all,
                                        (True, largest, best, at))  # fmt: skip
                continue
            n_intra, _, _ = count(row, a, b, base, grid, flags, fine_intra, where_intra, n_intra, keep)
            n_all, best, at = count(row, start, a, base, grid, flags, fine_all, where_all, n_all,
                                    (True, largest, best, at))  # fmt: skip
            n_all, _, _ = count(row, a, b, base, grid, flags, fine_all, where_all, n_all, keep)
            n_all, best, at = count(row, b, width, base, grid, flags, fine_all, where_all, n_all,
                                    (True, largest, best, at))  # fmt: skip
        return n_all, n_intra, float(best), at

    @numba.njit(**options)
    def exact(t: Any, where: Any, n: int, edges: Any, angle: bool, tolerance: float, bins: Any,
              near: Any) -> None:  # fmt: skip
        last = len(edges) - 1
        lo, hi = (-1.0, 1.0) if angle else (0.0, np.inf)
        for k in range(n):
            v = min(max(np.float64(t[where[k]]), lo), hi)
            if angle:  # t in (cos e_k+1, cos e_k]  <=>  angle in [e_k, e_k+1); angle == last edge: closed
                out = last if v == edges[0] else last + 1 - np.searchsorted(edges, v, side="left")
            else:
                out = last if v == edges[last] else np.searchsorted(edges, v, side="right")
            bins[out] += 1
            i = min(max(np.searchsorted(edges, v, side="left"), 1), last)
            below, above = abs(v - edges[i - 1]), abs(v - edges[i])
            if min(below, above) <= tolerance:
                near[i - 1 if below <= above else i] += 1

    return kernel, exact


def count_tile(
    t: np.ndarray,
    diagonal: bool,
    intra: tuple[np.ndarray, np.ndarray],
    count_all: bool,
    largest: bool,
    grid: tuple[float, float, np.ndarray],
    fine: tuple[np.ndarray, np.ndarray],
    where: tuple[np.ndarray, np.ndarray],
) -> tuple[int, int, tuple[float, int] | None]:
    """Count a ``rows x cols`` tile ``t`` (float32, C order) of pairs; returns ``(n_all, n_intra, extreme)``.

    Pairs are row ``r`` x column ``j`` with ``j > r`` on a ``diagonal`` tile. ``intra`` gives per row the
    columns ``[lo, hi)`` of its identity (relative to the tile, may lie outside it). ``grid`` is
    ``(scale, offset, flags)`` of the fine cells. Every pair's cell is counted in ``fine[0]`` when
    ``count_all``, the intra-class ones also in ``fine[1]``; the flat positions of values in flagged cells are
    written to ``where[0][:n_all]`` and ``where[1][:n_intra]`` (each as long as the tile). ``extreme``:
    ``(t, flat position)`` of the inter-class pair with the largest (``largest``) or smallest ``t``, the first
    in row-major order among equals; None when there is none or ``count_all`` is False.
    """
    scale, offset, flags = grid
    n_all, n_intra, best, at = _compiled()[0](
        t, diagonal, intra[0], intra[1], count_all, largest,
        np.float32(scale), np.float32(offset), flags, fine[0], fine[1], where[0], where[1],
    )  # fmt: skip
    extreme = None if at >= t.size or math.isnan(best) else (best, int(at))
    return int(n_all), int(n_intra), extreme


def bin_exact(
    t: np.ndarray,
    where: np.ndarray,
    edges: np.ndarray,
    angle: bool,
    tolerance: float,
    counts: tuple[np.ndarray, np.ndarray],
) -> None:
    """Bin ``t[where]`` (a flat float32 tile, its flagged positions) in float64 on ``edges`` (ascending in
    ``t``): ``counts[0]`` is ``[below, bins..., above]``, ``counts[1]`` per edge the values within
    ``tolerance`` of it. The rule of ``EdgeBinner.exact_bins`` and ``add_exact``, for a tile's few values."""
    _compiled()[1](t, where, len(where), edges, angle, tolerance, counts[0], counts[1])
