"""The work units of generation runs: which are done, their stats, committing one, job-array sharding.

Reproducibility rests on three rules. Every random draw comes from a private ``torch.Generator``
seeded from the run's root seed and the draw's name (:mod:`synthdb.seeds`), never from global RNG
state, so a unit's randomness does not depend on what ran before it in the process.
Every unit commits atomically with a ``unit`` name on its shards, so a resumed run skips exactly the
committed ones. State that carries over between units (Langevin latents) is committed as a
``checkpoint`` shard with the unit, so a resume restarts from bit-identical float32 state.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from synthdb.catalog import samples, shards
from synthdb.catalog.schema import ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate.pipeline import Pipeline
from synthdb.store import parquet
from synthdb.store.commit import NewSamples, ShardSpec, TableSpec, commit


def resolve_shard(shard_index: int | None, num_shards: int | None) -> tuple[int, int]:
    """(index, count) from the options, else from SLURM or SGE job arrays, else (0, 1).

    SLURM: ``SLURM_ARRAY_TASK_ID`` relative to ``SLURM_ARRAY_TASK_MIN``, count
    ``SLURM_ARRAY_TASK_COUNT``; SGE: ``SGE_TASK_ID`` relative to ``SGE_TASK_FIRST`` over
    ``SGE_TASK_LAST`` with ``SGE_TASK_STEPSIZE`` (the reference read only SLURM and assumed 1..N).
    """
    if shard_index is not None or num_shards is not None:
        index, count = shard_index or 0, num_shards or 1
    elif os.environ.get("SLURM_ARRAY_TASK_ID", "undefined") != "undefined":
        first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        index = int(os.environ["SLURM_ARRAY_TASK_ID"]) - first
        count = int(os.environ.get("SLURM_ARRAY_TASK_COUNT", "0")) or (
            int(os.environ["SLURM_ARRAY_TASK_MAX"]) - first + 1
        )
    elif os.environ.get("SGE_TASK_ID", "undefined") != "undefined":
        first = int(os.environ.get("SGE_TASK_FIRST", "1"))
        step = int(os.environ.get("SGE_TASK_STEPSIZE", "1"))
        index = (int(os.environ["SGE_TASK_ID"]) - first) // step
        count = (int(os.environ["SGE_TASK_LAST"]) - first) // step + 1
    else:
        index, count = 0, 1
    if count < 1 or not 0 <= index < count:
        raise SynthdbError(f"shard {index} of {count} is out of range: use 0 <= --shard-index < --num-shards")
    return index, count


def done_units(ctx: Context, run_id: int) -> set[str]:
    """Units of ``run_id`` already committed (a resumed run skips them)."""
    return shards.done_units(ctx.catalog, run_id)


def unit_shards(ctx: Context, run_id: int, content: str) -> list[tuple[str, str]]:
    """(unit, absolute path) of a run's committed shards of one content, ordered by unit name."""
    rows = shards.committed(ctx.catalog, run_id=run_id, contents=[content])
    rows.sort(key=lambda row: (row.unit or "", row.id))
    return [(row.unit, str(ctx.store.abspath(row.path))) for row in rows]


def read_stats(ctx: Context, run_id: int) -> list[dict[str, Any]]:
    """All stats rows of a run in unit order: one dict per iteration (or per unit for ICT)."""
    out: list[dict[str, Any]] = []
    for _unit, path in unit_shards(ctx, run_id, ShardContent.STATS):
        out.extend(parquet.read_table(path).to_pylist())
    return out


def sample_roles(ctx: Context, sample_ids: np.ndarray) -> dict[int, str]:
    return samples.sample_roles(ctx.catalog, sample_ids)


def commit_generated(
    ctx: Context,
    pipeline: Pipeline,
    dataset: int,
    run_id: int,
    unit: str,
    identities: list[str],
    labels: list[str],
    role: str,
    latents: dict[str, np.ndarray],
    embeddings: np.ndarray,
    tables: list[TableSpec],
) -> None:
    """Commit one unit of generated samples (keys ``<identity>/<label>``, row-aligned with ``identities``
    and ``labels``) with their latent and embedding shards and the unit's tables, atomically."""
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=dataset,
        run_id=run_id,
        unit=unit,
        samples=NewSamples(
            keys=[f"{ident}/{lab}" for ident, lab in zip(identities, labels, strict=True)],
            role=role,
            identity_labels=identities,
            labels=labels,
        ),
        shards=[
            ShardSpec(ShardContent.LATENT, pipeline.generator.name, latents),
            ShardSpec(ShardContent.EMBEDDING, pipeline.embedder.name, {"embedding": embeddings}),
        ],
        tables=tables,
    )
