"""Shard commit vs a bare ``pyarrow.parquet.write_table`` of the same arrays (goal: at most 1.5x).

200,000 samples of 512-d embeddings + 512-d latents (12,500 identities x 16), written through the
commit protocol (staging, fsync, rename, sample rows and shard rows in one SQLite transaction)
versus writing the same two tables with ``pq.write_table`` defaults. Same process; rounds interleaved
(bare, commit, bare, commit, ...: see ``timing.py``) so that a neighbour's burst lands on both, medians
and spreads printed, exit 2 when the spread makes the ratio meaningless. ``--quick``: 5,000 samples.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_arguments, environment, judge, measure, verdict  # noqa: E402

from synthdb.admin import init_workspace  # noqa: E402
from synthdb.catalog import bulk  # noqa: E402
from synthdb.catalog.datasets import create_dataset  # noqa: E402
from synthdb.store.commit import NewSamples, ShardSpec, commit  # noqa: E402
from synthdb.store.parquet import to_table  # noqa: E402

PER_IDENTITY = 16
GOAL = 1.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    rows = 5_000 if args.quick else args.rows
    print(f"commit of {rows:,} samples x (512-d embedding + 512-d latent); {environment()}", flush=True)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((rows, 512), dtype=np.float32)
    lat = rng.standard_normal((rows, 512), dtype=np.float32)
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        ctx = init_workspace(Path(tmp) / "ws")
        ds = create_dataset(ctx.catalog, "bench", "synthetic", "generated")
        labels = [f"{i // PER_IDENTITY:05d}" for i in range(rows)]
        with ctx.catalog.begin() as conn:
            idents = bulk.identity_ids(conn, ds, labels)
        bare_rounds, commit_rounds = itertools.count(), itertools.count()

        def bare() -> None:
            """The floor: the same two tables, pyarrow defaults, no staging, fsync or catalog."""
            ids = np.arange(rows) + next(bare_rounds) * rows
            pq.write_table(to_table(ids, idents, {"embedding": emb}), Path(tmp) / "bare_e.parquet")
            pq.write_table(to_table(ids, idents, {"w": lat}), Path(tmp) / "bare_w.parquet")

        def ours() -> None:
            """A new unit and new sample keys every round: each call is a complete commit."""
            rep = next(commit_rounds)
            commit(
                ctx.catalog,
                ctx.store,
                dataset_id=ds,
                unit=f"rep{rep}",
                samples=NewSamples(
                    keys=[f"{rep}/{i}" for i in range(rows)], role="variation", identity_ids=idents
                ),
                shards=[
                    ShardSpec("embedding", "m", {"embedding": emb}),
                    ShardSpec("latent", "g", {"w": lat}),
                ],
            )

        timings = measure(
            {"bare pq.write_table (2 files)": bare, "synthdb commit (2 shards + rows)": ours},
            args,
            rows,
            "rows/s",
        )
        ctx.close()
    floor, committed = timings.values()
    verdict([judge(committed, floor, GOAL, faster=False)])


if __name__ == "__main__":
    main()
