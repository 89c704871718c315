"""Committed vectors of one dataset and space, loaded straight from their Parquet shards.

Every analysis (indexes, nearest-identity checks, histograms, separability) starts here. Shards are read
with Arrow in worker threads (Arrow releases the GIL) into one preallocated float32 array, so loading is
bound by disk and memory bandwidth, never by per-row Python. Samples without an identity keep the id
``NO_IDENTITY`` so callers can drop them explicitly rather than by accident.

Embeddings are stored raw; :func:`normalized` gives the L2-normalised copy every angle is computed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from synthdb.catalog.datasets import dataset_id as lookup_dataset_id
from synthdb.catalog.schema import Identity, Sample, Shard
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store import parquet

NO_IDENTITY = -1
READ_THREADS = 4
_NORM_CHUNK = 65_536


@dataclass(frozen=True)
class ShardRef:
    id: int
    path: Path
    rows: int


@dataclass
class Vectors:
    """Row-aligned ids and vectors of one dataset in one space (e.g. embeddings of one model)."""

    dataset: str
    dataset_id: int
    content: str
    space: str
    column: str
    sample_ids: np.ndarray
    identity_ids: np.ndarray
    vectors: np.ndarray
    shard_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def with_identity(self) -> Vectors:
        """Only the samples that belong to an identity (class statistics need one)."""
        keep = self.identity_ids != NO_IDENTITY
        if keep.all():
            return self
        return Vectors(
            self.dataset,
            self.dataset_id,
            self.content,
            self.space,
            self.column,
            self.sample_ids[keep],
            self.identity_ids[keep],
            self.vectors[keep],
            self.shard_ids,
        )


def committed_shards(ctx: Context, dataset_id: int, content: str, space: str) -> list[ShardRef]:
    """The committed shards of one dataset, content and space, oldest first."""
    table = Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.id, table.c.path, table.c.rows)
            .where(
                table.c.dataset_id == dataset_id,
                table.c.content == content,
                table.c.space == space,
                table.c.state == "committed",
            )
            .order_by(table.c.id)
        ).all()
    return [ShardRef(r.id, ctx.store.abspath(r.path), int(r.rows)) for r in rows]


def spaces(ctx: Context, dataset_id: int, content: str) -> list[str]:
    """The spaces (models, generators) a dataset has committed shards of, for error messages and reports."""
    table = Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        found = conn.execute(
            sa.select(table.c.space)
            .distinct()
            .where(table.c.dataset_id == dataset_id, table.c.content == content, table.c.state == "committed")
        ).scalars()
        return sorted(s for s in found if s)


def _read_shard(
    ref: ShardRef, column: str, out: np.ndarray, sample_ids: np.ndarray, identity_ids: np.ndarray
):
    table = parquet.read_table(ref.path, ["sample_id", "identity_id", column])
    if table.num_rows != len(out):
        raise SynthdbError(
            f"shard {ref.path} has {table.num_rows} rows but the catalog says {len(out)}: run `synthdb fsck`"
        )
    values = table.column(column).combine_chunks()
    if not pa.types.is_fixed_size_list(values.type) or values.type.list_size != out.shape[1]:
        raise SynthdbError(
            f"column '{column}' of shard {ref.path} is not a {out.shape[1]}-float vector: run `synthdb fsck`"
        )
    out[:] = values.flatten().to_numpy(zero_copy_only=False).reshape(out.shape)
    sample_ids[:] = table.column("sample_id").to_numpy()
    identity_ids[:] = pc.fill_null(table.column("identity_id"), NO_IDENTITY).to_numpy()


def load_vectors(
    ctx: Context,
    dataset: str,
    space: str,
    content: str = "embedding",
    column: str = "embedding",
    only_shards: set[int] | None = None,
) -> Vectors:
    """All committed vectors of ``dataset`` in ``space`` (a model for embeddings, a generator for latents),
    or of ``only_shards`` among them (to extend an index with new shards).

    A sample committed twice in the same space would count twice in every statistic, so it is refused.
    """
    did = lookup_dataset_id(ctx.catalog, dataset)
    refs = committed_shards(ctx, did, content, space)
    if only_shards is not None:
        refs = [r for r in refs if r.id in only_shards]
    if not refs:
        known = ", ".join(spaces(ctx, did, content)) or "none"
        fix = (
            f"`synthdb embed {dataset} --model {space}`" if content == "embedding" else "generate them first"
        )
        raise SynthdbError(
            f"dataset '{dataset}' has no committed {content} shards of '{space}' (it has: {known}): "
            f"use one of those, or {fix}"
        )
    width = _width(ctx, refs[0].id, column, content, space)
    total = sum(r.rows for r in refs)
    vectors = np.empty((total, width), np.float32)
    sample_ids = np.empty(total, np.int64)
    identity_ids = np.empty(total, np.int64)
    starts = np.concatenate([[0], np.cumsum([r.rows for r in refs])])
    with ThreadPoolExecutor(READ_THREADS) as pool:
        jobs = [
            pool.submit(_read_shard, ref, column, vectors[a:b], sample_ids[a:b], identity_ids[a:b])
            for ref, a, b in zip(refs, starts[:-1], starts[1:], strict=True)
        ]
        for job in jobs:
            job.result()
    unique = np.unique(sample_ids)
    if len(unique) != total:
        raise SynthdbError(
            f"{total - len(unique)} samples of '{dataset}' have more than one committed {content} of "
            f"'{space}': retire the duplicate shards (synthdb query: SELECT sample_id, count(*) FROM ...)"
        )
    return Vectors(
        dataset, did, content, space, column, sample_ids, identity_ids, vectors, [r.id for r in refs]
    )


def _width(ctx: Context, shard_id: int, column: str, content: str, space: str) -> int:
    table = Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        columns = conn.execute(sa.select(table.c.columns).where(table.c.id == shard_id)).scalar_one()
    if column not in columns:
        raise SynthdbError(
            f"{content} shards of '{space}' have no column '{column}' (they have: {', '.join(columns)}): "
            "pick one of those"
        )
    return int(np.prod(columns[column]))


def normalized(vectors: np.ndarray) -> np.ndarray:
    """An L2-normalised float32 copy; norms are summed in float64 so the copy is exact to float32 rounding.

    A zero or non-finite vector has no direction, and an angle to it would be silently NaN: refused.
    """
    out = np.empty(vectors.shape, np.float32)
    for start in range(0, len(vectors), _NORM_CHUNK):
        block = vectors[start : start + _NORM_CHUNK]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        bad = ~np.isfinite(norms) | (norms == 0)
        if bad.any():
            raise SynthdbError(
                f"{int(bad.sum())} vectors (row {start + int(np.argmax(bad))} first) are zero or not finite: "
                "re-embed those samples, or retire their shards"
            )
        np.divide(block, norms[:, None], out=out[start : start + _NORM_CHUNK], casting="unsafe")
    return out


def identity_blocks(identity_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stable order that groups samples by identity, the identities, and their block starts in it.

    Returns ``(order, identities, starts)`` with ``starts`` of length ``len(identities) + 1``.
    """
    order = np.argsort(identity_ids, kind="stable")
    ordered = identity_ids[order]
    change = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    starts = np.concatenate([[0], change, [len(ordered)]]).astype(np.int64)
    identities = ordered[starts[:-1]] if len(ordered) else ordered[:0]
    return order, identities, starts


def centroids(unit_vectors: np.ndarray, identity_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per identity the normalised mean of its unit vectors: ``(identities, centroids)``.

    The mean of directions, not of raw vectors, so a sample with a large norm does not dominate.
    """
    order, identities, starts = identity_blocks(identity_ids)
    sums = (
        np.add.reduceat(unit_vectors[order].astype(np.float64), starts[:-1], axis=0)
        if len(order)
        else (np.zeros((0, unit_vectors.shape[1])))
    )
    return identities, normalized(sums.astype(np.float32))


def sample_rows(ctx: Context, dataset_id: int) -> dict[str, np.ndarray]:
    """Every sample of a dataset as columns: id, identity_id, role, key, path (representatives, images)."""
    table = Sample.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.id, table.c.identity_id, table.c.role, table.c.key, table.c.path)
            .where(table.c.dataset_id == dataset_id)
            .order_by(table.c.id)
        ).all()
    return {
        "id": np.array([r.id for r in rows], np.int64),
        "identity_id": np.array(
            [NO_IDENTITY if r.identity_id is None else r.identity_id for r in rows], np.int64
        ),
        "role": np.array([r.role for r in rows], object),
        "key": np.array([r.key for r in rows], object),
        "path": np.array([r.path for r in rows], object),
    }


def identity_labels(ctx: Context, identity_ids: Sequence[int]) -> dict[int, str]:
    """Labels of identities by id (in chunks: PostgreSQL and SQLite cap the parameters of one statement)."""
    table = Identity.__table__
    wanted = sorted({int(i) for i in identity_ids if i != NO_IDENTITY})
    labels: dict[int, str] = {}
    with ctx.catalog.engine.connect() as conn:
        for start in range(0, len(wanted), 10_000):
            chunk = wanted[start : start + 10_000]
            labels.update(
                conn.execute(sa.select(table.c.id, table.c.label).where(table.c.id.in_(chunk))).all()
            )
    return labels
