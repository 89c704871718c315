"""Sample and identity rows as the jobs read them: a dataset's samples, and fields looked up by id.

Lookups by a list of ids go through :func:`synthdb.catalog.lookup.rows_in` (chunked ``IN``), so a
million ids cost a hundred statements, not a million nor one too large to send.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa

from synthdb.catalog.engine import Catalog
from synthdb.catalog.lookup import mapping_in, rows_in
from synthdb.catalog.schema import GroupMember, Identity, Sample

_sample, _identity, _member = Sample.__table__, Identity.__table__, GroupMember.__table__

NO_IDENTITY = -1
"""The identity id of a sample that belongs to no identity, in arrays (which cannot hold None)."""

STREAM_ROWS = 50_000


@dataclass(frozen=True)
class SampleColumns:
    """Every sample of a dataset as row-aligned arrays, in id order (``identity_id`` NO_IDENTITY for none)."""

    id: np.ndarray
    identity_id: np.ndarray
    role: np.ndarray
    key: np.ndarray
    path: np.ndarray


class SampleListing(NamedTuple):
    """One sample with its identity's label (``identity``), as exports and projections list them."""

    id: int
    key: str
    path: str | None
    identity_id: int | None
    identity: str | None
    role: str
    label: str | None
    attributes: dict[str, Any] | None
    run_id: int | None


def sample_columns(catalog: Catalog, dataset_id: int, with_path: bool = False) -> SampleColumns:
    """A dataset's samples as arrays (only those with an image path when ``with_path``)."""
    statement = (
        sa.select(_sample.c.id, _sample.c.identity_id, _sample.c.role, _sample.c.key, _sample.c.path)
        .where(_sample.c.dataset_id == dataset_id)
        .order_by(_sample.c.id)
    )
    if with_path:
        statement = statement.where(_sample.c.path.is_not(None))
    with catalog.engine.connect() as conn:
        rows = conn.execute(statement).all()
    return SampleColumns(
        id=np.array([r.id for r in rows], np.int64),
        identity_id=np.array(
            [NO_IDENTITY if r.identity_id is None else r.identity_id for r in rows], np.int64
        ),
        role=np.array([r.role for r in rows], object),
        key=np.array([r.key for r in rows], object),
        path=np.array([r.path for r in rows], object),
    )


def listing(
    catalog: Catalog, dataset_id: int, in_groups: Sequence[int] | None = None
) -> Iterator[SampleListing]:
    """Stream a dataset's samples in id order (only members of the protocol groups ``in_groups``)."""
    statement = (
        sa.select(
            _sample.c.id,
            _sample.c.key,
            _sample.c.path,
            _sample.c.identity_id,
            _identity.c.label.label("identity"),
            _sample.c.role,
            _sample.c.label,
            _sample.c.attributes,
            _sample.c.run_id,
        )
        .select_from(_sample.outerjoin(_identity, _identity.c.id == _sample.c.identity_id))
        .where(_sample.c.dataset_id == dataset_id)
        .order_by(_sample.c.id)
    )
    if in_groups is not None:
        members = sa.select(_member.c.sample_id).where(_member.c.group_id.in_(list(in_groups)))
        statement = statement.where(_sample.c.id.in_(members))
    with catalog.engine.connect() as conn:
        for row in conn.execution_options(yield_per=STREAM_ROWS).execute(statement):
            yield SampleListing(*row)


def identity_labels(catalog: Catalog, identity_ids: Iterable[int]) -> dict[int, str]:
    """Labels of identities by id (NO_IDENTITY and unknown ids are left out)."""
    wanted = {int(i) for i in identity_ids if i != NO_IDENTITY}
    with catalog.engine.connect() as conn:
        return mapping_in(conn, _identity.c.id, _identity.c.label, wanted)


def sample_roles(catalog: Catalog, sample_ids: Iterable[int]) -> dict[int, str]:
    """Roles of samples by id."""
    with catalog.engine.connect() as conn:
        return mapping_in(conn, _sample.c.id, _sample.c.role, (int(i) for i in sample_ids))


def sample_attributes(catalog: Catalog, sample_ids: Iterable[int]) -> dict[int, dict[str, Any] | None]:
    """Attributes of samples by id."""
    with catalog.engine.connect() as conn:
        return mapping_in(conn, _sample.c.id, _sample.c.attributes, (int(i) for i in sample_ids))


def sample_keys(catalog: Catalog, dataset_id: int, among: Iterable[str] | None = None) -> set[str]:
    """Keys of a dataset's samples (only those in ``among`` when given: which of a batch exist already)."""
    with catalog.engine.connect() as conn:
        if among is None:
            statement = sa.select(_sample.c.key).where(_sample.c.dataset_id == dataset_id)
            return set(conn.execute(statement).scalars())
        found = rows_in(conn, [_sample.c.key], _sample.c.key, among, _sample.c.dataset_id == dataset_id)
    return {key for (key,) in found}


def set_paths(catalog: Catalog, paths: dict[int, str]) -> None:
    """Point samples (by id) at their image files, in one transaction."""
    if not paths:
        return
    with catalog.begin() as conn:
        conn.execute(
            sa.update(_sample).where(_sample.c.id == sa.bindparam("sid")).values(path=sa.bindparam("p")),
            [{"sid": sid, "p": path} for sid, path in paths.items()],
        )
