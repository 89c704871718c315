"""The crash and concurrency harness: run synthdb commands in subprocesses, kill them, compare catalogs.

A trial runs a real ``synthdb`` CLI command in a child process and sends it SIGKILL at a seeded random
point of its writing phase: from its run row (the first thing a command writes) on, after a delay
drawn over the time an uninterrupted run spent writing. The work is then resumed the way a user would
(re-running the command, or ``synthdb runs resume`` for generation runs) and the catalog compared with
one from an uninterrupted run by ``(dataset, sample key) -> vectors``. ``gc`` then ``fsck`` must come
back clean, so no committed row points to a missing or partial file.

``STATS`` counts what the suite did (trials, faults, rows written concurrently, inputs fuzzed, losses,
corruptions); ``tests/stress/conftest.py`` writes it as JSON when ``SYNTHDB_STRESS_REPORT`` names a file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pyarrow.parquet as pq
import sqlalchemy as sa
import torch

from synthdb.catalog.schema import Dataset, Identity, Run, Sample, Shard
from synthdb.context import Context
from synthdb.store import fsck

FULL = os.environ.get("SYNTHDB_STRESS") == "1"
TRIALS = 20 if FULL else 2
WRITERS = 8
STATS: Counter[str] = Counter()

# (dataset, key) -> ("<content>/<space>/<column>" -> vector bytes)
Snapshot = dict[tuple[str, str], dict[str, bytes]]


@contextmanager
def child_threads() -> Iterator[None]:
    """Run torch in this process with the children's one thread: float sums over other thread counts
    round differently, and a resume is compared bit for bit with a run made in a child."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a child: no SYNTHDB_/SLURM_/SGE_ settings of the test run leak into it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTHDB_", "SLURM_", "SGE_"))}
    return {**base, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def command(ws: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "synthdb.cli.main", "-w", str(ws), "-q", *args]


def synthdb(ws: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a CLI command to the end; a non-zero exit fails with its stderr."""
    proc = subprocess.run(
        command(ws, *args), capture_output=True, text=True, timeout=timeout, env=clean_env()
    )
    assert proc.returncode == 0, f"synthdb {' '.join(args)} failed:\n{proc.stderr}"
    return proc


@dataclass
class Timing:
    """An uninterrupted run: ``startup`` until its run row appeared (interpreter, imports, checks: no
    writes yet), ``total`` until it exited."""

    startup: float
    total: float


def _run_rows(ctx: Context) -> int:
    with ctx.catalog.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(Run.__table__)).scalar_one()


def _launch(ws: Path, args: list[str], ctx: Context) -> tuple[subprocess.Popen[bytes], float | None]:
    """Start ``synthdb args``; return it and when it began writing (its run row appeared), or None
    when it exited first."""
    before = _run_rows(ctx)
    start = time.monotonic()
    proc = subprocess.Popen(
        command(ws, *args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env()
    )
    while proc.poll() is None and time.monotonic() - start < 600:
        if _run_rows(ctx) > before:
            return proc, time.monotonic() - start
        time.sleep(0.01)
    return proc, None


def _finish(proc: subprocess.Popen[bytes], args: list[str]) -> None:
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"synthdb {' '.join(args)} failed:\n{err.decode(errors='replace')}"


def timed(ws: Path, *args: str) -> Timing:
    """Run a CLI command uninterrupted and time its phases (the scale of the kill points)."""
    with Context.open(ws) as ctx:
        start = time.monotonic()
        proc, startup = _launch(ws, list(args), ctx)
        _finish(proc, list(args))
        total = time.monotonic() - start
    return Timing(startup if startup is not None else total, total)


@dataclass
class Kill:
    delay: float  # seconds after the command began writing
    killed: bool  # False when the command finished before the delay ran out


def command_name(args: list[str]) -> str:
    """The CLI command ``args`` start with (``embed``, ``import imagefolder``, ``index build``...), as the
    report counts trials per command."""
    from synthdb.cli.main import cli

    group, words = cli, []
    for word in args:
        sub = group.commands.get(word) if isinstance(group, click.Group) else None
        if sub is None:
            break
        group, words = sub, [*words, word]
    return " ".join(words)


def run_killed(ws: Path, args: list[str], seed: int, timing: Timing, delay: float | None = None) -> Kill:
    """Start ``synthdb args`` and SIGKILL it at a seeded random point of its writing phase: once its run
    row appears, after a delay uniform over the writing time of the uninterrupted run (or ``delay``)."""
    if delay is None:
        delay = random.Random(seed).uniform(0.0, 1.0) * max(timing.total - timing.startup, 0.05)
    with Context.open(ws) as ctx:
        proc, began = _launch(ws, args, ctx)
    name = command_name(args)
    STATS["trials"] += 1
    STATS[f"trials[{name}]"] += 1
    if began is not None:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            STATS["faults_injected"] += 1
            STATS[f"faults_injected[{name}]"] += 1
            return Kill(delay, True)
    _finish(proc, args)
    return Kill(delay, False)


def unfinished_runs(ctx: Context, kind: str) -> list[int]:
    """Runs of ``kind`` still marked running: what a SIGKILL left behind."""
    run = Run.__table__
    with ctx.catalog.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(run.c.id).where(run.c.kind == kind, run.c.status == "running").order_by(run.c.id)
            ).scalars()
        )


def has_dataset(ctx: Context, name: str) -> bool:
    with ctx.catalog.engine.connect() as conn:
        table = Dataset.__table__
        return conn.execute(sa.select(table.c.id).where(table.c.name == name)).first() is not None


def snapshot(ctx: Context) -> tuple[Snapshot, Counter[str]]:
    """Every sample of the catalog with its committed vectors, and the problems found on the way.

    Problems: ``duplicate`` (one sample with two committed vectors of one column: a unit committed
    twice), ``stray`` (a shard row naming a sample id the catalog does not have).
    """
    sample, identity = Sample.__table__, Identity.__table__
    dataset, shard = Dataset.__table__, Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        names = {
            sid: (ds, key)
            for sid, ds, key in conn.execute(
                sa.select(sample.c.id, dataset.c.name, sample.c.key).join(
                    dataset, dataset.c.id == sample.c.dataset_id
                )
            )
        }
        labels = dict(conn.execute(sa.select(sample.c.id, identity.c.label).join(identity)).all())
        roles = dict(conn.execute(sa.select(sample.c.id, sample.c.role)).all())
        shards = conn.execute(
            sa.select(shard.c.path, shard.c.content, shard.c.space).where(
                shard.c.state == "committed", shard.c.content.in_(["embedding", "latent"])
            )
        ).all()
    out: Snapshot = {}
    for sid, name in names.items():
        out[name] = {"identity": str(labels.get(sid)).encode(), "role": roles[sid].encode()}
    problems: Counter[str] = Counter()
    for path, content, space in shards:
        table = pq.read_table(ctx.store.abspath(path))
        ids = table.column("sample_id").to_numpy()
        for column in table.column_names:
            if column in ("sample_id", "identity_id"):
                continue
            flat = np.asarray(table.column(column).combine_chunks().flatten(), dtype=np.float32)
            rows = flat.reshape(len(ids), -1)
            for sid, row in zip(ids.tolist(), rows, strict=True):
                if sid not in names:
                    problems["stray"] += 1
                    continue
                entry = out[names[sid]]
                name = f"{content}/{space}/{column}"
                if name in entry:
                    problems["duplicate"] += 1
                entry[name] = row.tobytes()
    return out, problems


def compare(expected: Snapshot, got: Snapshot) -> Counter[str]:
    """Losses (samples or vectors the interrupted catalog lacks), extras and differing vectors."""
    diff: Counter[str] = Counter()
    for key, columns in expected.items():
        if key not in got:
            diff["lost_samples"] += 1
            continue
        for name, value in columns.items():
            if name not in got[key]:
                diff["lost_vectors"] += 1
            elif got[key][name] != value:
                diff["different_vectors"] += 1
        diff["extra_vectors"] += len(set(got[key]) - set(columns))
    diff["extra_samples"] += len(set(got) - set(expected))
    return +diff


def check_recovered(ctx: Context, expected: Snapshot) -> None:
    """After a resume: the catalog equals the uninterrupted one, and gc + fsck leave a clean store."""
    got, problems = snapshot(ctx)
    diff = compare(expected, got)
    STATS["losses"] += diff["lost_samples"] + diff["lost_vectors"]
    STATS["corruptions"] += sum(problems.values()) + diff["different_vectors"]
    assert not problems and not diff, f"catalog differs from an uninterrupted run: {dict(problems + diff)}"
    fsck.gc(ctx.catalog, ctx.store, min_age=0)
    report = fsck.fsck(ctx.catalog, ctx.store)
    STATS["corruptions"] += len(report.missing) + len(report.corrupt)
    assert report.clean, f"fsck after gc: {report}"
