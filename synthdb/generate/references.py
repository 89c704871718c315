"""Reference identities: ``random``, ``ict`` (rejection on the inter-class threshold) and ``langevin``
(Brownian identity repulsion), written into the catalog as a synthetic dataset (spec section 7.2).

Each identity ``i`` gets one sample ``{i:05d}/reference`` (role ``reference``) with a latent shard
(``w``, and ``z`` where w is still the mapping of z) in the generator's space and an embedding shard in
the embedder's space. Work units: batches of identities (random), candidate batches (ict), iterations
(langevin, with a ``checkpoint`` shard of the latents and a ``stats`` shard per iteration). Langevin
also runs across processes and machines under torchrun (:mod:`synthdb.distributed`).

Fixed against the reference: ICT resumes correctly (accepted embeddings are re-read from the catalog),
Langevin resumes from the newest checkpoint in iteration order without repeating an iteration, the
repulsion gradient is one backward pass per batch (others' embeddings detached), force statistics are
norms over the latent axis, ``--avoid`` keeps its radius (default r0; the reference's 0 disabled it).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from typing import Any

import torch
from torch import Tensor

from synthdb import distributed, seeds
from synthdb.analysis.vectors import load_vectors
from synthdb.angles import angle
from synthdb.catalog import datasets, runs
from synthdb.catalog.schema import RunKind, SampleRole, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate import rerun, stats, units
from synthdb.generate.params import LangevinParams, ReferenceParams  # noqa: F401 - the API imports them here
from synthdb.generate.pipeline import Pipeline, load_pipeline
from synthdb.progress import progress_bar
from synthdb.store import parquet
from synthdb.store.commit import TableSpec, commit


def label(index: int) -> str:
    return f"{index:05d}"


def _latents(
    pipeline: Pipeline, seed: int, indices: range | list[int], truncation: float, stream: str
) -> tuple[Tensor, Tensor]:
    """(z, w) of the given draws: z of draw k from its own seed, so any subset reproduces."""
    gen = pipeline.generator
    z = torch.cat([torch.randn(1, gen.z_dim, generator=seeds.rng(seed, stream, k)) for k in indices])
    with torch.no_grad():
        w = gen.mapping(z.to(gen.device), truncation_psi=truncation)
    return z, w


def _commit_references(
    ctx: Context,
    pipeline: Pipeline,
    dataset: int,
    run_id: int,
    unit: str,
    first: int,
    w: Tensor,
    e: Tensor,
    z: Tensor | None,
    tables: list[TableSpec],
) -> None:
    labels = [label(first + k) for k in range(len(w))]
    latent = {"w": w.cpu().numpy()} | ({"z": z.cpu().numpy()} if z is not None else {})
    units.commit_generated(
        ctx,
        pipeline,
        dataset,
        run_id,
        unit,
        labels,
        ["reference"] * len(labels),
        SampleRole.REFERENCE,
        latent,
        e.cpu().numpy(),
        tables,
    )


def generate_references(
    ctx: Context, params: ReferenceParams, run_id: int | None = None, quiet: bool = True
) -> int:
    """Run (or, with ``run_id``, resume) a references run; return the run id.

    Under torchrun (or inside a process group the caller set up) Langevin runs on all ranks, see
    :mod:`synthdb.distributed`: every rank calls this, rank 0 records the run."""
    params.check()
    params = params.resolved()
    with distributed.joined(params.device) as (group, device):
        if group.size > 1 and params.algorithm != "langevin":
            raise SynthdbError(
                f"{params.algorithm} references run in one process: start them without torchrun "
                "(only langevin couples all identities)"
            )
        pipeline = load_pipeline(ctx, replace(params, device=device))
        avoid = None
        if params.avoid:
            vectors = load_vectors(ctx, params.avoid, pipeline.embedder.name).by_sample().vectors
            avoid = torch.from_numpy(vectors).to(pipeline.generator.device)
        if not group.leader:
            group.share()  # rank 0's look for an unfinished run of the same command (below)
            run_id, _ = group.share()  # the run and dataset rank 0 opens below
            _langevin(ctx, pipeline, params, -1, run_id, set(), avoid, True, group)
            return run_id
        resume = group.share(  # the same command again after an interruption resumes the run it left
            lambda: (
                rerun.run_to_continue(ctx, RunKind.REFERENCES, params.name, asdict(params))
                if run_id is None
                else run_id
            )
        )
        with runs.recorded_run(
            ctx.catalog, RunKind.REFERENCES, params.algorithm, asdict(params), params.seed, resume=resume
        ) as run_id:
            attributes = {"generator": pipeline.generator.describe(), "embedder": pipeline.embedder.name}
            run_id, dataset = group.share(
                lambda: (
                    run_id, datasets.output_dataset(ctx.catalog, params.name, run_id, attributes, False)
                )
            )
            done = units.done_units(ctx, run_id)
            if params.algorithm == "langevin":
                summary = _langevin(ctx, pipeline, params, dataset, run_id, done, avoid, quiet, group)
            else:
                summary = {"random": _random, "ict": _ict}[params.algorithm](
                    ctx, pipeline, params, dataset, run_id, done, avoid, quiet
                )
            runs.set_summary(ctx.catalog, run_id, {"dataset": params.name, **summary})
    return run_id


def _random(
    ctx: Context,
    pipeline: Pipeline,
    params: ReferenceParams,
    dataset: int,
    run_id: int,
    done: set[str],
    avoid: Tensor | None,
    quiet: bool,
) -> dict[str, Any]:
    n, b = params.num_identities, params.batch_size
    with progress_bar(n, "random references", quiet) as advance:
        for start in range(0, n, b):
            unit = f"ids/{start:06d}"
            count = min(b, n - start)
            if unit not in done:
                z, w = _latents(pipeline, params.seed, range(start, start + count), params.truncation, "z")
                _commit_references(ctx, pipeline, dataset, run_id, unit, start, w, pipeline.embed(w), z, [])
                runs.set_progress(ctx.catalog, run_id, (start + count) / n)
            advance(count)
    return {"identities": n}


ICT_UNIT_BATCHES = 64
"""Candidate batches that accept nobody share one committed unit, up to this many (or
:data:`ICT_UNIT_S` seconds): a strict threshold rejects hundreds of batches in a row, and one stats file per
batch buried the store in tiny files. A batch that accepts someone commits the unit at once."""
ICT_UNIT_S = 60.0


def _next_ict_batch(done: set[str]) -> int:
    """The first candidate batch no committed unit covers; units are ``cand/FIRST-LAST`` (``cand/N``: one
    batch, as runs wrote before units were batched)."""
    last = [int(unit.rpartition("/")[2].rpartition("-")[2]) for unit in done if unit.startswith("cand/")]
    return max(last) + 1 if last else 0


def _ict(
    ctx: Context,
    pipeline: Pipeline,
    params: ReferenceParams,
    dataset: int,
    run_id: int,
    done: set[str],
    avoid: Tensor | None,
    quiet: bool,
) -> dict[str, Any]:
    """Batched candidates, accepted in candidate order: candidate k is accepted iff its angle to every
    accepted reference (and to every ``--avoid`` embedding) is >= ICT. Units group candidate batches (see
    :data:`ICT_UNIT_BATCHES`); what is accepted does not depend on how they are grouped, so a resumed run,
    which redoes the batches of the unit it lost, accepts what an uninterrupted one does."""
    n, b = params.num_identities, params.batch_size
    accepted = [
        torch.from_numpy(parquet.read_vectors(path, "embedding")[2].copy())
        for _unit, path in units.unit_shards(ctx, run_id, ShardContent.EMBEDDING)
    ]
    kept = torch.cat(accepted) if accepted else torch.zeros(0, pipeline.embedder.dims)
    batch = _next_ict_batch(done)
    limit = params.max_candidates * n
    rejected: list[dict[str, Any]] = []  # stats rows of the batches since the last commit (none accepted)
    opened = time.monotonic()
    with progress_bar(n, "ict references", quiet, unit="identities") as advance:
        advance(len(kept))
        while len(kept) < n:
            if batch * b >= limit:
                if rejected:
                    _commit_ict_unit(ctx, pipeline, dataset, run_id, batch, rejected, len(kept))
                raise SynthdbError(
                    f"ICT {params.ict:.3f} rad: only {len(kept)} of {n} identities after {batch * b} "
                    f"candidates (--max-candidates {params.max_candidates} per identity): lower --ict, raise "
                    "--max-candidates, or use --algorithm langevin, which pushes identities apart instead "
                    "of waiting for far-apart ones"
                )
            indices = list(range(batch * b, (batch + 1) * b))
            z, w = _latents(pipeline, params.seed, indices, params.truncation, "ict")
            e = pipeline.embed(w)
            take: list[int] = []
            for k in range(len(e)):
                if len(kept) + len(take) == n:
                    break
                others = torch.cat([kept, e[take]]) if take else kept
                if avoid is not None:
                    others = torch.cat([others, avoid])
                if len(others) == 0 or bool((angle(e[k : k + 1], others) >= params.ict).all()):
                    take.append(k)
            rows = [*rejected, {"batch": batch, "candidates": len(e), "accepted": len(take)}]
            batch += 1
            if take or len(rows) >= ICT_UNIT_BATCHES or time.monotonic() - opened >= ICT_UNIT_S:
                found = (w[take], e[take], z[take]) if take else None
                _commit_ict_unit(ctx, pipeline, dataset, run_id, batch, rows, len(kept), found)
                rows, opened = [], time.monotonic()
            rejected = rows
            kept = torch.cat([kept, e[take]])
            advance(len(take))
            runs.set_progress(ctx.catalog, run_id, len(kept) / n)
    return {"identities": n, "candidates": batch * b}


def _commit_ict_unit(
    ctx: Context,
    pipeline: Pipeline,
    dataset: int,
    run_id: int,
    end: int,
    rows: list[dict[str, Any]],
    first: int,
    found: tuple[Tensor, Tensor, Tensor] | None = None,
) -> None:
    """Commit candidate batches ``end - len(rows)`` to ``end - 1`` as unit ``cand/FIRST-LAST``: their stats
    rows, and the references the last of them accepted (``found``: w, embeddings, z; labels from
    ``first``)."""
    unit = f"cand/{end - len(rows):06d}-{end - 1:06d}"
    table = stats.table(rows)
    if found is not None:
        w, e, z = found
        _commit_references(ctx, pipeline, dataset, run_id, unit, first, w, e, z, [table])
        return
    commit(ctx.catalog, ctx.store, dataset_id=dataset, run_id=run_id, unit=unit, shards=[], tables=[table])


def repulsion_potential(
    e: Tensor, rows: slice, fixed: Tensor, k: float, r0: float, avoid: Tensor | None, rc: float
) -> Tensor:
    """Sum over the chunk's identities i of U_i = sum_{j != i} [d_ij < r0] k/2 (r0 - d_ij)^2 (+ the same
    against the fixed ``avoid`` embeddings with radius rc); ``fixed`` is detached, so the gradient of the
    sum with respect to w_i is exactly -F_int_i."""
    d = angle(e, fixed)
    own = torch.arange(rows.start, rows.stop, device=e.device)
    not_self = torch.ones_like(d, dtype=torch.bool)
    not_self[torch.arange(len(e)), own] = False
    u = torch.where(not_self, torch.relu(r0 - d) ** 2, torch.zeros_like(d)).sum() * k / 2
    if avoid is not None:
        u = u + (torch.relu(rc - angle(e, avoid)) ** 2).sum() * k / 2
    return u


def langevin_step(
    pipeline: Pipeline,
    w: Tensor,
    t: int,
    params: ReferenceParams,
    avoid: Tensor | None,
    group: distributed.Group = distributed.SOLO,
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """One iteration: (embeddings of w before the update, updated w, stats row t; empty off rank 0).
    ``params`` are resolved (:meth:`ReferenceParams.resolved`).

    ``w`` is all identities on every rank; a rank runs the network passes of its own rows only and
    gathers the embeddings (for the repulsion), forces and updated rows of the others."""
    lp = params.langevin
    rc = lp.avoid_radius if lp.avoid_radius is not None else lp.repulsion_radius
    k, r0 = lp.repulsion_coefficient, lp.repulsion_radius
    split = group.split(len(w), pipeline.batch_size)
    mine = split.rows
    if lp.whole_graph:
        gathered: list[Tensor] = []

        def coupled(e: Tensor, own: Tensor) -> Tensor:
            # the potential of ALL rows, others' rows detached: the one-process matrix shapes, so the
            # same bits as one process (only this rank's rows carry gradient)
            gathered.append(split.gather(own))
            full = torch.cat([gathered[0][: mine.start], e, gathered[0][mine.stop :]])
            return repulsion_potential(full, slice(0, len(full)), gathered[0], k, r0, avoid, rc)

        _, grad = pipeline.coupled_gradient(w[mine], coupled)
        fixed = gathered[0]
    else:
        fixed = split.gather(pipeline.embed(w[mine]))
        _, grad = pipeline.gradient(
            w[mine],
            lambda e, rows: repulsion_potential(
                e, slice(mine.start + rows.start, mine.start + rows.stop), fixed, k, r0, avoid, rc
            ),
        )
    f_int = -split.gather(grad)
    f_lat = lp.latent_force * (pipeline.w_avg - w)
    xi = lp.random_force * torch.randn(w.shape, generator=seeds.rng(params.seed, "langevin", t)).to(w.device)
    drift = f_int + f_lat
    if lp.timestep < 0:
        w_min = float(stats.pair_values(w, "euclid").min()) if len(w) > 1 else 1.0
        f_max = float(drift.norm(dim=-1).max())
        dt = abs(lp.timestep) * lp.viscous_coefficient * w_min / f_max if f_max > 0 else abs(lp.timestep)
    else:
        dt = lp.timestep
    row: dict[str, float] = {}
    if group.leader:
        row = {"iteration": t, **stats.population(fixed, w, pipeline.w_avg, params.ict)}
        row |= stats.force_norms("intf", f_int) | stats.force_norms("rndf", xi)
        row |= stats.force_norms("latf", f_lat) | stats.force_norms("totf", drift) | {"timestep": dt}
    mu = lp.viscous_coefficient
    # each rank moves its own rows; gathering them keeps one owner per row if ranks' arithmetic differs
    moved = w[mine] + (dt / mu) * drift[mine] + (math.sqrt(dt) / mu) * xi[mine]
    return fixed, split.gather(moved), row


def _langevin(
    ctx: Context,
    pipeline: Pipeline,
    params: ReferenceParams,
    dataset: int,
    run_id: int,
    done: set[str],
    avoid: Tensor | None,
    quiet: bool,
    group: distributed.Group = distributed.SOLO,
) -> dict[str, Any]:
    """Iterations from the newest checkpoint (rank 0 reads it and hands it to the other ranks); rank 0
    commits each checkpointed iteration and the final samples."""
    n, lp = params.num_identities, params.langevin
    summary = {"identities": n, "iterations": lp.iterations}
    start, w = group.share(lambda: _langevin_state(ctx, pipeline, params, run_id, done))
    if w is None:
        return summary
    w = w.to(pipeline.generator.device)
    pending: list[dict[str, float]] = []
    with progress_bar(lp.iterations + 1, "langevin iterations", quiet) as advance:
        advance(start)
        for t in range(start, lp.iterations):
            _, w, row = langevin_step(pipeline, w, t, params, avoid, group)
            pending.append(row)
            if group.leader and ((t + 1) % lp.checkpoint_every == 0 or t == lp.iterations - 1):
                commit(
                    ctx.catalog,
                    ctx.store,
                    dataset_id=dataset,
                    run_id=run_id,
                    unit=f"iter/{t:06d}",
                    shards=[],
                    tables=[
                        TableSpec(ShardContent.CHECKPOINT, pipeline.generator.name, {"w": w.cpu().numpy()}),
                        stats.table(pending),
                    ],
                )
                pending = []
                runs.set_progress(ctx.catalog, run_id, (t + 1) / (lp.iterations + 1))
            advance(1)
        split = group.split(n, pipeline.batch_size)
        e = split.gather(pipeline.embed(w[split.rows]))
        if group.leader:
            final = {"iteration": lp.iterations, **stats.population(e, w, pipeline.w_avg, params.ict)}
            _commit_references(
                ctx, pipeline, dataset, run_id, "iter/final", 0, w, e, None, [stats.table([final])]
            )
        advance(1)
    return summary


def _langevin_state(
    ctx: Context, pipeline: Pipeline, params: ReferenceParams, run_id: int, done: set[str]
) -> tuple[int, Tensor | None]:
    """(first iteration to run, latents on the CPU) from the newest checkpoint, or the initial draw;
    (_, None) when the run has finished."""
    if "iter/final" in done:
        return params.langevin.iterations + 1, None
    checkpoints = units.unit_shards(ctx, run_id, ShardContent.CHECKPOINT)
    if not checkpoints:
        return 0, _latents(pipeline, params.seed, range(params.num_identities), params.truncation, "z")[
            1
        ].cpu()
    unit, path = checkpoints[-1]  # units are zero-padded: name order is iteration order
    flat = parquet.read_table(path).column("w").combine_chunks().flatten().to_numpy()
    return int(unit.split("/")[1]) + 1, torch.from_numpy(flat.copy()).reshape(params.num_identities, -1)
