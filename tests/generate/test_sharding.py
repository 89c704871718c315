"""Sharded variations: 4 concurrent ``synthdb generate variations --shard-index i --num-shards 4``
processes writing into one catalog (a SQLite file, and the PostgreSQL server) equal the 1-process run
bit for bit per sample key, store each sample once, and leave fsck clean.

All five processes (4 shards and the 1-process run, concurrently) run at one torch thread: torch's CPU
matmuls and convolutions split their sums by thread, so their last bits depend on the thread count.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import sqlalchemy as sa

from synthdb.catalog.runs import list_runs
from synthdb.catalog.schema import Sample
from synthdb.context import Context
from synthdb.generate import units
from synthdb.generate.references import ReferenceParams, generate_references
from synthdb.store.fsck import fsck
from tests.generate.test_references import vectors

TINY_GENERATOR = "stylegan2-tiny"  # untrained: these tests are about the machinery, not faces

IDENTITIES, VARIATIONS = 6, 3


def variations_cli(ctx: Context, name: str, *shard: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTHDB_", "SLURM_", "SGE_"))}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "synthdb.cli.main",
            "-w",
            str(ctx.ws.root),
            "-q",
            "generate",
            "variations",
            "--name",
            name,
            "--references",
            "refs",
            "--num-variations",
            str(VARIATIONS),
            "--dispersion-iterations",
            "2",
            "--dispersion-latent-global-coefficient",
            "0.1",
            "--identities-per-unit",
            "1",
            "--batch-size",
            "3",
            "--generator",
            "stylegan2-tiny",
            *shard,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_four_concurrent_shards_equal_one_process(ctx: Context) -> None:
    """On SQLite and PostgreSQL (the ``ctx`` fixture)."""
    generate_references(
        ctx,
        ReferenceParams(generator=TINY_GENERATOR, name="refs", algorithm="random", num_identities=IDENTITIES),
    )
    procs = [variations_cli(ctx, "one")]
    procs += [variations_cli(ctx, "sharded", "--shard-index", str(i), "--num-shards", "4") for i in range(4)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outs.append(out)
    assert [f"(shard {i + 1} of 4)" in out for i, out in enumerate(outs[1:])] == [True] * 4

    runs = list_runs(ctx.catalog, kind="variations")
    shards = sorted((run.shard_index, run.shard_count) for run in runs if run.shard_count == 4)
    assert shards == [(i, 4) for i in range(4)] and all(run.status == "succeeded" for run in runs)
    want_keys = [f"{i:05d}/augmentation_{a}" for i in range(IDENTITIES) for a in range(VARIATIONS)]
    for content in ("latent", "embedding"):
        keys, got = vectors(ctx, "sharded", content)
        one_keys, want = vectors(ctx, "one", content)
        assert one_keys == want_keys and sorted(keys) == want_keys  # every sample once
        by_key = dict(zip(keys, got, strict=True))
        assert all(np.array_equal(by_key[key], row) for key, row in zip(one_keys, want, strict=True))
    with ctx.catalog.engine.connect() as conn:  # and once in the catalog, not only in the shards
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(Sample.__table__)
            .where(Sample.__table__.c.key.like("%aug%"))
        ).scalar_one()
    assert count == 2 * len(want_keys)  # "one" and "sharded"
    by_shard = [row for run in runs if run.shard_count == 4 for row in units.read_stats(ctx, run.id)]
    single = next(run.id for run in runs if run.shard_count == 1)
    np.testing.assert_equal(  # NaN force columns in each unit's final row compare equal
        sorted(by_shard, key=lambda r: (r["unit"], r["iteration"])), units.read_stats(ctx, single)
    )
    assert fsck(ctx.catalog, ctx.store).clean
