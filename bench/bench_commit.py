"""Shard commit vs a bare ``pyarrow.parquet.write_table`` of the same arrays (goal: at most 1.5x).

200,000 samples of 512-d embeddings + 512-d latents (12,500 identities x 16), written through the
commit protocol (staging, fsync, rename, sample rows and shard rows in one SQLite transaction)
versus writing the same two tables with ``pq.write_table`` defaults. Same process, alternating
repeats, medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from synthdb.admin import init_workspace
from synthdb.catalog import bulk
from synthdb.catalog.datasets import create_dataset
from synthdb.store.commit import NewSamples, ShardSpec, commit
from synthdb.store.parquet import to_table

ROWS, PER_IDENTITY, REPEATS = 200_000, 16, 3


def main() -> None:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((ROWS, 512), dtype=np.float32)
    lat = rng.standard_normal((ROWS, 512), dtype=np.float32)
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        ctx = init_workspace(Path(tmp) / "ws")
        ds = create_dataset(ctx.catalog, "bench", "synthetic", "generated")
        labels = [f"{i // PER_IDENTITY:05d}" for i in range(ROWS)]
        with ctx.catalog.begin() as conn:
            idents = bulk.identity_ids(conn, ds, labels)
        ours, bare = [], []
        for rep in range(REPEATS):
            t0 = time.perf_counter()
            ids = np.arange(rep * ROWS, (rep + 1) * ROWS)
            pq.write_table(to_table(ids, idents, {"embedding": emb}), Path(tmp) / "bare_e.parquet")
            pq.write_table(to_table(ids, idents, {"w": lat}), Path(tmp) / "bare_w.parquet")
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            commit(
                ctx.catalog,
                ctx.store,
                dataset_id=ds,
                unit=f"rep{rep}",
                samples=NewSamples(
                    keys=[f"{rep}/{i}" for i in range(ROWS)], role="variation", identity_ids=idents
                ),
                shards=[
                    ShardSpec("embedding", "m", {"embedding": emb}),
                    ShardSpec("latent", "g", {"w": lat}),
                ],
            )
            ours.append(time.perf_counter() - t0)
        ctx.close()
    ours_s, bare_s = statistics.median(ours), statistics.median(bare)
    print(f"{'method':<48}{'median s':>10}{'rows/s':>12}")
    print(f"{'bare pq.write_table (2 files, defaults)':<48}{bare_s:>10.3f}{ROWS / bare_s:>12,.0f}")
    print(f"{'synthdb commit (2 shards + 200k sample rows)':<48}{ours_s:>10.3f}{ROWS / ours_s:>12,.0f}")
    print(f"ratio commit / bare = {ours_s / bare_s:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
