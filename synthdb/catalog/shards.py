"""Shard rows: which Parquet files hold a dataset's vectors, a run's units, a check's results.

Every reader of vectors (analysis, generation, export, queries, fsck) asks here which files to read, so
"the committed shards of X" is one query, :func:`committed`, whatever X is. Rows come back as
:class:`ShardRow` values with paths relative to the store (the store makes them absolute).

``columns`` of a row maps each column of its file to the per-row shape: ``[512]`` for a 512-float
vector column, ``[]`` for a scalar column (table shards: stats, and check results since
:data:`TYPED_RESULTS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from synthdb.catalog import issues
from synthdb.catalog.engine import Catalog
from synthdb.catalog.lookup import CHUNK
from synthdb.catalog.schema import Dataset, Run, RunKind, Shard, ShardState

_shard, _dataset, _run = Shard.__table__, Dataset.__table__, Run.__table__

TYPED_RESULTS = 2
"""Layout version of ``result`` shards whose columns are typed scalars (rank int32, angle_rad float64,
leak bool); version 1 stored each as a 1-wide float32 list. :func:`result_version` tells them apart."""


@dataclass(frozen=True)
class ShardRow:
    """One shard row; ``dataset`` is the dataset's name (None when no such dataset exists)."""

    id: int
    dataset_id: int
    dataset: str | None
    run_id: int | None
    content: str
    space: str | None
    unit: str | None
    path: str
    rows: int
    bytes: int
    sha256: str
    state: str
    columns: dict[str, Any]


def _select() -> sa.Select:
    """Shard rows with their dataset's name; an outer join, so that a row whose dataset is gone (a
    catalog written with foreign keys off) is still seen, by fsck above all, and not taken for free."""
    return sa.select(_shard, _dataset.c.name.label("dataset")).outerjoin(
        _dataset, _dataset.c.id == _shard.c.dataset_id
    )


def _row(found: sa.Row) -> ShardRow:
    return ShardRow(
        id=found.id,
        dataset_id=found.dataset_id,
        dataset=found.dataset,
        run_id=found.run_id,
        content=found.content,
        space=found.space,
        unit=found.unit,
        path=found.path,
        rows=int(found.rows),
        bytes=int(found.bytes),
        sha256=found.sha256,
        state=found.state,
        columns=dict(found.columns or {}),
    )


def committed(
    catalog: Catalog,
    *,
    dataset_id: int | None = None,
    contents: Sequence[str] = (),
    space: str | None = None,
    run_id: int | None = None,
    limit: int | None = None,
) -> list[ShardRow]:
    """The committed shards matching every filter given (``contents``: any of them), oldest first (the
    first ``limit`` of them when given)."""
    statement = _select().where(_shard.c.state == ShardState.COMMITTED).order_by(_shard.c.id).limit(limit)
    if dataset_id is not None:
        statement = statement.where(_shard.c.dataset_id == dataset_id)
    if contents:
        statement = statement.where(_shard.c.content.in_([str(c) for c in contents]))
    if space is not None:
        statement = statement.where(_shard.c.space == space)
    if run_id is not None:
        statement = statement.where(_shard.c.run_id == run_id)
    with catalog.engine.connect() as conn:
        return [_row(found) for found in conn.execute(statement)]


def committed_spaces(catalog: Catalog, dataset_id: int, content: str) -> list[str]:
    """The spaces (models, generators) a dataset has committed shards of, sorted (for error messages)."""
    with catalog.engine.connect() as conn:
        found = conn.execute(
            sa.select(_shard.c.space)
            .distinct()
            .where(
                _shard.c.dataset_id == dataset_id,
                _shard.c.content == content,
                _shard.c.state == ShardState.COMMITTED,
            )
        ).scalars()
        return sorted(space for space in found if space)


def done_units(catalog: Catalog, run_id: int) -> set[str]:
    """Units of a run with a committed shard: a resumed run skips them."""
    with catalog.engine.connect() as conn:
        found = conn.execute(
            sa.select(_shard.c.unit)
            .distinct()
            .where(_shard.c.run_id == run_id, _shard.c.state == ShardState.COMMITTED)
        ).scalars()
        return {unit for unit in found if unit is not None}


def every_shard(catalog: Catalog) -> list[ShardRow]:
    """Every shard row, whatever its state (fsck compares them all with the files)."""
    with catalog.engine.connect() as conn:
        return [_row(found) for found in conn.execute(_select().order_by(_shard.c.id))]


def retired(catalog: Catalog) -> list[ShardRow]:
    """Shards taken out of use, whose files and rows ``synthdb gc`` removes."""
    with catalog.engine.connect() as conn:
        statement = _select().where(_shard.c.state == ShardState.RETIRED).order_by(_shard.c.id)
        return [_row(found) for found in conn.execute(statement)]


def delete(catalog: Catalog, shard_ids: Sequence[int]) -> None:
    """Remove shard rows (retired ones, once their files are gone)."""
    with catalog.begin() as conn:
        for start in range(0, len(shard_ids), CHUNK):
            conn.execute(sa.delete(_shard).where(_shard.c.id.in_(list(shard_ids[start : start + CHUNK]))))


def retire_embedded(catalog: Catalog, dataset_id: int, content: str, space: str) -> int:
    """Retire the committed shards of one content and space that ``synthdb embed`` runs wrote into a
    dataset, and drop its sample issues in that space, in one transaction (``synthdb embed --replace``: the
    next run starts over, ``gc`` removes the files); return how many shards were retired.

    Only embed runs' shards: a generator's own embeddings and vectors imported from a samples.h5 cannot be
    computed again from the images, so a re-embedding must never retire them."""
    embed_runs = sa.select(_run.c.id).where(_run.c.kind == RunKind.EMBED)
    with catalog.begin() as conn:
        retired_count = conn.execute(
            sa.update(_shard)
            .where(
                _shard.c.dataset_id == dataset_id,
                _shard.c.content == content,
                _shard.c.space == space,
                _shard.c.state == ShardState.COMMITTED,
                _shard.c.run_id.in_(embed_runs),
            )
            .values(state=ShardState.RETIRED)
        ).rowcount
        issues.delete_space(conn, dataset_id, space)
    return retired_count


def result_version(row: ShardRow) -> int:
    """The layout of a ``result`` shard: :data:`TYPED_RESULTS`, or 1 for the float32-list layout."""
    return TYPED_RESULTS if row.columns.get("rank") == [] else 1
