"""SIGKILL at a random (seeded) point of a generation run, then ``runs resume``: the result equals the
uninterrupted run bit for bit (CPU), no sample is stored twice, and fsck is clean. Five trials for each
of random, ict, langevin (references) and dispersion (variations).

A trial's child process kills itself with SIGKILL either just before its k-th commit, or inside it: after
the shard files were renamed into the store and before the catalog transaction (the worst moment: files
with no row). Children fork from a forkserver that imported torch and synthdb once, so a trial costs
its generation work, not an interpreter start.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pytest

from synthdb.catalog.runs import get_run, list_runs
from synthdb.context import Context
from synthdb.generate import references, units, variations
from synthdb.generate.references import LangevinParams, ReferenceParams, generate_references
from synthdb.generate.resume import resume_run
from synthdb.store import commit as protocol
from synthdb.store.fsck import fsck, gc
from tests.generate.test_references import vectors

TINY_GENERATOR = "stylegan2-tiny"  # untrained: these tests are about the machinery, not faces

TRIALS = 5
REFERENCES = ReferenceParams(
    generator=TINY_GENERATOR,
    name="whole",
    num_identities=4,
    ict=0.25,
    batch_size=1,  # random, ict: a unit per identity or candidate
    langevin=LangevinParams(iterations=3, repulsion_radius=0.5),  # 4 units: 3 iterations and the final
)
DISPERSION = variations.VariationParams(
    generator=TINY_GENERATOR,
    name="whole",
    references="refs",
    num_variations=2,
    iterations=1,
    global_coefficient=0.1,
    identities_per_unit=1,
    batch_size=2,
)


def killed_child(where: str, params: dict[str, Any], kill_after: int, mode: str) -> None:
    """Run a generation in this (forked) process and SIGKILL it at commit ``kill_after`` (0-based)."""
    calls = {"n": 0}
    real_commit, real_publish = protocol.commit, protocol._publish

    def killing_commit(*args: Any, **kwargs: Any) -> Any:
        if calls["n"] == kill_after and mode == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        calls["n"] += 1
        return real_commit(*args, **kwargs)

    def killing_publish(*args: Any, **kwargs: Any) -> Any:
        out = real_publish(*args, **kwargs)
        if calls["n"] == kill_after + 1 and mode == "inside":
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    references.commit = units.commit = killing_commit  # every unit commits through one of these
    protocol._publish = killing_publish
    with Context.open(where) as ctx:
        if "references" in params:
            variations.generate_variations(ctx, variations.VariationParams(**params))
        else:
            references.generate_references(ctx, ReferenceParams.from_dict(params))


def forkserver() -> multiprocessing.context.BaseContext:
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload([__name__])  # imports torch and synthdb once, before any thread starts
    return mp


def resume_cli(ctx: Context, run_id: int) -> None:
    cli = [sys.executable, "-m", "synthdb.cli.main", "-w", str(ctx.ws.root), "-q"]
    proc = subprocess.run(
        [*cli, "runs", "resume", str(run_id)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "resumed and succeeded" in proc.stdout


@pytest.mark.parametrize("algorithm", ["random", "ict", "langevin", "dispersion"])
@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(sqlite_ctx: Context, algorithm: str) -> None:
    ctx = sqlite_ctx
    if algorithm == "dispersion":
        generate_references(
            ctx, ReferenceParams(generator=TINY_GENERATOR, name="refs", algorithm="random", num_identities=4)
        )
        whole: Any = DISPERSION
        want_run = variations.generate_variations(ctx, whole)
    else:
        whole = replace(REFERENCES, algorithm=algorithm, batch_size=4 if algorithm == "langevin" else 1)
        want_run = generate_references(ctx, whole)
    committed_units = len(units.done_units(ctx, want_run))
    assert committed_units >= 4  # enough commits to kill between
    chooser = random.Random(f"{algorithm}-kill")  # seeded: the same kill points every time
    mp = forkserver()
    for trial in range(TRIALS):
        name = f"killed{trial}"
        kill_after, mode = chooser.randrange(committed_units), chooser.choice(["before", "inside"])
        child = mp.Process(
            target=killed_child, args=(str(ctx.ws.root), asdict(replace(whole, name=name)), kill_after, mode)
        )
        child.start()
        child.join(300)
        assert child.exitcode == -signal.SIGKILL, f"trial {trial}: exit code {child.exitcode}"
        run_id = max(run.id for run in list_runs(ctx.catalog))
        assert get_run(ctx.catalog, run_id).status == "running"  # nobody closed it: the process died
        assert len(units.done_units(ctx, run_id)) == kill_after
        if trial == 0 and algorithm in ("langevin", "dispersion"):
            resume_cli(ctx, run_id)  # through the real command line, once per kind of run
        else:
            resume_run(ctx, run_id)
        assert get_run(ctx.catalog, run_id).status == "succeeded"
        for content in ("embedding", "latent"):
            keys, got = vectors(ctx, name, content)
            want_keys, want = vectors(ctx, "whole", content)
            assert keys == want_keys and len(set(keys)) == len(keys)  # no sample twice
            assert np.array_equal(got, want), f"trial {trial} ({mode} commit {kill_after}) differs"
        # stats too (assert_equal: the NaN force columns of a variations unit's final row compare equal)
        np.testing.assert_equal(units.read_stats(ctx, run_id), units.read_stats(ctx, want_run))
    gc(ctx.catalog, ctx.store, min_age=0)  # a kill inside a commit leaves a file no row references, by design
    assert fsck(ctx.catalog, ctx.store).clean
