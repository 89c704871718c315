"""Committed vectors of one dataset and space, loaded straight from their Parquet shards.

Every analysis (indexes, nearest-identity checks, histograms, separability) starts here. Shards are read
with Arrow in worker threads (Arrow releases the GIL) into one preallocated float32 array, so loading is
bound by disk and memory bandwidth, never by per-row Python. Samples without an identity keep the id
``NO_IDENTITY`` so callers can drop them explicitly rather than by accident.

Embeddings are stored raw; :func:`normalized` gives the L2-normalised copy every angle is computed on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synthdb.catalog import samples, shards
from synthdb.catalog.datasets import dataset_id as lookup_dataset_id
from synthdb.catalog.samples import NO_IDENTITY
from synthdb.catalog.schema import ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store import parquet

READ_THREADS = 4
READ_AHEAD = 2
_NORM_CHUNK = 65_536


@dataclass(frozen=True)
class ShardRef:
    id: int
    path: Path
    rows: int
    columns: dict[str, Any]


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

    def by_sample(self) -> Vectors:
        """The same rows in sample-id order (stable): generation runs address samples by id, and two loads
        of one dataset (its latents and its embeddings) line up row by row."""
        order = np.argsort(self.sample_ids, kind="stable")
        return self._rows(order)

    def with_identity(self) -> Vectors:
        """Only the samples that belong to an identity (class statistics need one)."""
        keep = self.identity_ids != NO_IDENTITY
        return self if keep.all() else self._rows(keep)

    def _rows(self, rows: np.ndarray) -> Vectors:
        """These rows (a mask or an order) of every row-aligned array."""
        ids, identities, vectors = self.sample_ids[rows], self.identity_ids[rows], self.vectors[rows]
        return replace(self, sample_ids=ids, identity_ids=identities, vectors=vectors)


def committed_shards(ctx: Context, dataset_id: int, content: str, space: str) -> list[ShardRef]:
    """The committed shards of one dataset, content and space, oldest first."""
    rows = shards.committed(ctx.catalog, dataset_id=dataset_id, contents=[content], space=space)
    return [ShardRef(r.id, ctx.store.abspath(r.path), r.rows, r.columns) for r in rows]


def spaces(ctx: Context, dataset_id: int, content: str) -> list[str]:
    """The spaces (models, generators) a dataset has committed shards of, for error messages and reports."""
    return shards.committed_spaces(ctx.catalog, dataset_id, content)


def shared_model(ctx: Context, names: list[str], model: str | None) -> str:
    """``model``, else the one embedder whose embeddings every dataset of ``names`` has committed."""
    if model is not None:
        return model
    found = [set(spaces(ctx, lookup_dataset_id(ctx.catalog, name), ShardContent.EMBEDDING)) for name in names]
    common = sorted(set.intersection(*found))
    if len(common) == 1:
        return common[0]
    which = " and ".join(f"'{name}'" for name in dict.fromkeys(names))
    if not common:
        raise SynthdbError(
            f"{which}: no committed embeddings of one model in common; embed with `synthdb embed DATASET`"
        )
    raise SynthdbError(f"{which} have embeddings of {', '.join(common)}: name the embedder with --model")


def _read_checked(ref: ShardRef, columns: list[str]) -> pa.Table:
    """Columns of a shard whose row count is the catalog's (a mismatch means the file was replaced)."""
    table = parquet.read_table(ref.path, columns)
    if table.num_rows != ref.rows:
        raise SynthdbError(
            f"shard {ref.path} has {table.num_rows} rows but the catalog says {ref.rows}: run `synthdb fsck`"
        )
    return table


def _vectors_into(ref: ShardRef, table: pa.Table, column: str, out: np.ndarray) -> None:
    values = table.column(column).combine_chunks()
    if not pa.types.is_fixed_size_list(values.type) or values.type.list_size != out.shape[1]:
        raise SynthdbError(
            f"column '{column}' of shard {ref.path} is not a {out.shape[1]}-float vector: run `synthdb fsck`"
        )
    out[:] = values.flatten().to_numpy(zero_copy_only=False).reshape(out.shape)


def _read_shard(
    ref: ShardRef, column: str, out: np.ndarray, sample_ids: np.ndarray, identity_ids: np.ndarray
):
    table = _read_checked(ref, ["sample_id", "identity_id", column])
    _vectors_into(ref, table, column, out)
    sample_ids[:] = table.column("sample_id").to_numpy()
    identity_ids[:] = pc.fill_null(table.column("identity_id"), NO_IDENTITY).to_numpy()


def load_vectors(
    ctx: Context,
    dataset: str,
    space: str,
    content: str = ShardContent.EMBEDDING,
    column: str = "embedding",
    only_shards: set[int] | None = None,
) -> Vectors:
    """All committed vectors of ``dataset`` in ``space`` (a model for embeddings, a generator for latents),
    or of ``only_shards`` among them (to extend an index with new shards).

    A sample committed twice in the same space would count twice in every statistic, so it is refused.
    """
    did, refs = _shards_of(ctx, dataset, space, content, only_shards)
    width = _width(refs[0], column, content, space)
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
    _refuse_duplicates(sample_ids, dataset, content, space)
    return Vectors(
        dataset, did, content, space, column, sample_ids, identity_ids, vectors, [r.id for r in refs]
    )


def _shards_of(
    ctx: Context, dataset: str, space: str, content: str, only_shards: set[int] | None = None
) -> tuple[int, list[ShardRef]]:
    """The dataset's id and its committed shards in ``space`` (or ``only_shards`` of them); none is an
    error that names the spaces the dataset has."""
    did = lookup_dataset_id(ctx.catalog, dataset)
    refs = committed_shards(ctx, did, content, space)
    if only_shards is not None:
        refs = [r for r in refs if r.id in only_shards]
    if not refs:
        known = ", ".join(spaces(ctx, did, content)) or "none"
        embed = f"`synthdb embed {dataset} --model {space}`"
        fix = embed if content == ShardContent.EMBEDDING else "generate them first"
        raise SynthdbError(
            f"dataset '{dataset}' has no committed {content} shards of '{space}' (it has: {known}): "
            f"use one of those, or {fix}"
        )
    return did, refs


def _refuse_duplicates(sample_ids: np.ndarray, dataset: str, content: str, space: str) -> None:
    """A sample committed twice in the same space would count twice in every statistic."""
    duplicates = len(sample_ids) - len(np.unique(sample_ids))
    if duplicates:
        raise SynthdbError(
            f"{duplicates} samples of '{dataset}' have more than one committed {content} of "
            f"'{space}': retire the duplicate shards (synthdb query: SELECT sample_id, count(*) FROM ...)"
        )


def _width(ref: ShardRef, column: str, content: str, space: str) -> int:
    if column not in ref.columns:
        raise SynthdbError(
            f"{content} shards of '{space}' have no column '{column}' (they have: {', '.join(ref.columns)}): "
            "pick one of those"
        )
    return int(np.prod(ref.columns[column]))


def normalized(vectors: np.ndarray, in_place: bool = False) -> np.ndarray:
    """An L2-normalised float32 copy; norms are summed in float64 so the copy is exact to float32 rounding.

    ``in_place`` overwrites ``vectors`` (a float32 array the caller owns) instead: at 200,000 x 512 a copy is
    400 MB of fresh memory, and on a virtual machine touching fresh pages costs more than the arithmetic.
    A zero or non-finite vector has no direction, and an angle to it would be silently NaN: refused.
    """
    out = vectors if in_place else np.empty(vectors.shape, np.float32)
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

    The mean of directions, not of raw vectors, so a sample with a large norm does not dominate. An identity
    of one sample is its own centroid: its unit vector is taken as it is, neither summed nor normalised
    again, and when every identity has one sample (e.g. one photo per person) in identity order already,
    ``unit_vectors`` itself is returned, not a copy. Identities of several samples are summed in float64
    (the accumulator only, no float64 copy of the vectors), so a centroid of many samples is exact to
    float32 rounding.
    """
    ascending = bool(np.all(identity_ids[1:] > identity_ids[:-1]))  # so no identity twice
    if ascending and len(identity_ids) and unit_vectors.dtype == np.float32:
        return identity_ids, unit_vectors
    order, identities, starts = identity_blocks(identity_ids)
    if not len(order):
        return identities, np.zeros((0, unit_vectors.shape[1]), np.float32)
    counts = np.diff(starts)
    out = unit_vectors[order[starts[:-1]]].astype(np.float32, copy=False)
    several = counts > 1
    if several.any():
        members = order[np.repeat(several, counts)]
        sizes = counts[several]
        firsts = np.concatenate([[0], np.cumsum(sizes[:-1])])
        sums = np.add.reduceat(unit_vectors[members], firsts, axis=0, dtype=np.float64)
        out[several] = normalized(sums.astype(np.float32))
    return identities, out


def identity_centroids(
    ctx: Context, dataset: str, space: str, content: str = ShardContent.EMBEDDING, column: str = "embedding"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`centroids` of a dataset's committed vectors, read shard by shard: memory holds the centroids,
    a float64 sum per identity of several samples, and the shards being read, never every vector at once.

    For WebFace42M at 512-d that is 4 GB of centroids and 8 GB of sums (plus 16 bytes of ids per sample,
    0.7 GB) instead of 86 GB of vectors. The ids are read first (two integer columns), so each identity's
    row is known before any vector is. A one-sample identity's centroid is its unit vector as it is; the
    sums of the others are added shard after shard in float64, which equals :func:`centroids` to float32
    rounding.
    """
    _, refs = _shards_of(ctx, dataset, space, content)
    width = _width(refs[0], column, content, space)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        ids = list(pool.map(_read_ids, refs))
    _refuse_duplicates(np.concatenate([sample_ids for sample_ids, _ in ids]), dataset, content, space)
    identities, counts = np.unique(np.concatenate([idents for _, idents in ids]), return_counts=True)
    keep = identities != NO_IDENTITY
    identities, counts = identities[keep], counts[keep]
    out = np.zeros((len(identities), width), np.float32)
    several = np.flatnonzero(counts > 1)
    sums = np.zeros((len(several), width), np.float64)
    slot = np.full(len(identities), -1, np.int64)  # per identity its row in sums, -1 for one sample
    slot[several] = np.arange(len(several))
    for (_, idents), unit in zip(ids, _unit_shards(refs, column, width), strict=True):
        known = np.flatnonzero(idents != NO_IDENTITY)
        rows = np.searchsorted(identities, idents[known])
        single = slot[rows] < 0
        out[rows[single]] = unit[known[single]]
        order, slots, starts = identity_blocks(slot[rows][~single])
        if len(slots):
            members = unit[known[~single][order]]  # grouped by identity: one copy
            sums[slots] += np.add.reduceat(members, starts[:-1], axis=0, dtype=np.float64)
    if len(several):
        out[several] = normalized(sums.astype(np.float32))
    return identities, out


def _read_ids(ref: ShardRef) -> tuple[np.ndarray, np.ndarray]:
    table = _read_checked(ref, ["sample_id", "identity_id"])
    idents = pc.fill_null(table.column("identity_id"), NO_IDENTITY).to_numpy().astype(np.int64, copy=False)
    return table.column("sample_id").to_numpy().astype(np.int64, copy=False), idents


def _unit_shards(refs: list[ShardRef], column: str, width: int) -> Iterator[np.ndarray]:
    """Each shard's vectors, normalised, in order; the next ``READ_AHEAD`` are read meanwhile (Arrow frees
    the GIL), so memory holds at most ``READ_AHEAD + 1`` shards."""

    def read(ref: ShardRef) -> np.ndarray:  # the vectors only: the ids were read first
        out = np.empty((ref.rows, width), np.float32)
        _vectors_into(ref, _read_checked(ref, [column]), column, out)
        return normalized(out, in_place=True)

    with ThreadPoolExecutor(READ_AHEAD) as pool:
        reading: deque[Future[np.ndarray]] = deque()
        for ref in refs:
            reading.append(pool.submit(read, ref))
            if len(reading) > READ_AHEAD:
                yield reading.popleft().result()
        while reading:
            yield reading.popleft().result()


def sample_rows(ctx: Context, dataset_id: int) -> dict[str, np.ndarray]:
    """Every sample of a dataset as columns: id, identity_id, role, key, path (representatives, images).

    The columns themselves, not copies: ``dataclasses.asdict`` would deep-copy every array, and the key and
    path columns are object arrays of a Python string per sample.
    """
    columns = samples.sample_columns(ctx.catalog, dataset_id)
    return {f.name: getattr(columns, f.name) for f in fields(columns)}
