"""``sample_issue`` rows: what a run could not do with a sample (unreadable file, no face, several faces).

Runs record an issue instead of dropping the sample, and a resumed run counts a sample with an issue as
done, so it never retries a file that cannot work (:mod:`synthdb.embed_dataset`, projection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

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


def details_by_key(catalog: Catalog, dataset_id: int) -> list[tuple[str, dict[str, Any]]]:
    """(sample key, issue detail) of every issue of a dataset's samples (a projection names itself there)."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(_sample.c.key, _issue.c.detail)
            .join(_sample, _sample.c.id == _issue.c.sample_id)
            .where(_sample.c.dataset_id == dataset_id)
        ).all()
    return [(key, detail or {}) for key, detail in rows]
