"""Exact pair histograms spread over processes with torch.distributed (gloo on the CPU), launched with
torchrun as users launch them: every count of 2 ranks equals one process's bit for bit (integers summed in
any order), for angles, Euclidean distances and intra-class-only scans, and ``stats histogram`` under
torchrun writes its export once, from rank 0, equal to the one-process export.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthdb.analysis.histogram import scan, tiles
from synthdb.catalog.datasets import create_dataset
from synthdb.context import Context
from synthdb.distributed import SOLO, Group
from synthdb.store.commit import NewSamples, ShardSpec, commit
from tests.generate.test_distributed import free_port, one_thread, torchrun

TILE = (40, 72)  # small tiles: 600 samples make 120 of them, dealt to both ranks
CASES = {"angle": ("angle", True), "euclidean": ("euclidean", True), "intra": ("angle", False)}

RANK_SCRIPT = """
import sys
import numpy as np
from synthdb.distributed import joined
from tests.test_distributed import counts_of

data = np.load(sys.argv[1])
with joined("cpu") as (group, _):
    np.savez(f"{sys.argv[2]}/rank{group.rank}.npz", **counts_of(data["x"], data["ids"], group))
"""
ROOT = Path(__file__).resolve().parents[1]


def clustered(identities: int, per: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Identity centres plus noise, shuffled, with a few exact duplicates (ties for the closest pair)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(identities), per)
    x = np.repeat(rng.standard_normal((identities, dims)), per, axis=0)
    x = (x + 0.8 * rng.standard_normal(x.shape)).astype(np.float32)
    x[7] = x[300]  # the same vector in two identities: a tie at the closest distance
    x[450] = x[300]
    order = rng.permutation(len(ids))
    return x[order], ids[order]


def counts_of(x: np.ndarray, ids: np.ndarray, group: Group = SOLO) -> dict[str, np.ndarray]:
    """Every count and the closest pair of each case, by name (what a rank saves, and one process)."""
    out = {}
    for name, (metric, all_pairs) in CASES.items():
        found = scan(x, ids, metric, bins=48, all_pairs=all_pairs, tile=TILE, group=group)
        for part in ("all", "intra"):
            counts = getattr(found, part)
            for field in ("fine", "exact", "near"):
                out[f"{name}/{part}/{field}"] = np.zeros(0) if counts is None else getattr(counts, field)
        out[f"{name}/extreme"] = np.array(found.extreme or [np.nan, -1, -1], np.float64)
    return out


@pytest.mark.slow
def test_two_ranks_count_every_pair_like_one_process(tmp_path: Path) -> None:
    x, ids = clustered(60, 10, 24, seed=5)
    np.savez(tmp_path / "data.npz", x=x, ids=ids)
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTHDB_", "WORLD_SIZE", "RANK"))}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launch += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    proc = subprocess.run(
        [*launch, str(tmp_path / "rank.py"), str(tmp_path / "data.npz"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with one_thread():  # torchrun's thread count
        want = counts_of(x, ids)
    assert want["angle/all/fine"].sum() == 600 * 599 // 2  # every pair counted once
    assert want["angle/extreme"][0] > 1 - 1e-6  # a planted duplicate is the closest pair
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert sorted(got.files) == sorted(want)
        for key, value in want.items():
            assert np.array_equal(got[key], value, equal_nan=True), (rank, key)


def test_tiles_are_dealt_to_ranks_once_each() -> None:
    hi_id = np.repeat([3, 10, 25, 40], [3, 7, 15, 15])  # per sorted row, the end of its identity
    for all_pairs in (True, False):
        every = tiles(hi_id, 8, 12, all_pairs)
        for size in (1, 2, 3, 5):
            dealt = [t for rank in range(size) for t in Group(rank, size).deal(every)]
            assert sorted(dealt, key=lambda t: (t.r0, t.c0)) == sorted(every, key=lambda t: (t.r0, t.c0))
    pairs = sum((t.r1 - t.r0) * (t.c1 - t.c0) for t in tiles(hi_id, 8, 12, True) if not t.diagonal)
    squares = sum((t.r1 - t.r0) * (t.r1 - t.r0 - 1) // 2 for t in tiles(hi_id, 8, 12, True) if t.diagonal)
    assert pairs + squares == 40 * 39 // 2


@pytest.mark.slow
def test_cli_histogram_under_torchrun_reports_once_like_one_process(sqlite_ctx: Context) -> None:
    ctx = sqlite_ctx
    x, ids = clustered(130, 10, 16, seed=6)  # 1,300 samples: two panels of the default CPU tiles
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=NewSamples(
            [f"s{i}" for i in range(len(x))], "variation", identity_labels=[str(i) for i in ids]
        ),
        shards=[ShardSpec("embedding", "m16", {"embedding": x})],
    )
    args = ["stats", "histogram", "syn", "--bins", "40", "--range", "0", "3.2", "-q"]
    two = torchrun(ctx.ws.root, *args, "--export", str(ctx.ws.root / "two.dat"))
    assert two.count("inter pairs") == 1 and "processes" in two  # rank 0 alone reports
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTHDB_", "WORLD_SIZE", "RANK"))}
    one = subprocess.run(
        [sys.executable, "-m", "synthdb.cli.main", "-w", str(ctx.ws.root), *args, "--export", "one.dat"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ctx.ws.root,
        env={**env, "OMP_NUM_THREADS": "1"},
    )
    assert one.returncode == 0, one.stderr
    assert (ctx.ws.root / "two.dat").read_text() == (ctx.ws.root / "one.dat").read_text()
