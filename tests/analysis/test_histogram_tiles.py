"""The scan's worker threads and its cell table: counts bit for bit independent of the thread count, the
caller's torch thread count left as it was, and the table built run by run equal to binning every cell."""

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from synthdb.analysis import histogram
from synthdb.analysis.histogram import CELLS, EdgeBinner, scan, uniform_edges
from tests.analysis.test_histogram import clustered


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("metric", "all_pairs"), [("angle", True), ("euclidean", True), ("angle", False)])
def test_worker_threads_count_like_one_thread(metric: str, all_pairs: bool) -> None:
    vectors, ids = clustered(40, 8, 48, 0.8, seed=3)
    vectors[5] = vectors[200]  # a tie for the closest pair, which every thread count must break alike
    vectors[77] = vectors[200]
    with torch_threads(1):
        one = scan(vectors, ids, metric, bins=96, all_pairs=all_pairs, tile=(32, 64))
    with torch_threads(3):
        three = scan(vectors, ids, metric, bins=96, all_pairs=all_pairs, tile=(32, 64))
        fresh: list[int] = []  # a thread that starts using torch after the scan gets the caller's count
        later = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert torch.get_num_threads() == 3 and fresh == [3]  # the workers' one thread did not leak
    for part in ("all", "intra"):
        a, b = getattr(one, part), getattr(three, part)
        assert (a is None) == (b is None) == (part == "all" and not all_pairs)
        if a is not None:
            for field in ("fine", "exact", "near"):
                assert np.array_equal(getattr(a, field), getattr(b, field)), (part, field)
    assert one.extreme == three.extreme


def test_int32_cell_counts_are_flushed_before_they_could_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled pass's int32 cells reach the int64 counts whenever they are flushed: flushing before
    every tile (as if each tile could overflow them) gives the same counts as flushing once at the end."""
    vectors, ids = clustered(40, 8, 48, 0.8, seed=6)
    once = scan(vectors, ids, bins=96, tile=(32, 64))
    monkeypatch.setattr(histogram, "FLUSH_VALUES", 1)
    every_tile = scan(vectors, ids, bins=96, tile=(32, 64))
    n = len(ids)
    for a, b in ((once.all, every_tile.all), (once.intra, every_tile.intra)):
        assert np.array_equal(a.fine, b.fine) and np.array_equal(a.exact, b.exact)
    assert once.all.fine.sum() == n * (n - 1) // 2


@pytest.mark.parametrize(
    ("metric", "edges", "t_range"),
    [
        ("angle", uniform_edges(1024, (0.0, math.pi)), (-1.01, 1.01)),
        ("angle", uniform_edges(37, (0.3, 2.0)), (-1.01, 1.01)),
        ("euclidean", uniform_edges(50, (0.0, 9.0)), (-0.8, 81.8)),
    ],
)
def test_cell_table_bins_every_unflagged_cell_like_its_middle(
    metric: str, edges: np.ndarray, t_range: tuple[float, float]
) -> None:
    binner = EdgeBinner(metric, edges, t_range, 1e-5, torch.device("cpu"))
    middles = torch.from_numpy(binner.cell_lo + 0.5 / binner.scale)
    every = binner.exact_bins(middles, on=torch.device("cpu")).numpy()
    keep = ~binner.flagged
    assert keep.sum() > CELLS // 2
    assert np.array_equal(binner.lut[keep], every[keep])


def test_worker_threads_build_the_compiled_kernels_once() -> None:
    """Every worker thread makes its first compiled call at once; one builds the kernels, the others use them
    (each building its own compiled them all again, a second per thread)."""
    from synthdb.analysis import tile_counts

    tile_counts._build.cache_clear()
    start = threading.Barrier(4)
    got: list[object] = []

    def first_call() -> None:
        start.wait()
        got.append(tile_counts._compiled())

    threads = [threading.Thread(target=first_call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and all(kernels is got[0] for kernels in got)
    assert tile_counts._build.cache_info().misses == 1
