"""Runs of generation algorithms: seeds, work units, resume and job-array sharding.

Reproducibility rests on three rules. Every random draw comes from a private ``torch.Generator``
seeded by :func:`unit_seed` from the run's root seed and the draw's name (identity, iteration), never
from global RNG state, so a unit's randomness does not depend on what ran before it in the process.
Every unit commits atomically with a ``unit`` name on its shards, so a resumed run skips exactly the
committed ones. State that carries over between units (Langevin latents) is committed as a
``checkpoint`` shard with the unit, so a resume restarts from bit-identical float32 state.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch

from synthdb.catalog import runs
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.schema import Dataset, Identity, Run, Sample, Shard
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate.pipeline import Pipeline
from synthdb.store import parquet
from synthdb.store.commit import NewSamples, ShardSpec, TableSpec, commit


def unit_seed(root: int, *names: int | str) -> int:
    """A 63-bit seed for the draw called ``names`` of a run with root seed ``root``; stable across
    processes and Python versions (no ``hash()``), independent of execution order."""
    words = [int(root) & 0xFFFFFFFF, int(root) >> 32]
    for name in names:
        words += list(str(name).encode()) if isinstance(name, str) else [int(name) & 0xFFFFFFFF]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


def rng(root: int, *names: int | str) -> torch.Generator:
    """A CPU generator for the draw ``names`` (draw on CPU, then move: every device gets the same)."""
    return torch.Generator().manual_seed(unit_seed(root, *names))


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
    shard = Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(shard.c.unit).where(shard.c.run_id == run_id, shard.c.state == "committed").distinct()
        ).scalars()
        return {unit for unit in rows if unit is not None}


def unit_shards(ctx: Context, run_id: int, content: str) -> list[tuple[str, str]]:
    """(unit, absolute path) of a run's committed shards of one content, ordered by unit name."""
    shard = Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(shard.c.unit, shard.c.path)
            .where(shard.c.run_id == run_id, shard.c.content == content, shard.c.state == "committed")
            .order_by(shard.c.unit, shard.c.id)
        ).all()
    return [(unit, str(ctx.store.abspath(path))) for unit, path in rows]


def read_stats(ctx: Context, run_id: int) -> list[dict[str, Any]]:
    """All stats rows of a run in unit order: one dict per iteration (or per unit for ICT)."""
    out: list[dict[str, Any]] = []
    for _unit, path in unit_shards(ctx, run_id, "stats"):
        out.extend(parquet.read_table(path).to_pylist())
    return out


def dataset_vectors(
    ctx: Context, dataset: int, content: str, space: str, column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample_ids, identity_ids, vectors) of every committed ``content`` shard of a dataset in
    ``space``, sorted by sample id."""
    shard = Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        paths = (
            conn.execute(
                sa.select(shard.c.path).where(
                    shard.c.dataset_id == dataset,
                    shard.c.content == content,
                    shard.c.space == space,
                    shard.c.state == "committed",
                )
            )
            .scalars()
            .all()
        )
    if not paths:
        raise SynthdbError(
            f"dataset {dataset} has no {content} vectors of {space}: embed it with that model first "
            f"(`synthdb embed`) or pick a dataset generated with it"
        )
    parts = [parquet.read_vectors(ctx.store.abspath(p), column) for p in paths]
    ids = np.concatenate([p[0] for p in parts])
    order = np.argsort(ids, kind="stable")
    return (
        ids[order],
        np.concatenate([p[1] for p in parts])[order],
        np.concatenate([p[2] for p in parts])[order],
    )


def params_from(cls: type, data: dict[str, Any], run_id: int | None = None) -> Any:
    """Rebuild a params dataclass from a run's stored params, naming keys this synthdb does not know."""
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(data) - known):
        raise SynthdbError(
            f"run {run_id} was recorded with parameters {', '.join(unknown)} that this synthdb "
            "does not know: resume it with the synthdb version that started it"
        )
    return cls(**data)


def identity_labels(ctx: Context, identity_ids: np.ndarray) -> list[str]:
    """Labels of identity ids, in the given order."""
    found = _by_id(ctx, Identity.__table__.c.label, identity_ids)
    return [found[int(i)] for i in identity_ids]


def sample_roles(ctx: Context, sample_ids: np.ndarray) -> dict[int, str]:
    return _by_id(ctx, Sample.__table__.c.role, sample_ids)


def _by_id(ctx: Context, column: sa.Column, ids: np.ndarray) -> dict[int, Any]:
    """``column`` of the rows with these ids, in chunks (SQLite and PostgreSQL cap one statement's
    parameters)."""
    table, wanted = column.table, sorted({int(i) for i in ids})
    found: dict[int, Any] = {}
    with ctx.catalog.engine.connect() as conn:
        for start in range(0, len(wanted), 10_000):
            chunk = wanted[start : start + 10_000]
            found.update(conn.execute(sa.select(table.c.id, column).where(table.c.id.in_(chunk))).all())
    return found


def output_dataset(
    ctx: Context,
    name: str,
    run_id: int,
    attributes: dict[str, Any],
    shared: bool,
    source: str = "generated",
) -> int:
    """The run's output dataset: created on first use; reused on resume, and by the other shards of a
    job array or re-runs (``shared``) as long as it was made by the same kind of command (``source``)
    with the same parameters."""
    dataset = Dataset.__table__
    for _attempt in range(2):  # a second look when another shard created it between our check and insert
        with ctx.catalog.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    dataset.c.id, dataset.c.created_by_run_id, dataset.c.source, dataset.c.attributes
                ).where(dataset.c.name == name)
            ).first()
        if row is not None:
            same = row.source == source and (row.attributes or {}) == attributes
            if row.created_by_run_id == run_id or (shared and same):
                return row.id
            raise SynthdbError(f"a dataset named '{name}' exists already: choose another --name")
        try:
            return create_dataset(
                ctx.catalog, name, "synthetic", source, root=None, run_id=run_id, attributes=attributes
            )
        except (SynthdbError, sa.exc.IntegrityError):
            if not shared:
                raise
    raise SynthdbError(f"dataset '{name}' could not be created: re-run the command")


@contextmanager
def run_scope(
    ctx: Context,
    kind: str,
    algorithm: str,
    params: dict[str, Any],
    seed: int,
    run_id: int | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[int]:
    """A new run row, or the existing ``run_id`` reopened for resume; closed as succeeded, failed or
    interrupted like :func:`synthdb.catalog.runs.recorded_run`."""
    if run_id is None:
        run_id = runs.start_run(
            ctx.catalog,
            kind,
            algorithm,
            params,
            seed,
            shard_index=shard[0] if shard else None,
            shard_count=shard[1] if shard else None,
        )
    else:
        with ctx.catalog.begin() as conn:
            conn.execute(
                sa.update(Run.__table__)
                .where(Run.__table__.c.id == run_id)
                .values(status="running", error=None, finished_at=None, pid=os.getpid())
            )
    with runs.closing_run(ctx.catalog, run_id):
        yield run_id


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
            ShardSpec("latent", pipeline.generator.name, latents),
            ShardSpec("embedding", pipeline.embedder.name, {"embedding": embeddings}),
        ],
        tables=tables,
    )
