"""Concurrent shard commits into one SQLite catalog: throughput and p95 commit latency.

``WRITERS`` processes each commit ``COMMITS`` units of ``ROWS`` new samples (a 512-d embedding shard and a
512-d latent shard, new identities) into one dataset of one SQLite catalog, all released at the same
moment. What limits them is how long each commit holds SQLite's write lock: while one writer holds it the
others wait, so the part of a commit done under the lock is serial across all writers. Printed: commits
and rows per second over the whole run, and the median and p95 latency of one commit (lock waits
included). ``--writers``, ``--commits`` and ``--rows`` change the sizes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from synthdb.admin import init_workspace
from synthdb.catalog.datasets import create_dataset

WORKER = r"""
import json, sys, time
import numpy as np
from synthdb.context import Context
from synthdb.store.commit import NewSamples, ShardSpec, commit

ws, dataset, writer, commits, rows = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
rng = np.random.default_rng(writer)
emb = rng.standard_normal((rows, 512), dtype=np.float32)
lat = rng.standard_normal((rows, 512), dtype=np.float32)
ctx = Context.open(ws)
print("ready", flush=True)
sys.stdin.readline()  # released together with the other writers
latencies = []
for c in range(commits):
    start = time.perf_counter()
    commit(ctx.catalog, ctx.store, dataset_id=dataset, unit=f"w{writer}c{c}",
           samples=NewSamples(keys=[f"w{writer}/c{c}/{r}" for r in range(rows)], role="variation",
                              identity_labels=[f"w{writer}-c{c}-{r // 8}" for r in range(rows)]),
           shards=[ShardSpec("embedding", "m", {"embedding": emb}), ShardSpec("latent", "g", {"w": lat})])
    latencies.append(time.perf_counter() - start)
print(json.dumps(latencies), flush=True)
"""


def run(writers: int, commits: int, rows: int) -> tuple[float, list[float]]:
    """Wall seconds from the release of the writers to the last commit, and every commit's latency."""
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        ctx = init_workspace(Path(tmp) / "ws")
        dataset = create_dataset(ctx.catalog, "bench", "synthetic", "generated")
        ctx.close()
        args = [str(Path(tmp) / "ws"), str(dataset)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, *args, str(w), str(commits), str(rows)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for w in range(writers)
        ]
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        latencies = []
        for proc in procs:
            out, _ = proc.communicate(timeout=1800)
            assert proc.returncode == 0, f"a writer failed (exit {proc.returncode})"
            latencies += json.loads(out.strip().splitlines()[-1])
        return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--commits", type=int, default=6)
    parser.add_argument("--rows", type=int, default=4000)
    opts = parser.parse_args()
    wall, latencies = run(opts.writers, opts.commits, opts.rows)
    total = opts.writers * opts.commits
    print(f"{opts.writers} writers x {opts.commits} commits x {opts.rows} rows (2 shards of 512 floats)")
    rate = total * opts.rows / wall
    print(f"throughput   {total / wall:8.2f} commits/s  {rate:12,.0f} rows/s  ({wall:.2f} s)")
    print(
        f"commit       median {np.median(latencies):.3f} s  p95 {np.percentile(latencies, 95):.3f} s  "
        f"max {max(latencies):.3f} s"
    )


if __name__ == "__main__":
    main()
