"""Langevin across processes with torch.distributed (gloo on the CPU), launched the way users launch it:
``torchrun --nproc-per-node 2 -m synthdb.cli.main ...``. A 2-rank run, fresh and resumed from a
checkpoint, equals the 1-process run bit for bit (same torch thread count: torchrun sets 1 per rank),
and the catalog holds each unit once (rank 0 alone commits).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import sqlalchemy as sa
import torch

from synthdb.catalog.runs import finish_run, get_run, list_runs
from synthdb.catalog.schema import Sample, Shard
from synthdb.context import Context
from synthdb.distributed import Group
from synthdb.errors import SynthdbError
from synthdb.generate import units
from synthdb.generate.references import LangevinParams, ReferenceParams, generate_references
from synthdb.store.fsck import fsck
from tests.generate.test_references import vectors

TINY_GENERATOR = "stylegan2-tiny"  # untrained: these tests are about the machinery, not faces

PARAMS = ReferenceParams(
    generator=TINY_GENERATOR,
    name="one",
    num_identities=5,  # 3 batches of 2: rank 0 owns 2 batches, rank 1 owns the short one
    batch_size=2,
    ict=0.25,
    langevin=LangevinParams(iterations=3, repulsion_radius=0.5),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(ws: object, *args: str) -> str:
    """``torchrun --nproc-per-node 2 -m synthdb.cli.main -w WS ARGS``; the stdout of both ranks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTHDB_", "WORLD_SIZE", "RANK"))}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launch += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    proc = subprocess.run(
        [*launch, "-m", "synthdb.cli.main", "-w", str(ws), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@contextmanager
def one_thread() -> Iterator[None]:
    """This process at torchrun's thread count: torch's CPU matmuls and convolutions split their sums
    by thread, so their last bits depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_two_ranks_equal_one_process_fresh_and_resumed(sqlite_ctx: Context) -> None:
    ctx = sqlite_ctx
    with one_thread():
        one = generate_references(ctx, PARAMS)
        cut = generate_references(ctx, replace(PARAMS, name="cut"))
    # "cut" dies after iteration 0: its later iterations and its final samples are gone
    with ctx.catalog.begin() as conn:
        conn.execute(sa.delete(Sample.__table__).where(Sample.__table__.c.run_id == cut))
        conn.execute(
            sa.update(Shard.__table__)
            .where(Shard.__table__.c.run_id == cut, Shard.__table__.c.unit != "iter/000000")
            .values(state="retired")
        )
    finish_run(ctx.catalog, cut, "failed", "killed")

    out = torchrun(
        ctx.ws.root, "generate", "references", "--name", "two", "--num-identities", "5", "--batch-size", "2",
        "--ict", "0.25", "--langevin-iterations", "3", "-r0", "0.5", "--generator", "stylegan2-tiny", "-q",
    )  # fmt: skip
    assert out.count("5 langevin references in dataset two") == 2  # both ranks report the same run
    two = max(run.id for run in list_runs(ctx.catalog))
    assert torchrun(ctx.ws.root, "runs", "resume", str(cut), "-q").count("resumed and succeeded") == 2

    assert len(list_runs(ctx.catalog)) == 3  # one run row per launch, not per rank
    for run_id, name in ((two, "two"), (cut, "cut")):
        assert get_run(ctx.catalog, run_id).status == "succeeded"
        for content in ("latent", "embedding"):
            keys, got = vectors(ctx, name, content)
            want_keys, want = vectors(ctx, "one", content)
            assert keys == want_keys == [f"{i:05d}/reference" for i in range(5)]  # each sample once
            assert np.array_equal(got, want)
        assert units.read_stats(ctx, run_id) == units.read_stats(ctx, one)
        assert sorted(units.done_units(ctx, run_id)) == sorted(units.done_units(ctx, one))
    stats = units.read_stats(ctx, one)
    assert stats[-1]["dist_min"] > stats[0]["dist_min"]  # the identities really moved apart
    assert fsck(ctx.catalog, ctx.store).clean


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_bounded_memory(sqlite_ctx: Context) -> None:
    """The bounded-memory path (a no-grad pass, then one backward per batch) splits its row offsets by
    rank differently from the whole-graph path: it too equals one process bit for bit."""
    ctx = sqlite_ctx
    bounded = replace(PARAMS, langevin=replace(PARAMS.langevin, whole_graph=False))
    with one_thread():
        generate_references(ctx, bounded)
    torchrun(
        ctx.ws.root, "generate", "references", "--name", "two", "--num-identities", "5", "--batch-size", "2",
        "--ict", "0.25", "--langevin-iterations", "3", "-r0", "0.5", "--generator", "stylegan2-tiny",
        "--langevin-bounded-memory", "-q",
    )  # fmt: skip
    for content in ("latent", "embedding"):
        _, got = vectors(ctx, "two", content)
        _, want = vectors(ctx, "one", content)
        assert np.array_equal(got, want)


def test_identities_are_dealt_to_ranks_in_whole_batches() -> None:
    assert [Group(r, 3).split(10, 2).rows for r in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert [Group(r, 2).split(5, 2).rows for r in range(2)] == [slice(0, 4), slice(4, 5)]
    assert Group().split(7, 3).rows == slice(0, 7)
    with pytest.raises(SynthdbError, match="lower --batch-size or start fewer processes"):
        Group(0, 4).split(6, 2)
