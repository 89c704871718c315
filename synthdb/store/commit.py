"""The commit protocol: shard files and catalog rows become visible together, or not at all.

Steps, holding SQLite's write lock only for the two short transactions (1 and 4):

1. reserve the ids of the new samples (and of new identities) in a short transaction of their own
   (:func:`synthdb.catalog.commits.reserve`: the shard files reference them), and check vector sizes;
2. write each shard to ``staging/<uuid>.parquet`` and fsync it, holding no lock (the sample rows are
   encoded meanwhile, so step 4 only sends them);
3. rename each file into ``shards/<dataset>/<content>/`` and fsync the directory;
4. insert identities, sample rows, sample issues and the shard rows as ``committed``, in ONE transaction
   (:func:`synthdb.catalog.commits.make_visible`).

A crash before step 4's commit leaves no row: at worst reserved ids nobody uses (gaps), a file in
``staging/`` (killed during step 2) or an unreferenced file in ``shards/`` (killed during step 3 or 4).
``synthdb fsck`` reports both and ``synthdb gc`` removes them. A committed row always points to a
complete, checksummed file. When another writer created one of this commit's new identities between
steps 1 and 4, step 4 rolls back, the files are removed and rewritten with that writer's identity ids,
and step 4 runs again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from synthdb.catalog import Catalog, commits
from synthdb.catalog.commits import NewSamples, ShapeCheck
from synthdb.catalog.issues import Issue
from synthdb.catalog.schema import ShardContent, member
from synthdb.errors import SynthdbError
from synthdb.store import parquet
from synthdb.store.layout import Store, fsync_dir

__all__ = ["Committed", "NewSamples", "ShardSpec", "TableSpec", "commit"]


@dataclass
class ShardSpec:
    """One vector shard to write: what it holds, in which space, and the vectors (row-aligned)."""

    content: str
    space: str | None
    vectors: dict[str, np.ndarray]


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


def _shapes_of(spec: TableSpec) -> dict[str, list[int]]:
    """Per-row shape of each column of a table shard (``[]`` for a scalar column), for its catalog row."""
    return {name: list(np.shape(array)[1:]) for name, array in spec.columns.items()}


def _write_staged(store: Store, tables: list[pa.Table]) -> list[tuple[Path, parquet.WrittenFile]]:
    """Write each table to its own staged file, all at once (Arrow and fsync release the GIL); on failure
    remove what this call wrote."""
    paths = [store.new_staged(".parquet") for _ in tables]
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(tables))) as pool:
            writing = [pool.submit(parquet.write_table, t, p) for t, p in zip(tables, paths, strict=True)]
        return [(path, job.result()) for path, job in zip(paths, writing, strict=True)]
    except BaseException:
        _remove(paths)  # the pool's exit waited for every writer
        raise


def _publish(store: Store, dataset_id: int, content: str, staged: Path) -> Path:
    """Rename a staged file to its final place and make the rename durable."""
    final = store.abspath(store.shard_relpath(dataset_id, content, staged.name))
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    fsync_dir(final.parent)
    return final


def _remove(paths: Sequence[Path]) -> None:
    """Best effort: fsck/gc cover what a hard kill leaves behind."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


@dataclass(frozen=True)
class _Files:
    """The shard files of one commit attempt, in their final places, and the rows that will name them."""

    paths: list[Path]
    rows: list[commits.NewShard]


def _write_files(
    store: Store,
    dataset_id: int,
    shards: Sequence[ShardSpec],
    tables: Sequence[TableSpec],
    checks: Sequence[ShapeCheck],
    sample_ids: np.ndarray | None,
    identity_ids: np.ndarray | Sequence[int | None] | None,
) -> _Files:
    """Steps 2 and 3 of the module docstring, holding no lock; on failure nothing is left behind."""
    arrow = [
        parquet.to_table(
            sample_ids, identity_ids, spec.vectors, {"content": spec.content, "space": spec.space or ""}
        )
        for spec in shards
    ] + [_table_of(spec) for spec in tables]
    columns = [{name: list(s) for name, s in check.shapes.items()} for check in checks]
    columns += [_shapes_of(spec) for spec in tables]
    staged = _write_staged(store, arrow)
    paths = [path for path, _ in staged]
    rows = []
    try:
        for i, (spec, cols, (path, written)) in enumerate(
            zip([*shards, *tables], columns, staged, strict=True)
        ):
            paths[i] = _publish(store, dataset_id, spec.content, path)
            rows.append(
                commits.NewShard(
                    spec.content,
                    spec.space,
                    store.relpath(paths[i]),
                    written.rows,
                    written.bytes,
                    written.sha256,
                    cols,
                )
            )
    except BaseException:
        _remove(paths)
        raise
    return _Files(paths, rows)


def commit(
    catalog: Catalog,
    store: Store,
    *,
    dataset_id: int,
    shards: Sequence[ShardSpec] = (),
    samples: NewSamples | None = None,
    sample_ids: np.ndarray | None = None,
    identity_ids: np.ndarray | Sequence[int | None] | None = None,
    run_id: int | None = None,
    unit: str | None = None,
    issues: Sequence[Issue] = (),
    tables: Sequence[TableSpec] = (),
) -> Committed:
    """Commit shards (and optionally their new samples) atomically; see the module docstring.

    Either ``samples`` (rows to create) or ``sample_ids`` (+ ``identity_ids``) of existing rows say
    which samples the vectors belong to, in row order. ``issues`` are recorded in the same transaction
    (the sample issues of a work unit). ``tables`` are shards without samples (stats, checkpoints)
    committed in the same transaction; with tables only, ``shards`` must be empty and neither samples
    nor sample ids are needed.
    """
    table_only = bool(tables) and not shards and samples is None and sample_ids is None
    if not table_only and (samples is None) == (sample_ids is None):
        raise SynthdbError("commit needs either new samples or the ids of existing samples")
    count = 0 if table_only else len(samples.keys) if samples is not None else len(sample_ids)
    for spec in [*shards, *tables]:
        member(ShardContent, spec.content, "shard content")
    checks = [
        ShapeCheck(spec.content, spec.space, parquet.validate_vectors(spec.vectors, count)) for spec in shards
    ]
    reserved = commits.reserve(catalog, dataset_id, samples, checks)
    while True:
        ids, idents = (reserved.ids, reserved.identity_ids) if reserved else (sample_ids, identity_ids)
        with ThreadPoolExecutor(max_workers=1) as pool:  # Arrow's writers release the GIL meanwhile
            encoding = pool.submit(reserved.rows, dataset_id, run_id) if reserved else None
            files = _write_files(store, dataset_id, shards, tables, checks, ids, idents)
        try:
            rows = encoding.result() if encoding else None
            shard_ids = commits.make_visible(
                catalog,
                dataset_id,
                run_id=run_id,
                unit=unit,
                shards=files.rows,
                samples=reserved,
                issue_rows=issues,
                checks=checks,
                sample_rows=rows,
            )
        except commits.IdentitiesMoved as moved:
            _remove(files.paths)
            reserved = reserved.moved_to(moved.committed)  # only new samples create identities
            continue
        except BaseException:
            _remove(files.paths)
            raise
        return Committed(np.asarray(ids if ids is not None else [], dtype=np.int64), shard_ids)
