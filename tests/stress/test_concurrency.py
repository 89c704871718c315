"""Concurrent writers: ``WRITERS`` processes committing into one catalog, on SQLite and on PostgreSQL.

Each property is checked on the rows themselves: every row a writer reported is there exactly once,
ids never collide, every committed vector belongs to one sample, no writer saw a lock error, and the
store is clean afterwards. The commit writers run with a 1 ms SQLite busy timeout, so the retry with
backoff and jitter in ``Catalog.begin`` (not SQLite's own busy handler) is what keeps them going, and
they all create the same identities at once (on PostgreSQL that used to end in a unique violation).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from PIL import Image

from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.schema import Dataset, Identity, Run, Sample, Shard
from synthdb.context import Context
from synthdb.store import fsck
from tests.stress.harness import FULL, STATS, WRITERS, clean_env, command, synthdb

COMMITS, ROWS = (40, 100) if FULL else (6, 20)
# Each variations writer is a torch process (~4 s of CPU to start): `make test` runs 3, on SQLite.
SHARDS = WRITERS if FULL else 3

WRITER = r"""
import sys
import numpy as np
import pytest
from synthdb.catalog.engine import Catalog
from synthdb.context import Context
from synthdb.store.commit import NewSamples, ShardSpec, commit

ws, dataset, writer, commits, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:6])
ctx = Context.open(ws)
ctx.catalog = Catalog(ctx.ws.catalog_url, busy_timeout_ms=1)  # lock waits go through our retries
for c in range(commits):
    keys = [f"w{writer}/c{c}/r{r}" for r in range(rows)]
    vectors = np.full((rows, 16), writer * 1000 + c, np.float32)
    vectors[:, 1] = np.arange(rows)
    labels = [f"c{c}-{r % 3}" for r in range(rows)]  # every writer creates the same identities
    commit(ctx.catalog, ctx.store, dataset_id=dataset, unit=f"w{writer}c{c}",
           samples=NewSamples(keys=keys, role="variation", identity_labels=labels),
           shards=[ShardSpec("embedding", "m16", {"embedding": vectors})])
print("done")
"""


def _env(ctx: Context) -> dict[str, str]:
    return clean_env(SYNTHDB_CATALOG_URL=ctx.ws.catalog_url)


def _run_all(ctx: Context, commands: list[list[str]]) -> None:
    """Start every command at once against the workspace's catalog; each must succeed with no lock error
    or traceback reaching its user."""
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(ctx))
        for args in commands
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err.lower() and "traceback" not in err.lower(), err


def _count_rows(ctx: Context, rows: int) -> None:
    STATS["rows_written_concurrently"] += rows
    STATS[f"rows_written_concurrently[{ctx.catalog.dialect}]"] += rows


@pytest.mark.slow
def test_commit_writers_lose_nothing(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "shared", "synthetic", "generated")
    _run_all(
        ctx,
        [
            [sys.executable, "-c", WRITER, str(ctx.ws.root), str(ds), str(w), str(COMMITS), str(ROWS)]
            for w in range(WRITERS)
        ],
    )
    sample, shard, identity = Sample.__table__, Shard.__table__, Identity.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(sa.select(sample.c.id, sample.c.key)).all()
        labelled = conn.execute(sa.select(sample.c.key, identity.c.label).join(identity)).all()
        identities = conn.execute(sa.select(sa.func.count()).select_from(identity)).scalar_one()
        paths = conn.execute(sa.select(shard.c.path).where(shard.c.state == "committed")).scalars().all()
    want = {f"w{w}/c{c}/r{r}" for w in range(WRITERS) for c in range(COMMITS) for r in range(ROWS)}
    keys = [key for _, key in rows]
    assert len(keys) == len(want) and set(keys) == want  # nothing lost, nothing twice
    assert len({sid for sid, _ in rows}) == len(rows)  # ids never collide
    assert identities == COMMITS * 3  # labels created by several writers at once exist once
    assert all(label == f"{key.split('/')[1]}-{int(key.split('/')[2][1:]) % 3}" for key, label in labelled)
    assert len(paths) == WRITERS * COMMITS
    by_id = dict(rows)
    seen: dict[int, tuple[float, float]] = {}
    for path in paths:
        table = pq.read_table(ctx.store.abspath(path))
        vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, 16)
        for sid, vector in zip(table.column("sample_id").to_pylist(), vectors, strict=True):
            assert sid not in seen  # one vector per sample
            seen[sid] = (float(vector[0]), float(vector[1]))
    for sid, (tag, row) in seen.items():  # each vector sits on the sample its writer meant
        w, c, r = (int(part[1:]) for part in by_id[sid].split("/"))
        assert (tag, row) == (w * 1000 + c, r)
    assert len(seen) == len(want) and fsck.fsck(ctx.catalog, ctx.store).clean
    _count_rows(ctx, len(want))


def test_imports_of_separate_datasets(ctx: Context, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for i in range(12):
        folder = tree / f"id{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")
    _run_all(
        ctx,
        [
            command(ctx.ws.root, "import", "imagefolder", str(tree), "--name", f"ds{w}")
            for w in range(WRITERS)
        ],
    )
    with ctx.catalog.engine.connect() as conn:
        counts = dict(
            conn.execute(
                sa.select(Dataset.name, sa.func.count(Sample.id)).join(Sample).group_by(Dataset.name)
            ).all()
        )
        statuses = conn.execute(sa.select(Run.status)).scalars().all()
    assert counts == {f"ds{w}": 12 for w in range(WRITERS)}
    assert statuses == ["succeeded"] * WRITERS
    _count_rows(ctx, sum(counts.values()))


@pytest.mark.slow
def test_sharded_variations_writers(ctx: Context) -> None:
    if not FULL and ctx.catalog.dialect == "postgresql":
        pytest.skip("SYNTHDB_STRESS=1 runs the PostgreSQL case (the commit and import writers cover it here)")
    ws = ctx.ws.root
    synthdb(ws, "generate", "references", "--name", "refs", "--num-identities", str(SHARDS),
            "--algorithm", "random")  # fmt: skip
    _run_all(
        ctx,
        [
            command(
                ws,
                "generate",
                "variations",
                "--name",
                "var",
                "--references",
                "refs",
                "--num-variations",
                "2",
                "--dispersion-iterations",
                "1",
                "--identities-per-unit",
                "1",
                "--shard-index",
                str(w),
                "--num-shards",
                str(SHARDS),
            )  # fmt: skip
            for w in range(SHARDS)
        ],
    )
    sample, dataset, shard = Sample.__table__, Dataset.__table__, Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        var = conn.execute(sa.select(dataset.c.id).where(dataset.c.name == "var")).scalar_one()
        keys = conn.execute(sa.select(sample.c.key).where(sample.c.dataset_id == var)).scalars().all()
        embedded = conn.execute(
            sa.select(sa.func.sum(shard.c.rows)).where(
                shard.c.dataset_id == var, shard.c.content == "embedding", shard.c.state == "committed"
            )
        ).scalar_one()
        datasets = conn.execute(sa.select(sa.func.count()).select_from(dataset)).scalar_one()
    want = {f"{i:05d}/augmentation_{a}" for i in range(SHARDS) for a in range(2)}
    assert sorted(keys) == sorted(want) and embedded == len(want)  # every shard's rows, once
    assert datasets == 2  # the shards shared one output dataset
    assert fsck.fsck(ctx.catalog, ctx.store).clean
    _count_rows(ctx, len(keys))
