"""Reference identities: ``random``, ``ict`` (rejection on the inter-class threshold) and ``langevin``
(Brownian identity repulsion), written into the catalog as a synthetic dataset (spec section 7.2).

Each identity ``i`` gets one sample ``{i:05d}/reference`` (role ``reference``) with a latent shard
(``w``, and ``z`` where w is still the mapping of z) in the generator's space and an embedding shard in
the embedder's space. Work units: batches of identities (random), candidate batches (ict), iterations
(langevin, with a ``checkpoint`` shard of the latents and a ``stats`` shard per iteration). Langevin
also runs across processes and machines under torchrun (:mod:`synthdb.generate.distributed`).

Fixed against the reference: ICT resumes correctly (accepted embeddings are re-read from the catalog),
Langevin resumes from the newest checkpoint in iteration order without repeating an iteration, the
repulsion gradient is one backward pass per batch (others' embeddings detached), force statistics are
norms over the latent axis, ``--avoid`` keeps its radius (default r0; the reference's 0 disabled it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from synthdb import defaults, seeds
from synthdb.analysis.vectors import load_vectors
from synthdb.angles import angle
from synthdb.catalog import datasets, runs
from synthdb.catalog.schema import RunKind, SampleRole, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate import distributed, stats, units
from synthdb.generate.pipeline import Pipeline, load_pipeline
from synthdb.progress import progress_bar
from synthdb.store import parquet
from synthdb.store.commit import TableSpec, commit

ALGORITHMS = ("random", "ict", "langevin")


#: The reference's adaptive Langevin step (spec 7.2 d), for generators whose card sets none.
REFERENCE_TIMESTEP = -0.3


@dataclass
class LangevinParams:
    """Reference defaults (spec 7.2 d) except ``checkpoint_every`` (resume needs checkpoints) and what
    depends on the networks: ``repulsion_radius`` (None: the embedder's threshold times the reference's
    r0/ICT ratio) and ``timestep`` (None: the generator card's, else the reference's -0.3)."""

    iterations: int = 10
    checkpoint_every: int = 1
    repulsion_coefficient: float = 1.0
    repulsion_radius: float | None = None
    timestep: float | None = None
    viscous_coefficient: float = 1.0
    random_force: float = 0.01
    latent_force: float = 0.0
    avoid_radius: float | None = None
    #: hold the autograd graph of all identities for one forward pass per iteration (faster); off: a
    #: no-grad pass plus one backward per batch (memory of one batch, for large generators)
    whole_graph: bool = True


@dataclass
class ReferenceParams:
    """Everything a references run needs; stored (resolved) as the run's params so ``runs resume`` can
    rebuild it. ``ict`` None: the embedder's threshold. ``max_candidates`` bounds ICT's draws per
    requested identity, so a threshold too strict for the networks ends in minutes with advice."""

    name: str
    num_identities: int
    algorithm: str = "langevin"
    generator: str = defaults.GENERATOR
    embedder: str = defaults.EMBEDDER
    ict: float | None = None
    truncation: float = defaults.TRUNCATION
    seed: int = 0
    batch_size: int = 8
    avoid: str | None = None
    max_candidates: int = 100
    device: str = "cpu"
    langevin: LangevinParams = field(default_factory=LangevinParams)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceParams:
        data = dict(data)
        data["langevin"] = units.params_from(LangevinParams, data.get("langevin", {}))
        return units.params_from(cls, data)

    def resolved(self) -> ReferenceParams:
        """A copy with every network-dependent default filled in (:mod:`synthdb.defaults`)."""
        lp = self.langevin
        if lp.repulsion_radius is None:
            lp = replace(lp, repulsion_radius=defaults.repulsion_radius(self.embedder))
        if lp.timestep is None:
            setting = defaults.generator_setting(self.generator, "langevin_timestep", REFERENCE_TIMESTEP)
            lp = replace(lp, timestep=setting)
        ict = defaults.threshold(self.embedder) if self.ict is None else self.ict
        return replace(self, ict=ict, langevin=lp)

    def check(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise SynthdbError(
                f"unknown references algorithm {self.algorithm!r}: use {', '.join(ALGORITHMS)}"
            )
        if self.num_identities < 1 or self.batch_size < 1:
            raise SynthdbError("--num-identities and --batch-size must be at least 1")
        if self.avoid and self.algorithm == "random":
            raise SynthdbError("--avoid needs --algorithm ict or langevin (random references repel nothing)")
        if self.langevin.iterations < 0 or self.langevin.checkpoint_every < 1:
            raise SynthdbError("--langevin-iterations must be >= 0 and --langevin-checkpoint-every >= 1")


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
    :mod:`synthdb.generate.distributed`: every rank calls this, rank 0 records the run."""
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
            run_id, _ = group.share()  # the run and dataset rank 0 opens below
            _langevin(ctx, pipeline, params, -1, run_id, set(), avoid, True, group)
            return run_id
        with runs.recorded_run(
            ctx.catalog, RunKind.REFERENCES, params.algorithm, asdict(params), params.seed, resume=run_id
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
    accepted reference (and to every ``--avoid`` embedding) is >= ICT."""
    n, b = params.num_identities, params.batch_size
    accepted = [
        torch.from_numpy(parquet.read_vectors(path, "embedding")[2].copy())
        for _unit, path in units.unit_shards(ctx, run_id, ShardContent.EMBEDDING)
    ]
    kept = torch.cat(accepted) if accepted else torch.zeros(0, pipeline.embedder.dims)
    batch = len([u for u in done if u.startswith("cand/")])
    limit = params.max_candidates * n
    with progress_bar(n, "ict references", quiet) as advance:
        advance(len(kept))
        while len(kept) < n:
            if batch * b >= limit:
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
            unit = f"cand/{batch:06d}"
            table = stats.table([{"batch": batch, "candidates": len(e), "accepted": len(take)}])
            if take:
                _commit_references(
                    ctx, pipeline, dataset, run_id, unit, len(kept), w[take], e[take], z[take], [table]
                )
            else:
                commit(
                    ctx.catalog,
                    ctx.store,
                    dataset_id=dataset,
                    run_id=run_id,
                    unit=unit,
                    shards=[],
                    tables=[table],
                )
            kept = torch.cat([kept, e[take]])
            batch += 1
            advance(len(take))
            runs.set_progress(ctx.catalog, run_id, len(kept) / n)
    return {"identities": n, "candidates": batch * b}


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
