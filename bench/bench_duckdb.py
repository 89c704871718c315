"""Per-identity mean embedding norm over 1,000,000 rows in 20 shards: ``synthdb query`` vs pandas.

The DuckDB side is the whole ``synthdb.analysis.query.query`` call (sandboxed connection, catalog
attached, shard views); the pandas side reads the same Parquet files with ``pandas.read_parquet``,
stacks the vectors with NumPy and groups by identity, as a script would. Same process, medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from synthdb.admin import init_workspace
from synthdb.analysis.query import query
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.schema import Shard
from synthdb.store.commit import NewSamples, ShardSpec, commit

ROWS, SHARDS, DIM, IDENTITIES, REPEATS = 1_000_000, 20, 512, 20_000, 3
SQL = """SELECT identity_id,
       avg(sqrt(array_inner_product(embedding::FLOAT[512], embedding::FLOAT[512]))) AS norm
FROM embeddings GROUP BY identity_id ORDER BY identity_id"""


def pandas_way(paths: list[Path]) -> pd.Series:
    frame = pd.read_parquet(paths, columns=["identity_id", "embedding"])
    vectors = np.stack(frame["embedding"].to_numpy())
    return pd.Series(np.linalg.norm(vectors, axis=1)).groupby(frame["identity_id"].to_numpy()).mean()


def main() -> None:
    rng = np.random.default_rng(0)
    per = ROWS // SHARDS
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        ctx = init_workspace(Path(tmp) / "ws")
        ds = create_dataset(ctx.catalog, "bench", "synthetic", "generated")
        for shard in range(SHARDS):
            rows = range(shard * per, (shard + 1) * per)
            commit(
                ctx.catalog,
                ctx.store,
                dataset_id=ds,
                unit=str(shard),
                samples=NewSamples(
                    keys=[str(i) for i in rows],
                    role="variation",
                    identity_labels=[str(i % IDENTITIES) for i in rows],
                ),
                shards=[
                    ShardSpec("embedding", "m", {"embedding": rng.standard_normal((per, DIM), np.float32)})
                ],
            )
        with ctx.catalog.engine.connect() as conn:
            paths = [ctx.store.abspath(p) for p in conn.execute(sa.select(Shard.path)).scalars()]
        duck, pand = [], []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            ours = query(ctx, SQL)
            duck.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs = pandas_way(paths)
            pand.append(time.perf_counter() - t0)
        np.testing.assert_allclose(ours.column("norm").to_numpy(), theirs.to_numpy(), rtol=1e-4)
        ctx.close()
    d, p = statistics.median(duck), statistics.median(pand)
    print(f"{'method':<40}{'median s':>10}")
    print(f"{'synthdb query (DuckDB)':<40}{d:>10.3f}")
    print(f"{'pandas.read_parquet + numpy':<40}{p:>10.3f}")
    print(f"pandas / DuckDB = {p / d:.1f}x (DuckDB should win: > 1)")


if __name__ == "__main__":
    main()
