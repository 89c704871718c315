"""Variations of reference identities: ``dispersion``, ``disco`` and ``covariates`` (spec 7.3).

Dispersion: each reference identity gets ``num_variations`` latents pulled towards its reference
embedding (through E = FR(crop(G))), pushed apart from each other in W within ``latent_radius``,
pulled towards w_avg, and shaken by a random force. DisCo starts from random covariate edits (the
``LatentEdit`` DisCo offsets of a catalog direction set, spec 8.3) added to the initial noise.
Covariates (IJCB 2021): each neutralised reference gets the 17 ``LatentEdit`` augmentations (6 pose,
6 illumination, 5 expressions); no optimisation, no randomness.

Work units are fixed groups of ``identities_per_unit`` identities in label order; a job-array shard
takes every ``num_shards``-th unit. Every draw is seeded per identity (and iteration), and the
automatic timestep is per identity, so a unit's result depends on nothing outside it: sharded runs
equal the single-process run bit for bit, and a resumed run equals an uninterrupted one.

Fixed against the reference: chunked embedding gradients are exact for every element (it
broadcast each chunk's first), ``--seed`` is honoured, force norms are over the latent axis, the
adaptive timestep is per identity (it coupled all identities of a job, so results depended on the
job split), ``prop_ict`` is computed, ``covariates`` variations store their embeddings (the
reference saved none, so its plots and leakage searches failed on them) and run sharded. Kept as
in the reference: the random force is not scaled by sqrt(dt).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthdb import seeds
from synthdb.analysis.vectors import load_vectors
from synthdb.angles import rowwise_angle
from synthdb.catalog import datasets, runs, samples
from synthdb.catalog.schema import RunKind, SampleRole, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate import rerun, stats, units
from synthdb.generate.params import VariationParams
from synthdb.generate.pipeline import Pipeline, load_pipeline
from synthdb.latent.directions import COVARIATES
from synthdb.latent.edit import CovariateScaling, LatentEdit, augmentation_labels
from synthdb.progress import progress_bar


def scaling(params: VariationParams) -> CovariateScaling:
    """The covariate scales of DisCo's offsets and of the covariates' edits."""
    return CovariateScaling(params.pose_scaling, params.illumination_scaling, params.expression_scaling)


def latent_repulsion(w: Tensor, k: float, radius: float) -> Tensor:
    """F^w of U = sum_{a<b} [D_ab < r] k (r - D_ab)^2 / 2 within each identity, closed form: (I, A, w_dim).
    (The reference used autograd on cdist, whose gradient at a == b is undefined.)"""
    diff = w[:, :, None, :] - w[:, None, :, :]
    dist = diff.norm(dim=-1)
    eye = torch.eye(w.shape[1], dtype=torch.bool, device=w.device)
    active = (dist < radius) & ~eye
    scale = torch.where(active, k * (radius - dist) / dist.masked_fill(~active, 1.0), torch.zeros_like(dist))
    return (scale[..., None] * diff).sum(2)


def dispersion_unit(
    pipeline: Pipeline,
    params: VariationParams,
    labels: list[str],
    w_ref: Tensor,
    e_ref: Tensor,
    offsets: Tensor | None,
) -> tuple[Tensor, Tensor, list[dict[str, float]]]:
    """Variations of one unit: (w (I, A, w_dim), embeddings (I, A, D), stats rows per iteration)."""
    p, a = params, params.num_variations
    dev = w_ref.device
    init = []
    for i, lab in enumerate(labels):
        noise = torch.randn(a, w_ref.shape[1], generator=seeds.rng(p.seed, "init", lab))
        start = w_ref[i].cpu() + p.initial_noise * noise
        if offsets is not None:
            u = torch.rand(a, len(offsets), generator=seeds.rng(p.seed, "disco", lab)) - 0.5
            start = start + u @ offsets
        init.append(start)
    w = torch.stack(init).to(dev)
    n_id, dim = w.shape[0], w.shape[2]
    anchors = e_ref.repeat_interleave(a, 0)
    w_avg = pipeline.w_avg
    rows: list[dict[str, float]] = []
    mu = p.viscous_coefficient
    for t in range(p.iterations):
        e, grad = pipeline.gradient(
            w.reshape(-1, dim),
            lambda e, r: (p.embedding_coefficient / 4 * rowwise_angle(e, anchors[r]) ** 2).sum(),
        )
        f_e = -grad.reshape(w.shape)
        f_w = latent_repulsion(w, p.latent_coefficient, p.latent_radius)
        f_g = p.global_coefficient * (w_avg - w)
        xi = torch.stack(
            [torch.randn(a, dim, generator=seeds.rng(p.seed, "noise", lab, t)) for lab in labels]
        ).to(dev)
        force = f_e + f_w + f_g + xi
        if p.timestep < 0:
            w_min = (
                torch.stack([stats.pair_values(x, "euclid").min() for x in w]) if a > 1 else torch.ones(n_id)
            )
            f_max = force.norm(dim=-1).amax(1)
            dt = (abs(p.timestep) * mu * w_min / f_max.clamp_min(1e-12)).to(dev)[:, None, None]
        else:
            dt = torch.full((n_id, 1, 1), p.timestep, device=dev)
        e = e.reshape(n_id, a, -1)
        row: dict[str, Any] = {"iteration": t, **stats.grouped(e, w, w_avg, p.ict)}
        row["ref_dist_avg"] = float(rowwise_angle(e.reshape(-1, e.shape[-1]), anchors).double().mean())
        row |= stats.force_norms("intf", f_e) | stats.force_norms("rndf", xi)
        row |= stats.force_norms("latf", f_w + f_g) | stats.force_norms("totf", force)
        row["timestep"] = float(dt.double().mean())
        rows.append(row)
        w = w + (dt / mu) * force
    e = pipeline.embed(w.reshape(-1, dim)).reshape(n_id, a, -1)
    final = {"iteration": p.iterations, **stats.grouped(e, w, w_avg, p.ict)}
    final["ref_dist_avg"] = float(rowwise_angle(e.reshape(-1, e.shape[-1]), anchors).double().mean())
    return w, e, [*rows, final]


def covariates_unit(
    pipeline: Pipeline, params: VariationParams, editor: LatentEdit, w_ref: Tensor, e_ref: Tensor
) -> tuple[Tensor, Tensor, list[dict[str, float]]]:
    """The 17 covariate edits of each neutralised reference of one unit: (w (I, 17, w_dim),
    embeddings (I, 17, D), one stats row)."""
    w = editor.augmentation(editor.neutralise(w_ref), scaling(params))
    n_id, count, dim = w.shape
    e = pipeline.embed(w.reshape(-1, dim)).reshape(n_id, count, -1)
    row: dict[str, Any] = {"iteration": 0, **stats.grouped(e, w, pipeline.w_avg, params.ict)}
    anchors = e_ref.repeat_interleave(count, 0)
    row["ref_dist_avg"] = float(rowwise_angle(e.reshape(-1, e.shape[-1]), anchors).double().mean())
    return w, e, [row]


@dataclass
class References:
    labels: list[str]
    w: Tensor
    e: Tensor


def load_references(ctx: Context, name: str, pipeline: Pipeline) -> References:
    """Reference latents and stored embeddings (the anchors) of a dataset, one per identity, by label."""
    latents = load_vectors(ctx, name, pipeline.generator.name, ShardContent.LATENT, "w").by_sample()
    embeddings = load_vectors(ctx, name, pipeline.embedder.name).by_sample()
    ids_w, ident, w = latents.sample_ids, latents.identity_ids, latents.vectors
    ids_e, e = embeddings.sample_ids, embeddings.vectors
    roles = units.sample_roles(ctx, ids_w)
    keep = np.array([roles[int(i)] == SampleRole.REFERENCE for i in ids_w])
    if not np.array_equal(ids_w, ids_e):
        raise SynthdbError(
            f"dataset {name}: latents and embeddings cover different samples: run `synthdb fsck`"
        )
    if not keep.any():
        raise SynthdbError(f"dataset {name} has no reference samples: pass a references dataset")
    label_of = samples.identity_labels(ctx.catalog, ident[keep])
    labels = [label_of[int(i)] for i in ident[keep]]
    order = np.argsort(labels, kind="stable")
    if len(set(labels)) != len(labels):
        raise SynthdbError(f"dataset {name} has several references per identity: pass one reference each")
    dev = pipeline.generator.device
    return References(
        [labels[i] for i in order],
        torch.from_numpy(w[keep][order]).to(dev),
        torch.from_numpy(e[keep][order]).to(dev),
    )


def generate_variations(
    ctx: Context,
    params: VariationParams,
    run_id: int | None = None,
    shard: tuple[int, int] = (0, 1),
    quiet: bool = True,
) -> int:
    """Run (or, with ``run_id``, resume) one shard of a variations run; return the run id."""
    params.check()
    params = params.resolved()
    pipeline = load_pipeline(ctx, params)
    refs = load_references(ctx, params.references, pipeline)
    editor = None
    if params.directions and params.algorithm != "dispersion":
        editor = LatentEdit.load(ctx.catalog, params.directions)
        editor.directions.check_generator(pipeline.generator.name, pipeline.generator.w_dim)
        if params.algorithm == "covariates":
            editor.directions.require(COVARIATES, "covariates variations")
    offsets = editor.disco_offsets(scaling(params)) if editor and params.algorithm == "disco" else None
    size = params.identities_per_unit
    batches = [(j, refs.labels[j : j + size]) for j in range(0, len(refs.labels), size)][shard[0] :: shard[1]]
    attributes = {"variations_of": params.references, "params": asdict(params)}
    total = sum(len(labels) for _, labels in batches)
    if run_id is None:  # the same command again after an interruption resumes the run it left
        kind, name = RunKind.VARIATIONS, params.name
        run_id = rerun.run_to_continue(ctx, kind, name, asdict(params), shard, attributes)
    with runs.recorded_run(
        ctx.catalog, RunKind.VARIATIONS, params.algorithm, asdict(params), params.seed, shard, resume=run_id
    ) as run_id:
        dataset = datasets.output_dataset(ctx.catalog, params.name, run_id, attributes, shared=True)
        done = units.done_units(ctx, run_id)
        finished = 0
        with progress_bar(total, f"{params.algorithm} identities", quiet) as advance:
            for start, labels in batches:
                unit = f"ids/{start:06d}"
                if unit not in done:
                    pick = slice(start, start + len(labels))
                    if editor is not None and params.algorithm == "covariates":
                        w, e, rows = covariates_unit(pipeline, params, editor, refs.w[pick], refs.e[pick])
                    else:
                        w, e, rows = dispersion_unit(
                            pipeline, params, labels, refs.w[pick], refs.e[pick], offsets
                        )
                    _commit_unit(ctx, pipeline, params, dataset, run_id, unit, labels, w, e, rows)
                finished += len(labels)
                runs.set_progress(ctx.catalog, run_id, finished / max(total, 1))
                advance(len(labels))
        runs.set_summary(ctx.catalog, run_id, {"dataset": params.name, "identities": total})
    return run_id


def _commit_unit(
    ctx: Context,
    pipeline: Pipeline,
    params: VariationParams,
    dataset: int,
    run_id: int,
    unit: str,
    labels: list[str],
    w: Tensor,
    e: Tensor,
    rows: list[dict[str, float]],
) -> None:
    names = (
        augmentation_labels()
        if params.algorithm == "covariates"
        else [f"augmentation_{k}" for k in range(params.num_variations)]
    )
    units.commit_generated(
        ctx,
        pipeline,
        dataset,
        run_id,
        unit,
        [lab for lab in labels for _ in names],
        names * len(labels),
        SampleRole.VARIATION,
        {"w": w.reshape(-1, w.shape[-1]).cpu().numpy()},
        e.reshape(-1, e.shape[-1]).cpu().numpy(),
        [stats.table([{**row, "unit": unit} for row in rows])],
    )
