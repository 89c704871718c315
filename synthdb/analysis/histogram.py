"""Exact inter/intra-class distance histograms over all pairs (``synthdb stats histogram``).

Why this shape: the reference computes an angle matrix per tile (``arccos`` on every pair), masks it and
calls ``torch.histogram``; at 10^5-10^6 samples that costs several times the matrix product itself. Here
each tile is the matrix product and then integer work only:

1. Samples are sorted by identity, so the intra-class pairs of a tile's row are one run of columns; no
   per-element class mask is ever built.
2. Each tile's scalars ``t`` (the cosine of L2-normalised embeddings, or the squared Euclidean distance
   of latents, both straight from one GEMM) are mapped to one of ``CELLS`` (2^20) uniform cells of ``t``
   by one multiply-add and a float-to-int conversion, and counted. A lookup table built
   once from the bin edges (precomputed in ``t``: ``cos(edge)`` or ``edge**2``; no ``arccos`` per pair)
   turns cell counts into bin counts.
3. Cells within ``tolerance`` (+ one cell) of an edge are flagged; only the few values in flagged cells
   are compared with the edges exactly (in float64). So every pair lands where its float32 ``t`` says,
   and a pair moves one bin from a float64 computation only if its ``t`` is within ``tolerance`` (the
   float32 GEMM error bound, several times the largest error measured) of an edge. Those pairs are
   counted (``edge_pairs``): they bound the difference from exact arithmetic.
4. The all-pairs counts and the intra-class counts come from the same tile values, so
   ``inter = all - intra`` is exact and ``inter + intra = N(N-1)/2``.

Only a ``rows x cols`` tile per worker is ever held, never N x N. On the CPU one worker thread per torch
thread takes tile after tile and runs torch single-threaded: a tile's GEMM and then one compiled pass over
it (:mod:`synthdb.analysis.tile_counts`: cells, flags, intra-class runs and the closest pair at ~2 ns a
pair, where a dozen torch ops took ~7) run on one core, one worker's pass overlapping another's GEMM, and
tiles small enough (4 MiB of ``t``) that the pass reads them from the cache the GEMM wrote them to. The
counts are integers summed over the workers and the closest pair breaks ties on ``(i, j)``, so neither
depends on the thread count or on which worker visited which tile. On a CUDA device one worker runs every
step as a torch op on the GPU (:meth:`EdgeBinner.add`; the same bins). The fine cell counts are kept: they
give the score distributions, EER and the mean distance of ``separability`` at 2^-20 resolution without a
second pass.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthdb import distributed
from synthdb.analysis import binning
from synthdb.analysis.pair_sample import CONFIDENCE, InterPairSampler, inter_pairs, simultaneous_bounds
from synthdb.analysis.tile_counts import bin_exact, count_tile
from synthdb.analysis.vectors import identity_blocks, load_vectors, normalized, spaces
from synthdb.angles import from_cosine
from synthdb.catalog.datasets import dataset_id as lookup_dataset_id
from synthdb.catalog.schema import ShardContent
from synthdb.context import Context
from synthdb.distributed import SOLO, Group
from synthdb.errors import SynthdbError
from synthdb.progress import progress_bar

ANGLE = "angle"
EUCLIDEAN = "euclidean"
UNITS = {ANGLE: "rad", EUCLIDEAN: "latent units"}
SPACES = {ShardContent.EMBEDDING: ANGLE, ShardContent.LATENT: EUCLIDEAN}
CLASSES = ("inter", "intra", "both")
CELLS = 1 << 20
_U32 = 2.0**-24  # unit roundoff of float32
CPU_TILE = (512, 2048)
"""Rows of a panel, columns of a tile: 4 MiB of ``t``, binned while still in cache. Panels of 512 rows run the
GEMM faster than 256 x 4096 did (a scan of 20,000 x 512 took 11 % less on an AVX-512 CPU)."""
FLUSH_VALUES = np.iinfo(np.int32).max
"""The compiled pass counts cells in int32 (:meth:`_Worker.flush`), added to the counts before this many."""
SAMPLE_VALUES = 1 << 21  # vector entries gathered per chunk of sampled pairs (16 MiB in float64)
GPU_TILE = (8192, 65_536)


@dataclass
class Counts:
    """Counts of one class of pairs: per fine cell of ``t``, exactly binned flagged values, and per edge
    (in ``t`` order) the pairs within the tolerance of it."""

    fine: np.ndarray
    exact: np.ndarray
    near: np.ndarray

    @property
    def edge_pairs(self) -> int:
        return int(self.near.sum())

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.fine + other.fine, self.exact + other.exact, self.near + other.near)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.fine - other.fine, self.exact - other.exact, self.near - other.near)


class EdgeBinner:
    """Bins the GEMM scalars ``t`` into distance bins with precomputed edges; see the module docstring.

    ``edges`` are distance edges (radians, or latent units), ascending; bins are ``[e_k, e_k+1)`` and the last
    is closed, as in NumPy and the reference. ``t`` relates to the distance by ``cos`` (angles: ``t`` is a
    cosine, clamped to [-1, 1]) or by squaring (Euclidean: ``t`` is a squared distance, clamped at 0).
    Counts are laid out as ``[below, bin 0 .. bin B-1, above]``. A binner holds no state of a scan: the
    threads of one scan share it, each with its own counts and scratch buffers.
    """

    def __init__(
        self,
        metric: str,
        edges: np.ndarray,
        t_range: tuple[float, float],
        tolerance: float,
        device: torch.device,
    ) -> None:
        self.metric, self.device, self.tolerance = metric, device, tolerance
        self.edges = np.asarray(edges, np.float64)
        self.bins = len(self.edges) - 1
        if metric == ANGLE:
            self.t_edges = np.cos(self.edges)[::-1].copy()
            self.clamp = (-1.0, 1.0)
        else:
            self.t_edges = self.edges**2
            self.clamp = (0.0, math.inf)
        self._t_edges_dev = torch.from_numpy(self.t_edges).to(device)
        self.t_lo = t_range[0]
        self.scale = CELLS / (t_range[1] - t_range[0])
        self.offset = -self.t_lo * self.scale
        self._offset32 = torch.tensor(self.offset, dtype=torch.float32, device=device)
        flags = np.zeros(CELLS, np.bool_)
        flags[[0, -1]] = True
        reach = tolerance * self.scale + 1.0
        for t in self.t_edges:
            centre = (t - self.t_lo) * self.scale
            lo, hi = int(math.floor(centre - reach)), int(math.floor(centre + reach))
            flags[max(lo, 0) : min(hi, CELLS - 1) + 1] = True
        self.flagged = flags
        self.lut = self._unflagged_bins()
        self._flags_dev = torch.from_numpy(flags).to(device)

    @functools.cached_property
    def cell_lo(self) -> np.ndarray:
        """Per fine cell its lower bound in ``t``: cell j covers ``[lo_j, lo_j+1)``."""
        return self.t_lo + np.arange(CELLS, dtype=np.float64) / self.scale

    def _unflagged_bins(self) -> np.ndarray:
        """Per fine cell, the bin of every ``t`` in it when the cell is not flagged (a flagged cell's values
        are binned one by one, so its entry is never read). Every edge lies in a flagged cell, so a run of
        unflagged cells holds no edge and one ``exact_bins`` of its first cell's middle bins all of it: about
        a thousand comparisons instead of one per cell."""
        keep = ~self.flagged
        starts = np.flatnonzero(keep & np.concatenate([[True], ~keep[:-1]]))
        ends = np.flatnonzero(keep & np.concatenate([~keep[1:], [True]])) + 1
        mids = torch.from_numpy(self.t_lo + (starts + 0.5) / self.scale)
        per_run = self.exact_bins(mids, on=torch.device("cpu")).numpy()
        lut = np.zeros(CELLS, np.int64)
        lut[keep] = np.repeat(per_run, ends - starts)
        return lut

    def new_counts(self) -> Counts:
        return Counts(
            np.zeros(CELLS, np.int64), np.zeros(self.bins + 2, np.int64), np.zeros(self.bins + 1, np.int64)
        )

    def exact_bins(self, t: torch.Tensor, on: torch.device | None = None) -> torch.Tensor:
        """Output index (0 below, 1..B the bins, B+1 above) of float64 ``t``, compared with the edges."""
        edges = self._t_edges_dev if on is None else self._t_edges_dev.to(on)
        t = t.clamp(*self.clamp)
        if self.metric == ANGLE:  # t in (cos e_{k+1}, cos e_k]  <=>  angle in [e_k, e_{k+1})
            out = self.bins + 1 - torch.bucketize(t, edges, right=False)
            return torch.where(t == edges[0], self.bins, out)  # angle == last edge: the closed last bin
        out = torch.bucketize(t, edges, right=True)
        return torch.where(t == edges[-1], self.bins, out)

    def add(self, values: torch.Tensor, counts: Counts, scratch: torch.Tensor) -> None:
        """Count a contiguous tensor of ``t`` values into ``counts``: cells by one multiply-add and a
        truncation, counted over the range of cells they span only (no 2^20-cell array per call); the
        values in flagged cells are then binned exactly. ``scratch`` (int32, at least as long as
        ``values``) is the caller's, reused from tile to tile so that it stays in cache."""
        n = values.numel()
        if n == 0:
            return
        cells = scratch[:n]
        x = cells.view(torch.float32)  # the cells overwrite, in place, the values they truncate
        torch.add(self._offset32, values.reshape(-1), alpha=self.scale, out=x)
        cells.copy_(x)  # truncation == floor: the grid starts below every possible t
        where = self._flagged(cells)
        lo, hi = (int(v) for v in torch.aminmax(cells))
        span = torch.bincount(cells.sub_(lo), minlength=hi - lo + 1)
        counts.fine[lo : hi + 1] += span.cpu().numpy()
        if where.numel():
            self.add_exact(values.reshape(-1)[where], counts)

    def add_exact(self, values: torch.Tensor, counts: Counts) -> None:
        """Bin values of flagged cells one by one, in float64, and count those within the tolerance of an
        edge (``near``)."""
        t = values.double()
        counts.exact += torch.bincount(self.exact_bins(t), minlength=self.bins + 2).cpu().numpy()
        clamped = t.clamp(*self.clamp)
        i = torch.bucketize(clamped, self._t_edges_dev).clamp(1, len(self.t_edges) - 1)
        below, above = (clamped - self._t_edges_dev[i - 1]).abs(), (clamped - self._t_edges_dev[i]).abs()
        nearest = torch.where(below <= above, i - 1, i)
        close = torch.minimum(below, above) <= self.tolerance
        counts.near += torch.bincount(nearest[close], minlength=self.bins + 1).cpu().numpy()

    def _flagged(self, cells: torch.Tensor) -> torch.Tensor:
        """Positions of the values in flagged cells (``index_select`` takes the int32 cells as they are;
        plain indexing converts them to int64 first, several times slower)."""
        return self._flags_dev.index_select(0, cells).nonzero().squeeze(1)

    def near_by_edge(self, counts: Counts) -> np.ndarray:
        """Pairs within the tolerance of each distance edge, in the order of ``edges``."""
        return counts.near[::-1].copy() if self.metric == ANGLE else counts.near.copy()

    def finish(self, counts: Counts) -> np.ndarray:
        """Bin counts ``[below, bins..., above]``: unflagged cells through the table, plus exact counts."""
        keep = ~self.flagged
        table = np.bincount(self.lut[keep], weights=counts.fine[keep], minlength=self.bins + 2)
        return np.rint(table).astype(np.int64) + counts.exact


@dataclass
class ClassHistogram:
    """One class of pairs binned on ``edges``.

    ``normalized`` divides by all pairs of the class, in range or not (the reference's normalisation).
    An estimate from ``sampled`` random pairs (:mod:`synthdb.analysis.pair_sample`) has float counts
    (the sampled share of each bin times ``pairs``) and :attr:`bounds`; exact counts have ``sampled`` 0.
    """

    counts: np.ndarray
    below: int
    above: int
    pairs: int
    near_edges: np.ndarray  # per edge, pairs whose float32 distance is within the tolerance of it
    sampled: int = 0
    confidence: float = CONFIDENCE

    @property
    def edge_pairs(self) -> int:
        """Pairs that may sit one bin away from exact arithmetic: each moves at most two bin counts by one."""
        return int(self.near_edges.sum())

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Of an estimate, per bin the lower and upper bounds of the exact count, all holding at once with
        probability ``confidence`` (None for exact counts). Computed from the counts as they are, so bins
        summed into wider ones (:mod:`synthdb.analysis.binning`) keep valid bounds."""
        if not self.sampled:
            return None
        draws = np.asarray(self.counts, np.float64) * (self.sampled / self.pairs)
        lower, upper = simultaneous_bounds(draws, self.sampled, self.confidence, len(draws) + 2)
        return lower * self.pairs, upper * self.pairs

    @property
    def normalized(self) -> np.ndarray:
        return self.counts / self.pairs if self.pairs else np.zeros(len(self.counts))


@dataclass
class PairScan:
    """What one pass over all pairs (or the intra-class pairs only) found.

    ``extreme`` is the closest inter-class pair: its ``t`` (max cosine, or min squared distance) and the two
    sample ids. ``all`` is None when only intra-class pairs were scanned.
    """

    metric: str
    binner: EdgeBinner
    all: Counts | None
    intra: Counts
    samples: int
    identities: int
    extreme: tuple[float, int, int] | None = None

    @property
    def inter(self) -> Counts | None:
        return None if self.all is None else self.all - self.intra

    def histogram(self, counts: Counts) -> ClassHistogram:
        binned = self.binner.finish(counts)
        return ClassHistogram(
            counts=binned[1:-1],
            below=int(binned[0]),
            above=int(binned[-1]),
            pairs=int(binned.sum()),
            near_edges=self.binner.near_by_edge(counts),
        )

    def extreme_distance(self) -> float | None:
        if self.extreme is None:
            return None
        t = self.extreme[0]
        return float(from_cosine(t)) if self.metric == ANGLE else float(np.sqrt(max(t, 0.0)))


@functools.cache
def _triangle(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions of the strict upper triangle of an n x n tile, and of the rest (diagonal included)."""
    rows, cols = np.triu_indices(n, 1)
    upper = rows * n + cols
    mask = np.ones(n * n, np.bool_)
    mask[upper] = False
    return torch.from_numpy(upper).to(device), torch.from_numpy(np.flatnonzero(mask)).to(device)


def _intra_positions(lo_id: np.ndarray, hi_id: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Flat positions in the tile rows [r0, r1) x cols [c0, c1) of pairs i < j of the same identity.

    ``lo_id``/``hi_id`` give, per sorted row, the bounds of its identity's block; each row's intra pairs are
    one run of columns, so positions come from ``repeat`` + ``arange`` without a Python loop.
    """
    rows = np.arange(r0, r1)
    lo = np.maximum(np.maximum(lo_id[r0:r1], c0), rows + 1)
    hi = np.minimum(hi_id[r0:r1], c1)
    count = np.maximum(hi - lo, 0)
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = (rows - r0) * (c1 - c0) + (lo - c0)
    run_start = np.cumsum(count) - count
    return np.repeat(first - run_start, count) + np.arange(total)


@dataclass(frozen=True)
class Tile:
    """Rows ``[r0, r1)`` (one panel) against columns ``[c0, c1)`` of the sorted samples; a diagonal tile
    (``c0 == r0``) is the panel's square, of which only the pairs above the diagonal count."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def diagonal(self) -> bool:
        return self.c0 == self.r0


def tiles(hi_id: np.ndarray, rows: int, cols: int, all_pairs: bool) -> list[Tile]:
    """Every tile of pairs i < j, panel by panel; with ``all_pairs`` False only up to the end of the last
    identity a panel's rows belong to (``hi_id``: per sorted row, the end of its identity's block)."""
    n = len(hi_id)
    out = []
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        end = n if all_pairs else int(hi_id[r0:r1].max())
        out.append(Tile(r0, r1, r0, r1))
        out += [Tile(r0, r1, c0, min(end, c0 + cols)) for c0 in range(r1, end, cols)]
    return out


Extreme = tuple[float, int, int]


def _better(a: Extreme, b: Extreme | None, largest: bool) -> bool:
    """Whether pair ``a`` = (t, i, j) is more extreme than ``b``; on a tie the smaller (i, j) wins, so the
    choice does not depend on the order the tiles were visited in (or on which rank visited them)."""
    if b is None:
        return True
    if a[0] != b[0]:
        return a[0] > b[0] if largest else a[0] < b[0]
    return a[1:] < b[1:]


class _Worker:
    """One thread's share of a scan: its GEMM output and binning scratch, sized for the largest tile and
    reused from tile to tile (so a tile's binning passes read it from the cache its GEMM just wrote), its
    counts and its closest inter-class pair. On the CPU (``compiled``) a tile is counted by one compiled
    pass (:mod:`synthdb.analysis.tile_counts`); on a GPU, or with ``compiled`` False, by torch ops."""

    def __init__(
        self,
        binner: EdgeBinner,
        factors: tuple[torch.Tensor, torch.Tensor],
        blocks: tuple[np.ndarray, np.ndarray],
        values: int,
        all_pairs: bool,
        compiled: bool,
    ) -> None:
        self.binner, (self.left, self.right), (self.lo_id, self.hi_id) = binner, factors, blocks
        self.compiled = compiled
        device = self.left.device
        self.output = torch.empty(values, dtype=torch.float32, device=device)
        self.all = binner.new_counts() if all_pairs else None
        self.intra = binner.new_counts()
        self.extreme: Extreme | None = None
        if compiled:  # cell counts and flagged positions of all pairs and of the intra-class ones
            self.where = (np.empty(values, np.int32), np.empty(values, np.int32))
            self.cells = (np.zeros(CELLS, np.int32), np.zeros(CELLS, np.int32))
            self.pending = 0  # values counted into ``cells`` since they were last added to the counts
        else:  # cells, reused from tile to tile
            self.scratch = torch.empty(values, dtype=torch.int32, device=device)

    def visit(self, at: Tile) -> None:
        """The tile's GEMM, its pairs counted, and its closest inter-class pair kept if it beats this
        worker's closest so far."""
        shape = (at.r1 - at.r0, at.c1 - at.c0)
        out = self.output[: shape[0] * shape[1]].view(shape)
        torch.mm(self.left[at.r0 : at.r1], self.right[at.c0 : at.c1].T, out=out)
        found = self._count_compiled(at, out) if self.compiled else self._count_torch(at, out.view(-1))
        if found is None:
            return
        value, k = found
        candidate = (value, at.r0 + k // shape[1], at.c0 + k % shape[1])
        if _better(candidate, self.extreme, self.binner.metric == ANGLE):
            self.extreme = candidate

    def flush(self) -> None:
        """Add the compiled pass's int32 cell counts to the int64 counts. They are int32 because the per-value
        increments are bound by the cache, and half the bytes of int64 ran the pass in half the time; a tile
        adds at most its size to a cell, so they are flushed before 2^31 values could overflow one."""
        if self.compiled:
            for cells, counts in zip(self.cells, (self.all, self.intra), strict=True):
                if counts is not None:
                    counts.fine += cells
                cells[:] = 0
            self.pending = 0

    def _count_compiled(self, at: Tile, out: torch.Tensor) -> tuple[float, int] | None:
        """Counts by :func:`count_tile`, then the values of flagged cells binned exactly."""
        binner, every = self.binner, self.all
        if self.pending + out.numel() > FLUSH_VALUES:
            self.flush()
        self.pending += out.numel()
        intra = (self.lo_id[at.r0 : at.r1] - at.c0, self.hi_id[at.r0 : at.r1] - at.c0)
        grid = (binner.scale, binner.offset, binner.flagged)
        largest = binner.metric == ANGLE
        n_all, n_intra, extreme = count_tile(
            out.numpy(), at.diagonal, intra, every is not None, largest, grid, self.cells, self.where
        )
        flat = out.view(-1).numpy()
        for counts, where in ((every, self.where[0][:n_all]), (self.intra, self.where[1][:n_intra])):
            if counts is not None and len(where):
                bin_exact(flat, where, binner.t_edges, largest, binner.tolerance, (counts.exact, counts.near))
        return extreme

    def _count_torch(self, at: Tile, flat: torch.Tensor) -> tuple[float, int] | None:
        """Counts by torch ops on the tile's device (:meth:`EdgeBinner.add`): the triangle and the intra
        rectangles gathered, then the closest pair from the tile with the intra-class pairs masked."""
        binner, device = self.binner, flat.device
        columns = at.c1 - at.c0
        positions = torch.from_numpy(_intra_positions(self.lo_id, self.hi_id, at.r0, at.r1, at.c0, at.c1))
        positions = positions.to(device)
        if at.diagonal and self.all is not None:
            upper, rest = _triangle(columns, device)
        if self.all is not None:
            binner.add(flat[upper] if at.diagonal else flat, self.all, self.scratch)
        if positions.numel():
            binner.add(flat[positions], self.intra, self.scratch)
        if self.all is None:
            return None
        largest = binner.metric == ANGLE
        worst = -math.inf if largest else math.inf
        flat.index_fill_(0, positions, worst)
        if at.diagonal:
            flat.index_fill_(0, rest, worst)
        value = float(flat.max() if largest else flat.min())  # no index: several times faster
        if value == worst or (self.extreme is not None and _better(self.extreme, (value, -1, -1), largest)):
            return None
        return value, int((flat == value).to(torch.uint8).argmax())  # the first: the tile's smallest (i, j)


def _in_threads(workers: Sequence[_Worker], work: Sequence[Tile], advance: Callable[[int], None]) -> None:
    """Every worker on a thread of its own, visiting the next tile left until none is.

    The threads run torch single-threaded: one thread per core doing a whole tile, GEMM and binning, with no
    fork and join between the dozen ops of a tile, while the other cores do theirs (so one tile's binning
    overlaps another's GEMM). Left alone, every op called on such a thread would start an OpenMP team as
    wide as the caller's, oversubscribing the cores. ``torch.set_num_threads`` sets the calling thread's
    OpenMP and MKL thread counts, and also torch's default for threads that start using torch later: the
    caller's count is put back as soon as every worker has set its own, and again when they are done."""
    caller = torch.get_num_threads()  # read before any worker changes the default this thread would get
    left: queue.SimpleQueue[Tile] = queue.SimpleQueue()
    for at in work:
        left.put(at)
    ready = threading.Barrier(len(workers) + 1)

    def run(worker: _Worker) -> None:
        try:
            torch.set_num_threads(1)
        finally:  # the caller waits for every worker here
            ready.wait()
        while True:
            try:
                at = left.get_nowait()
            except queue.Empty:
                return
            worker.visit(at)
            advance(1)

    try:
        with ThreadPoolExecutor(len(workers), thread_name_prefix="synthdb-pairs") as pool:
            jobs = [pool.submit(run, worker) for worker in workers]
            try:
                ready.wait()
                torch.set_num_threads(caller)
                for job in jobs:
                    job.result()
            finally:  # a failed worker or an interrupt: the others stop after their current tile
                ready.abort()
                while not left.empty():
                    left.get_nowait()
    finally:
        torch.set_num_threads(caller)


def scan_pairs(
    left: torch.Tensor,
    right: torch.Tensor,
    starts: np.ndarray,
    binner: EdgeBinner,
    all_pairs: bool,
    tile: tuple[int, int] | None = None,
    quiet: bool = True,
    group: Group = SOLO,
    compiled: bool | None = None,
) -> tuple[Counts | None, Counts, Extreme | None]:
    """Tile over pairs i < j of rows sorted by identity (``starts``: identity block starts), with
    ``t_ij = left_i . right_j``; count all pairs (if ``all_pairs``) and the intra-class ones.

    Returns ``(all, intra, extreme)`` summed over the worker threads (one per torch thread on the CPU, one
    on a GPU), where ``extreme`` is the inter-class pair with the largest ``t`` (angles) or smallest
    (Euclidean) as ``(t, i, j)`` in sorted positions. Under ``group`` this rank visits its share of the
    tiles only (:meth:`Group.deal`), and the progress counts its tiles. ``compiled``: count each tile by
    one compiled pass (default on a CPU) instead of torch ops (a GPU's way; the same bins and edge counts).
    """
    device = left.device
    rows, cols = tile or (GPU_TILE if device.type == "cuda" else CPU_TILE)
    sizes = np.diff(starts)
    blocks = (np.repeat(starts[:-1], sizes), np.repeat(starts[1:], sizes))
    mine = group.deal(tiles(blocks[1], rows, cols, all_pairs))
    values = max(((at.r1 - at.r0) * (at.c1 - at.c0) for at in mine), default=0)
    threads = max(1, min(len(mine), torch.get_num_threads() if device.type == "cpu" else 1))
    compiled = device.type == "cpu" if compiled is None else compiled
    if compiled and values > np.iinfo(np.int32).max:  # cell counts and positions are int32
        raise SynthdbError(f"a tile of {values} pairs is too large to count on the CPU: use tiles < 2^31")
    workers = [_Worker(binner, (left, right), blocks, values, all_pairs, compiled) for _ in range(threads)]
    with progress_bar(len(mine), "pair tiles", quiet) as advance:
        if threads == 1:
            for at in mine:
                workers[0].visit(at)
                advance(1)
        else:
            _in_threads(workers, mine, advance)
    extreme: Extreme | None = None
    for worker in workers:
        worker.flush()
        if worker.extreme is not None and _better(worker.extreme, extreme, binner.metric == ANGLE):
            extreme = worker.extreme
    intra = sum((w.intra for w in workers[1:]), workers[0].intra)
    if not all_pairs:
        return None, intra, extreme
    every = [w.all for w in workers if w.all is not None]
    return sum(every[1:], every[0]), intra, extreme


def _over_ranks(
    group: Group, all_counts: Counts | None, intra: Counts, extreme: Extreme | None, largest: bool
) -> tuple[Counts | None, Counts, Extreme | None]:
    """Every rank's counts summed (integers: exactly one process's counts) and the most extreme pair."""
    if group.size == 1:
        return all_counts, intra, extreme

    def total(counts: Counts) -> Counts:
        return Counts(group.total(counts.fine), group.total(counts.exact), group.total(counts.near))

    best = None
    for candidate in group.collect(extreme):
        if candidate is not None and _better(candidate, best, largest):
            best = candidate
    return (None if all_counts is None else total(all_counts)), total(intra), best


def _device(device: str | torch.device | None) -> torch.device:
    """The requested device, else CUDA when torch sees one, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise SynthdbError(f"device '{device}' was asked for but torch sees no CUDA GPU: use --device cpu")
    return chosen


def uniform_edges(bins: int, value_range: tuple[float, float]) -> np.ndarray:
    lo, hi = value_range
    if bins < 1 or not hi > lo or lo < 0:
        raise SynthdbError(
            f"histogram of {bins} bins over [{lo}, {hi}] is empty: give --bins >= 1 and 0 <= lo < hi"
        )
    return np.linspace(lo, hi, bins + 1)


def prepare(
    vectors: np.ndarray, metric: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float], float, float]:
    """GEMM factors and ``t`` geometry for a metric: ``(left, right, t_range, tolerance, max_distance)``.

    Angles: both factors are the normalised vectors and ``t`` is the cosine. Euclidean: the vectors are
    centred (distances do not change, the cancellation error of ``|x|^2 + |y|^2 - 2 x.y`` shrinks) and
    augmented, ``[x, |x|^2, 1] . [-2y, 1, |y|^2]``, so the GEMM gives the squared distance directly.
    ``tolerance`` bounds the float32 error of ``t``: 4 sqrt(D) units of roundoff of its magnitude, at least
    five times the largest error measured on 3,000 embeddings (128- and 512-d).
    """
    dims = vectors.shape[1]
    if metric == ANGLE:
        unit = torch.from_numpy(normalized(vectors)).to(device)
        tolerance = 4 * math.sqrt(dims) * _U32
        return unit, unit, (-1.01, 1.01), tolerance, math.pi
    centred = vectors.astype(np.float64)
    centred -= centred.mean(axis=0)
    squares = np.einsum("ij,ij->i", centred, centred)
    radius2 = float(squares.max()) if len(squares) else 0.0
    ones = np.ones((len(centred), 1))
    left = np.hstack([centred, squares[:, None], ones]).astype(np.float32)
    right = np.hstack([-2 * centred, ones, squares[:, None]]).astype(np.float32)
    span = max(4 * radius2, 1e-30)
    tolerance = 8 * math.sqrt(dims + 2) * _U32 * max(radius2, 1e-30)
    t_range = (-0.01 * span, 1.01 * span)
    return (
        torch.from_numpy(left).to(device),
        torch.from_numpy(right).to(device),
        t_range,
        tolerance,
        2 * math.sqrt(radius2),
    )


def scan(
    vectors: np.ndarray,
    identity_ids: np.ndarray,
    metric: str = ANGLE,
    edges: np.ndarray | None = None,
    bins: int = 1024,
    value_range: tuple[float, float] | None = None,
    all_pairs: bool = True,
    device: str | torch.device | None = None,
    tile: tuple[int, int] | None = None,
    quiet: bool = True,
    group: Group = SOLO,
) -> PairScan:
    """All pairs of ``vectors`` (only same-identity pairs when ``all_pairs`` is False), counted on ``edges``
    (default: ``bins`` uniform bins over ``value_range``, default [0, pi] rad for angles and [0, max distance]
    for Euclidean). Array-level: no catalog needed (tests and benchmarks call it directly).

    Under a ``group`` of several ranks (:mod:`synthdb.distributed`) every rank passes the same vectors,
    scans its share of the tiles and gets the counts of all of them."""
    if metric not in UNITS:
        raise SynthdbError(f"unknown metric '{metric}': use {ANGLE} or {EUCLIDEAN}")
    if len(vectors) != len(identity_ids):
        raise SynthdbError(
            f"{len(vectors)} vectors but {len(identity_ids)} identity ids: pass one id per vector"
        )
    dev = _device(device)
    order, identities, starts = identity_blocks(np.asarray(identity_ids))
    left, right, t_range, tolerance, max_distance = prepare(np.asarray(vectors)[order], metric, dev)
    if edges is None:
        edges = uniform_edges(bins, value_range or (0.0, max_distance if metric == EUCLIDEAN else math.pi))
    binner = EdgeBinner(metric, edges, t_range, tolerance, dev)
    found = scan_pairs(left, right, starts, binner, all_pairs, tile, quiet, group)
    all_counts, intra, extreme = _over_ranks(group, *found, largest=metric == ANGLE)
    sample_extreme = None
    if extreme is not None:
        sample_extreme = (extreme[0], int(order[extreme[1]]), int(order[extreme[2]]))
    return PairScan(metric, binner, all_counts, intra, len(vectors), len(identities), sample_extreme)


def sampled_inter(
    vectors: np.ndarray,
    identity_ids: np.ndarray,
    binner: EdgeBinner,
    pairs: int,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> ClassHistogram:
    """The inter-class histogram on ``binner``'s edges estimated from ``pairs`` uniform random inter-class
    pairs (:mod:`synthdb.analysis.pair_sample`); each pair's distance is computed in float64, so only the
    sampling is approximate. The same ``seed`` gives the same estimate."""
    order, _, starts = identity_blocks(np.asarray(identity_ids))
    data = np.asarray(vectors)[order]
    if binner.metric == ANGLE:
        data = normalized(data)
    sampler, rng = InterPairSampler(starts), np.random.default_rng(seed)
    outcomes = np.zeros(binner.bins + 2, np.int64)
    chunk = max(1, SAMPLE_VALUES // data.shape[1])
    for start in range(0, pairs, chunk):
        a, b = sampler.draw(min(chunk, pairs - start), rng)
        if binner.metric == ANGLE:
            t = np.einsum("ij,ij->i", data[a], data[b], dtype=np.float64)
        else:
            diff = data[a].astype(np.float64) - data[b]
            t = np.einsum("ij,ij->i", diff, diff)
        found = binner.exact_bins(torch.from_numpy(t), on=torch.device("cpu")).numpy()
        outcomes += np.bincount(found, minlength=binner.bins + 2)
    estimate = outcomes * (inter_pairs(starts) / pairs)
    return ClassHistogram(
        counts=estimate[1:-1],
        below=round(float(estimate[0])),
        above=round(float(estimate[-1])),
        pairs=inter_pairs(starts),
        near_edges=np.zeros(binner.bins + 1, np.int64),
        sampled=pairs,
        confidence=confidence,
    )


@dataclass
class Histogram:
    """Inter- and/or intra-class histograms of one dataset in one space; distances in ``unit``."""

    dataset: str
    space: str
    model: str
    metric: str
    unit: str
    edges: np.ndarray
    samples: int
    identities: int
    inter: ClassHistogram | None = None
    intra: ClassHistogram | None = None
    closest_inter: tuple[float, int, int] | None = None  # distance, sample id, sample id
    dropped_without_identity: int = 0
    processes: int = 1  # ranks the pairs were spread over (torchrun)
    leader: bool = True  # rank 0 (or the only process): the one that writes files and reports

    @property
    def left_edges(self) -> np.ndarray:
        return self.edges[:-1]


def resolve_space(ctx: Context, dataset: str, space: str, model: str | None) -> tuple[str, str]:
    """(content, model) for a space: embeddings of a model, or latents of a generator; a dataset with one
    model needs no ``--model``."""
    if space not in SPACES:
        raise SynthdbError(f"unknown space '{space}': use embedding or latent")
    content = space
    if model is not None:
        return content, model
    known = spaces(ctx, lookup_dataset_id(ctx.catalog, dataset), content)
    if len(known) == 1:
        return content, known[0]
    what = "embedder" if space == ShardContent.EMBEDDING else "generator"
    raise SynthdbError(
        f"dataset '{dataset}' has {space} shards of {', '.join(known) or 'no model'}: "
        f"name the {what} with --model" + ("" if known else f" after committing its {space}s")
    )


def histogram(
    ctx: Context,
    dataset: str,
    model: str | None = None,
    pair_class: str = "both",
    space: str = ShardContent.EMBEDDING,
    bins: int | None = None,
    value_range: tuple[float, float] | None = None,
    column: str | None = None,
    device: str | None = None,
    quiet: bool = False,
    *,
    sample: int | None = None,
) -> Histogram:
    """Histograms of ``dataset``'s pair distances: angles (rad) of embeddings of ``model``, or Euclidean
    distances of a generator's latents (``column``, default ``w``).

    Under torchrun every rank calls this and scans its share of the pairs (:mod:`synthdb.distributed`);
    every rank gets the counts of all of them, and only the ``leader`` reports. ``sample`` estimates the
    inter-class histogram from that many random pairs with bounds per bin (:func:`sampled_inter`).

    ``value_range`` and ``bins`` follow the data unless given (:mod:`synthdb.analysis.binning`): the
    range the pairs occupy and 2 n^(1/3) bins for n pairs, summed exactly from a fine grid in one pass.
    ``bins`` without a range scans twice: once to find the range, once on exactly ``bins`` bins."""
    if bins is not None and bins < 1:
        raise SynthdbError(f"a histogram needs at least one bin, not {bins}: give --bins >= 1")
    if value_range is None and bins is not None:
        found = histogram(
            ctx, dataset, model, pair_class, space, None, None, column, device, quiet, sample=sample
        )
        value_range = (float(found.edges[0]), float(found.edges[-1]))
    if pair_class not in CLASSES:
        raise SynthdbError(f"unknown class '{pair_class}': use one of {', '.join(CLASSES)}")
    content, model = resolve_space(ctx, dataset, space, model)
    column = column or ("embedding" if space == ShardContent.EMBEDDING else "w")
    loaded = load_vectors(ctx, dataset, model, content, column)
    data = loaded.with_identity()
    metric = SPACES[space]
    pairs = len(data) * (len(data) - 1) // 2
    with distributed.joined(str(_device(device))) as (group, on):
        result = scan(
            data.vectors,
            data.identity_ids,
            metric,
            bins=binning.FIT_GRID
            if value_range is None
            else bins
            if bins is not None
            else binning.auto_bins(pairs),
            value_range=value_range,
            all_pairs=pair_class != "intra" and sample is None,
            device=on,
            quiet=quiet or not group.leader,
            group=group,
        )
    out = Histogram(
        dataset=dataset,
        space=space,
        model=model,
        metric=metric,
        unit=UNITS[metric],
        edges=result.binner.edges,
        samples=result.samples,
        identities=result.identities,
        dropped_without_identity=len(loaded) - len(data),
        processes=group.size,
        leader=group.leader,
    )
    if pair_class in ("intra", "both"):
        out.intra = result.histogram(result.intra)
    if pair_class in ("inter", "both") and sample is not None:
        out.inter = sampled_inter(data.vectors, data.identity_ids, result.binner, sample)
    elif pair_class in ("inter", "both"):
        out.inter = result.histogram(result.inter)
        if result.extreme is not None:
            out.closest_inter = (
                result.extreme_distance(),
                int(data.sample_ids[result.extreme[1]]),
                int(data.sample_ids[result.extreme[2]]),
            )
    if value_range is None:
        fitted = binning.fit_to_data(out.edges, [out.inter, out.intra])
        out.edges, (out.inter, out.intra) = fitted
    return out


def write_dat(path: str | Path, left_edges: np.ndarray, columns: Sequence[np.ndarray]) -> None:
    """The reference's ``.dat`` (spec 2.8): per row every column as float32 in ``'{:16f}'``, no header.

    The columns are the left bin edges and then each normalised histogram, one per class.
    """
    arrays = [np.asarray(left_edges, np.float32), *(np.asarray(c, np.float32) for c in columns)]
    if len({len(a) for a in arrays}) != 1:
        raise SynthdbError("every .dat column must have the same length: this is a bug, please report it")
    lines = ("".join(f"{float(v):16f}" for v in row) for row in zip(*arrays, strict=True))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("".join(line + "\n" for line in lines))
    except OSError as exc:
        raise SynthdbError(f"cannot write {path} ({exc.strerror}): check the folder's permissions") from None
