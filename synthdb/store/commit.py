"""The commit protocol: shard files and catalog rows become visible together, or not at all.

Steps, all inside ONE catalog transaction:

1. allocate the ids of the new samples (the shard files reference them);
2. write each shard to ``staging/<uuid>.parquet`` and fsync it, in a worker thread, while the main
   thread inserts the sample rows (Arrow and SQLite both release the GIL, so the two overlap);
3. rename each file into ``shards/<dataset>/<content>/`` and fsync the directory;
4. insert the shard rows as ``committed`` and commit.

A crash before step 4's commit leaves no row: at worst a file in ``staging/`` (killed during steps
1-2) or an unreferenced file in ``shards/`` (killed during step 3). ``synthdb fsck`` reports both
and ``synthdb gc`` removes them. A committed row always points to a complete, checksummed file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from synthdb.catalog import Catalog, bulk
from synthdb.catalog.schema import SHARD_CONTENTS, Sample, Shard
from synthdb.errors import SynthdbError
from synthdb.store import parquet
from synthdb.store.layout import Store, fsync_dir


@dataclass
class ShardSpec:
    """One vector shard to write: what it holds, in which space, and the vectors (row-aligned)."""

    content: str
    space: str | None
    vectors: dict[str, np.ndarray]


@dataclass
class NewSamples:
    """Sample rows created in the same transaction as their shards.

    Give identities either as existing ``identity_ids`` or as ``identity_labels`` (created if
    missing, in the same transaction).
    """

    keys: Sequence[str]
    role: str
    identity_ids: np.ndarray | None = None
    identity_labels: Sequence[str] | None = None
    labels: Sequence[str | None] | None = None
    paths: Sequence[str | None] | None = None
    attributes: Sequence[dict[str, Any] | None] | None = None


@dataclass
class TableSpec:
    """A table-valued shard with no sample rows (per-iteration stats, optimiser checkpoints).

    ``columns``: 1-D arrays become scalar columns, (N, ...) arrays fixed-size float32 list columns.
    """

    content: str
    space: str | None
    columns: dict[str, np.ndarray]


def _table_of(spec: TableSpec) -> pa.Table:
    arrays = {}
    for name, array in spec.columns.items():
        array = np.asarray(array)
        if array.ndim == 1:
            arrays[name] = pa.array(array)
        else:
            flat = np.ascontiguousarray(array, dtype=np.float32).reshape(len(array), -1)
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    table = pa.table(arrays)
    return table.replace_schema_metadata({"synthdb.content": spec.content, "synthdb.space": spec.space or ""})


@dataclass
class Committed:
    sample_ids: np.ndarray
    shard_ids: list[int]


def _check_dims(
    conn: Connection, dataset_id: int, spec: ShardSpec, shapes: dict[str, tuple[int, ...]]
) -> None:
    """Refuse vectors whose size differs from what this dataset already holds in the same space."""
    table = Shard.__table__
    existing = conn.execute(
        sa.select(table.c.columns, table.c.path)
        .where(
            table.c.dataset_id == dataset_id,
            table.c.content == spec.content,
            table.c.space == spec.space if spec.space is not None else table.c.space.is_(None),
            table.c.state == "committed",
        )
        .limit(1)
    ).first()
    if existing is None:
        return
    for name, shape in shapes.items():
        known = existing.columns.get(name)
        if known is not None and tuple(known) != shape:
            raise SynthdbError(
                f"{spec.content} column '{name}' of space '{spec.space}' has per-row shape {shape}, but the "
                f"dataset's committed shards (e.g. {existing.path}) have {tuple(known)}: "
                "use the same model, or write into another dataset"
            )


def _write_staged(store: Store, tables: list[Any]) -> list[tuple[Path, parquet.WrittenFile]]:
    """Write each table to its own staged file; on failure remove what this call wrote."""
    out: list[tuple[Path, parquet.WrittenFile]] = []
    path = None
    try:
        for table in tables:
            path = store.new_staged(".parquet")
            out.append((path, parquet.write_table(table, path)))
    except BaseException:
        for leftover in [p for p, _ in out] + ([path] if path else []):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    return out


def _publish(store: Store, dataset_id: int, spec: ShardSpec, staged: Path) -> Path:
    """Rename a staged file to its final place and make the rename durable."""
    final = store.abspath(store.shard_relpath(dataset_id, spec.content, staged.name))
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    fsync_dir(final.parent)
    return final


def commit(
    catalog: Catalog,
    store: Store,
    *,
    dataset_id: int,
    shards: Sequence[ShardSpec],
    samples: NewSamples | None = None,
    sample_ids: np.ndarray | None = None,
    identity_ids: np.ndarray | None = None,
    run_id: int | None = None,
    unit: str | None = None,
    extra: Callable[[Connection], object] | None = None,
    tables: Sequence[TableSpec] = (),
) -> Committed:
    """Commit shards (and optionally their new samples) atomically; see the module docstring.

    Either ``samples`` (rows to create) or ``sample_ids`` (+ ``identity_ids``) of existing rows say
    which samples the vectors belong to, in row order. ``extra`` runs inside the same transaction, for
    rows that must appear together with the shards (e.g. the sample issues of a work unit).
    ``tables`` are shards without samples (stats, checkpoints) committed in the same transaction; with
    tables only, ``shards`` must be empty and neither samples nor sample ids are needed.
    """
    table_only = bool(tables) and not shards and samples is None and sample_ids is None
    if not table_only and (samples is None) == (sample_ids is None):
        raise SynthdbError("commit needs either new samples or the ids of existing samples")
    count = 0 if table_only else len(samples.keys) if samples is not None else len(sample_ids)
    for spec in tables:
        if spec.content not in SHARD_CONTENTS:
            raise SynthdbError(f"shard content '{spec.content}' is not one of {', '.join(SHARD_CONTENTS)}")
    shapes = []
    for spec in shards:
        if spec.content not in SHARD_CONTENTS:
            raise SynthdbError(f"shard content '{spec.content}' is not one of {', '.join(SHARD_CONTENTS)}")
        shapes.append(parquet.validate_vectors(spec.vectors, count))

    created: list[Path] = []
    try:
        with catalog.begin() as conn, ThreadPoolExecutor(max_workers=1) as pool:
            for spec, shape in zip(shards, shapes, strict=True):
                _check_dims(conn, dataset_id, spec, shape)
            if samples is not None:
                sample_ids = bulk.allocate_ids(conn, Sample.__table__, count)
                identity_ids = (
                    bulk.identity_ids(conn, dataset_id, samples.identity_labels)
                    if samples.identity_labels is not None
                    else samples.identity_ids
                )
            arrow = [
                parquet.to_table(
                    sample_ids,
                    identity_ids,
                    spec.vectors,
                    {"content": spec.content, "space": spec.space or ""},
                )
                for spec in shards
            ] + [_table_of(spec) for spec in tables]
            writing = pool.submit(_write_staged, store, arrow)
            try:
                if samples is not None:
                    bulk.insert_samples(
                        conn,
                        dataset_id,
                        sample_ids,
                        samples.keys,
                        identity_ids,
                        samples.role,
                        samples.labels,
                        samples.paths,
                        samples.attributes,
                        run_id,
                    )
                if extra is not None:
                    extra(conn)
            finally:
                staged = writing.result()  # join the writer before the transaction ends, whatever happened
                created.extend(path for path, _ in staged)
            rows = []
            shapes += [{} for _ in tables]
            for spec, shape, (path, written) in zip([*shards, *tables], shapes, staged, strict=True):
                final = _publish(store, dataset_id, spec, path)
                created[created.index(path)] = final
                rows.append(
                    {
                        "run_id": run_id,
                        "dataset_id": dataset_id,
                        "content": spec.content,
                        "space": spec.space,
                        "unit": unit,
                        "path": store.relpath(final),
                        "format": "parquet",
                        "rows": written.rows,
                        "bytes": written.bytes,
                        "sha256": written.sha256,
                        "state": "committed",
                        "columns": {name: list(s) for name, s in shape.items()},
                    }
                )
            table = Shard.__table__
            shard_ids = [
                conn.execute(sa.insert(table).returning(table.c.id), row).scalar_one() for row in rows
            ]
    except BaseException:
        for path in created:  # best effort: fsck/gc cover what a hard kill leaves behind
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return Committed(
        sample_ids=np.asarray(sample_ids if sample_ids is not None else [], dtype=np.int64),
        shard_ids=shard_ids,
    )
