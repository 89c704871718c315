"""``sample_issue`` rows: what a run could not do with a sample (unreadable file, no face, several faces).

Runs record an issue instead of dropping the sample, and a resumed run counts a sample with an issue as
done, so it never retries a file that cannot work (:mod:`synthdb.embed_dataset`, projection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import Sample, SampleIssue

_issue, _sample = SampleIssue.__table__, Sample.__table__


@dataclass(frozen=True)
class Issue:
    """One problem of one sample, met by run ``run_id`` in ``space`` (the model or generator used)."""

    sample_id: int
    kind: str
    detail: dict[str, Any] | None
    space: str | None
    run_id: int | None


def insert(conn: Connection, issues: Sequence[Issue]) -> None:
    """Insert issues inside the caller's transaction (the commit of the unit that met them)."""
    if issues:
        conn.execute(sa.insert(_issue), [asdict(issue) for issue in issues])


def record(catalog: Catalog, issues: Sequence[Issue]) -> None:
    """Insert issues in a transaction of their own (a unit where every sample failed commits no shard)."""
    with catalog.begin() as conn:
        insert(conn, issues)


def flagged_samples(catalog: Catalog, dataset_id: int, space: str) -> set[int]:
    """Samples of a dataset with an issue recorded in ``space``: a resumed run skips them."""
    with catalog.engine.connect() as conn:
        return set(
            conn.execute(
                sa.select(_issue.c.sample_id)
                .join(_sample, _sample.c.id == _issue.c.sample_id)
                .where(_sample.c.dataset_id == dataset_id, _issue.c.space == space)
            ).scalars()
        )


def of_sample(catalog: Catalog, sample_id: int) -> list[Issue]:
    """Every issue recorded for one sample, oldest first (``synthdb show``)."""
    columns = (_issue.c.sample_id, _issue.c.kind, _issue.c.detail, _issue.c.space, _issue.c.run_id)
    with catalog.engine.connect() as conn:
        rows = conn.execute(sa.select(*columns).where(_issue.c.sample_id == sample_id).order_by(_issue.c.id))
        return [Issue(*row) for row in rows]


def details_by_key(catalog: Catalog, dataset_id: int) -> list[tuple[str, dict[str, Any]]]:
    """(sample key, issue detail) of every issue of a dataset's samples (a projection names itself there)."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(_sample.c.key, _issue.c.detail)
            .join(_sample, _sample.c.id == _issue.c.sample_id)
            .where(_sample.c.dataset_id == dataset_id)
        ).all()
    return [(key, detail or {}) for key, detail in rows]


def counts(catalog: Catalog, dataset_id: int, space: str) -> dict[str, int]:
    """Issues of a dataset's samples in ``space``, by kind: the whole dataset's, whichever run met them (a
    resumed embed reports them all, not only the ones of its own run)."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(_issue.c.kind, sa.func.count())
            .join(_sample, _sample.c.id == _issue.c.sample_id)
            .where(_sample.c.dataset_id == dataset_id, _issue.c.space == space)
            .group_by(_issue.c.kind)
            .order_by(_issue.c.kind)
        ).all()
    return {kind: count for kind, count in rows}


def delete_space(conn: Connection, dataset_id: int, space: str) -> int:
    """Delete, inside the caller's transaction, the issues of a dataset's samples in ``space`` (a re-embed
    with ``--replace`` starts over); return how many went."""
    samples_of = sa.select(_sample.c.id).where(_sample.c.dataset_id == dataset_id)
    result = conn.execute(
        sa.delete(_issue).where(_issue.c.space == space, _issue.c.sample_id.in_(samples_of))
    )
    return result.rowcount


class IssueCount(NamedTuple):
    """How many samples of a dataset met one kind of issue in one space (the report's issue table)."""

    space: str | None
    kind: str
    samples: int


def counts_by_space(catalog: Catalog, dataset_id: int) -> list[IssueCount]:
    """Issues of a dataset's samples by space and kind, every space at once (the report lists them all)."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(_issue.c.space, _issue.c.kind, sa.func.count())
            .join(_sample, _sample.c.id == _issue.c.sample_id)
            .where(_sample.c.dataset_id == dataset_id)
            .group_by(_issue.c.space, _issue.c.kind)
            .order_by(_issue.c.space, _issue.c.kind)
        ).all()
    return [IssueCount(*row) for row in rows]


def examples(catalog: Catalog, dataset_id: int, limit: int) -> list[tuple[str, str, str | None]]:
    """(sample key, kind, space) of a dataset's first ``limit`` issues, oldest first."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(_sample.c.key, _issue.c.kind, _issue.c.space)
            .join(_sample, _sample.c.id == _issue.c.sample_id)
            .where(_sample.c.dataset_id == dataset_id)
            .order_by(_issue.c.id)
            .limit(limit)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]
