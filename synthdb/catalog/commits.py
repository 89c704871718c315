"""The catalog half of the commit protocol (:mod:`synthdb.store.commit`): two short transactions.

1. :func:`reserve` allocates the ids of the new samples and of the identities they name that do not
   exist yet (on SQLite a write transaction of a few statements), and checks the vector sizes against
   what the dataset holds, so a wrong size fails before any file is written;
2. the store writes, fsyncs and renames the shard files, holding no lock;
3. :func:`make_visible` inserts identities, samples, sample issues and shard rows in one transaction.

Between 1 and 3 another writer of the same dataset may create one of the same new identity labels
(generation shards and the concurrent-writer tests do). Then step 3 raises :class:`IdentitiesMoved` with
the ids as committed, the transaction is rolled back, and the store rewrites its files with those ids
and tries again; each retry leaves fewer labels to create, so it ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from synthdb.catalog import bulk, issues
from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import Identity, Sample, Shard, ShardState
from synthdb.errors import SynthdbError

_shard = Shard.__table__


@dataclass
class NewSamples:
    """Sample rows that become visible in the same transaction as their shards.

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


@dataclass(frozen=True)
class ShapeCheck:
    """Vectors about to be committed: their content, space and per-row shape of each column."""

    content: str
    space: str | None
    shapes: dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class ReservedSamples:
    """New samples whose ids are reserved: ``ids`` and ``identity_ids`` are what the shard files hold;
    ``new_identities`` (label -> reserved id) are created when the rows go in."""

    new: NewSamples
    ids: np.ndarray
    identity_ids: np.ndarray | None
    new_identities: dict[str, int]

    @classmethod
    def of(
        cls, new: NewSamples, ids: np.ndarray, known: dict[str, int], fresh: dict[str, int]
    ) -> ReservedSamples:
        """Samples ``new`` with sample ``ids``; their identity labels exist (``known``) or are ``fresh``."""
        if new.identity_labels is None:
            return cls(new, ids, new.identity_ids, {})
        labels, id_of = new.identity_labels, {**known, **fresh}
        identity_ids = np.fromiter((id_of[label] for label in labels), np.int64, len(labels))
        return cls(new, ids, identity_ids, fresh)

    def moved_to(self, committed: dict[str, int]) -> ReservedSamples:
        """The same samples once the identities ``committed`` (label -> id) exist, made by another writer."""
        labels = self.new.identity_labels or []
        known = {**dict(zip(labels, (int(i) for i in self.identity_ids), strict=True)), **committed}
        fresh = {label: i for label, i in self.new_identities.items() if label not in committed}
        return ReservedSamples.of(self.new, self.ids, known, fresh)

    def rows(self, dataset_id: int, run_id: int | None) -> bulk.Rows:
        """The sample rows, encoded: the store builds them while it writes the shard files (no lock held)."""
        new = self.new
        return bulk.sample_rows(
            dataset_id,
            self.ids,
            new.keys,
            self.identity_ids,
            new.role,
            new.labels,
            new.paths,
            new.attributes,
            run_id,
        )


@dataclass(frozen=True)
class NewShard:
    """A shard file in its final place, to be registered as committed."""

    content: str
    space: str | None
    path: str
    rows: int
    bytes: int
    sha256: str
    columns: dict[str, list[int]]


class IdentitiesMoved(Exception):
    """Another writer committed some of the identities this commit meant to create (label -> its id)."""

    def __init__(self, committed: dict[str, int]) -> None:
        super().__init__(f"{len(committed)} identities were created by another writer")
        self.committed = committed


def check_shapes(conn: Connection, dataset_id: int, check: ShapeCheck) -> None:
    """Refuse vectors whose size differs from what this dataset already holds in the same space."""
    space = _shard.c.space == check.space if check.space is not None else _shard.c.space.is_(None)
    existing = conn.execute(
        sa.select(_shard.c.columns, _shard.c.path)
        .where(
            _shard.c.dataset_id == dataset_id,
            _shard.c.content == check.content,
            space,
            _shard.c.state == ShardState.COMMITTED,
        )
        .limit(1)
    ).first()
    if existing is None:
        return
    for name, shape in check.shapes.items():
        known = existing.columns.get(name)
        if known is not None and tuple(known) != shape:
            raise SynthdbError(
                f"{check.content} column '{name}' of space '{check.space}' has per-row shape {shape}, but "
                f"the dataset's committed shards (e.g. {existing.path}) have {tuple(known)}: "
                "use the same model, or write into another dataset"
            )


def reserve(
    catalog: Catalog, dataset_id: int, samples: NewSamples | None, checks: Sequence[ShapeCheck]
) -> ReservedSamples | None:
    """Check the shapes and reserve the ids of ``samples`` (step 1 of the module docstring)."""
    if samples is None:  # vectors of existing samples: nothing to reserve, a read is enough
        with catalog.engine.connect() as conn:
            for check in checks:
                check_shapes(conn, dataset_id, check)
        return None
    with catalog.begin() as conn:
        for check in checks:
            check_shapes(conn, dataset_id, check)
        ids = bulk.allocate_ids(conn, Sample.__table__, len(samples.keys))
        labels = samples.identity_labels or []
        known = bulk.existing_identities(conn, dataset_id, labels)
        missing = [label for label in dict.fromkeys(labels) if label not in known]
        fresh = bulk.allocate_ids(conn, Identity.__table__, len(missing))
    return ReservedSamples.of(samples, ids, known, dict(zip(missing, (int(i) for i in fresh), strict=True)))


def make_visible(
    catalog: Catalog,
    dataset_id: int,
    *,
    run_id: int | None,
    unit: str | None,
    shards: Sequence[NewShard],
    samples: ReservedSamples | None,
    issue_rows: Sequence[issues.Issue],
    checks: Sequence[ShapeCheck],
    sample_rows: bulk.Rows | None = None,
) -> list[int]:
    """Insert every row of one commit in one transaction (step 3); return the new shard ids.

    ``sample_rows``: the rows of ``samples`` already encoded (:meth:`ReservedSamples.rows`), else they are
    encoded here. Raises :class:`IdentitiesMoved`, with nothing written, when another writer created one of
    the identities ``samples`` meant to create.
    """
    with catalog.begin() as conn:
        for check in checks:  # again under the lock: a writer of another size may have committed since
            check_shapes(conn, dataset_id, check)
        if samples is not None:
            _insert_samples(
                conn,
                dataset_id,
                samples,
                sample_rows if sample_rows is not None else samples.rows(dataset_id, run_id),
            )
        issues.insert(conn, issue_rows)
        return [
            conn.execute(
                sa.insert(_shard).returning(_shard.c.id),
                {
                    "run_id": run_id,
                    "dataset_id": dataset_id,
                    "content": shard.content,
                    "space": shard.space,
                    "unit": unit,
                    "path": shard.path,
                    "format": "parquet",
                    "rows": shard.rows,
                    "bytes": shard.bytes,
                    "sha256": shard.sha256,
                    "state": ShardState.COMMITTED,
                    "columns": shard.columns,
                },
            ).scalar_one()
            for shard in shards
        ]


def _insert_samples(conn: Connection, dataset_id: int, samples: ReservedSamples, rows: bulk.Rows) -> None:
    """Create the reserved identities and insert the sample rows; raise IdentitiesMoved (the caller's
    transaction then rolls back) when an identity exists now under another id than the files hold."""
    if samples.new_identities:
        committed = bulk.insert_identities(conn, dataset_id, samples.new_identities)
        moved = {label: i for label, i in committed.items() if samples.new_identities[label] != i}
        if moved:
            raise IdentitiesMoved(moved)
    bulk.insert(conn, rows)
