"""Dataset rows: create them, find them by name, list, describe, rename and delete them, and the few
fields that change after creation."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from synthdb.catalog import indexes, shards
from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import (
    Dataset,
    DatasetKind,
    Identity,
    Protocol,
    Run,
    Sample,
    SampleIssue,
    Shard,
    ShardContent,
    ShardState,
    member,
)
from synthdb.errors import SynthdbError

_dataset, _run, _sample = Dataset.__table__, Run.__table__, Sample.__table__
_identity, _issue, _protocol, _shard = (
    Identity.__table__,
    SampleIssue.__table__,
    Protocol.__table__,
    Shard.__table__,
)
MAX_NAME = 200


@dataclass(frozen=True)
class DatasetRow:
    """A dataset as recorded; ``root`` is where its images live (None for latent-only datasets)."""

    id: int
    name: str
    kind: str
    source: str
    root: str | None
    description: str | None
    created_by_run_id: int | None
    attributes: dict[str, Any] | None


@dataclass(frozen=True)
class Creator:
    """The run that created a dataset, as an import needs it to decide whether to resume."""

    run_id: int | None
    status: str | None
    host: str | None
    pid: int | None


_COLUMNS = [_dataset.c[f.name] for f in fields(DatasetRow)]
_UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


def create_dataset(
    catalog: Catalog,
    name: str,
    kind: str,
    source: str,
    root: str | None = None,
    description: str | None = None,
    run_id: int | None = None,
    attributes: dict[str, Any] | None = None,
) -> int:
    """Create a dataset and return its id; a taken name is an error (names are how users refer to them),
    also when another process takes it at the same moment."""
    member(DatasetKind, kind, "dataset kind")
    taken = SynthdbError(f"a dataset named '{name}' exists already: choose another --name")
    try:
        with catalog.begin() as conn:
            if conn.execute(sa.select(_dataset.c.id).where(_dataset.c.name == name)).first() is not None:
                raise taken
            return conn.execute(
                sa.insert(_dataset).returning(_dataset.c.id),
                {
                    "name": name,
                    "kind": kind,
                    "source": source,
                    "root": root,
                    "description": description,
                    "created_by_run_id": run_id,
                    "attributes": attributes,
                },
            ).scalar_one()
    except sa.exc.IntegrityError as exc:  # PostgreSQL: another transaction took the name since our check
        if getattr(exc.orig, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise
        raise taken from None


def dataset_id(catalog: Catalog, name: str) -> int:
    """The id of the dataset called ``name``, or an error listing what exists."""
    with catalog.engine.connect() as conn:
        found = conn.execute(sa.select(_dataset.c.id).where(_dataset.c.name == name)).scalar_one_or_none()
        if found is not None:
            return found
        names = conn.execute(sa.select(_dataset.c.name).order_by(_dataset.c.name).limit(20)).scalars().all()
    known = ", ".join(names) if names else "none yet"
    raise SynthdbError(f"no dataset named '{name}' in the catalog (known: {known}): check the name")


def find_dataset(catalog: Catalog, name: str) -> DatasetRow | None:
    """The dataset called ``name``, or None."""
    with catalog.engine.connect() as conn:
        found = conn.execute(sa.select(*_COLUMNS).where(_dataset.c.name == name)).first()
    return None if found is None else DatasetRow(**found._asdict())


def get_dataset(catalog: Catalog, name: str) -> DatasetRow:
    """The dataset called ``name``, or an error listing what exists."""
    found = dataset_id(catalog, name)
    with catalog.engine.connect() as conn:
        return DatasetRow(**conn.execute(sa.select(*_COLUMNS).where(_dataset.c.id == found)).one()._asdict())


def creator(catalog: Catalog, dataset: int) -> Creator:
    """The run that created ``dataset`` and how it stands (all None when no run is recorded)."""
    with catalog.engine.connect() as conn:
        found = conn.execute(
            sa.select(_dataset.c.created_by_run_id, _run.c.status, _run.c.host, _run.c.pid)
            .outerjoin(_run, _run.c.id == _dataset.c.created_by_run_id)
            .where(_dataset.c.id == dataset)
        ).one()
    return Creator(*found)


def set_creator(catalog: Catalog, dataset: int, run_id: int) -> None:
    """Record ``run_id`` as the run that made ``dataset`` (a run that completed another's import)."""
    with catalog.begin() as conn:
        conn.execute(sa.update(_dataset).where(_dataset.c.id == dataset).values(created_by_run_id=run_id))


def set_root(catalog: Catalog, dataset: int, root: str) -> None:
    """Record where a dataset's images live (rendering gives a latent-only dataset its images)."""
    with catalog.begin() as conn:
        conn.execute(sa.update(_dataset).where(_dataset.c.id == dataset).values(root=root))


def sample_count(catalog: Catalog, dataset: int) -> int:
    """How many samples a dataset has."""
    with catalog.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(_sample).where(_sample.c.dataset_id == dataset)
        ).scalar_one()


def latent_spaces(catalog: Catalog, dataset: int) -> list[str]:
    """The generators whose latents a dataset's committed shards hold (usually one), sorted."""
    return shards.committed_spaces(catalog, dataset, ShardContent.LATENT)


def output_dataset(
    catalog: Catalog,
    name: str,
    run_id: int,
    attributes: dict[str, Any],
    shared: bool,
    source: str = "generated",
) -> int:
    """A generation or projection run's output dataset: created on first use; reused on resume, and by the
    other shards of a job array or re-runs (``shared``) as long as it was made by the same kind of command
    (``source``) with the same parameters."""
    for _attempt in range(2):  # a second look when another shard created it between our check and insert
        row = find_dataset(catalog, name)
        if row is not None:
            same = row.source == source and (row.attributes or {}) == attributes
            if row.created_by_run_id == run_id or (shared and same):
                return row.id
            raise SynthdbError(f"a dataset named '{name}' exists already: choose another --name")
        try:
            return create_dataset(
                catalog, name, DatasetKind.SYNTHETIC, source, root=None, run_id=run_id, attributes=attributes
            )
        except SynthdbError:
            if not shared:
                raise
    raise SynthdbError(f"dataset '{name}' could not be created: re-run the command")


@dataclass(frozen=True)
class DatasetListing:
    """One line of ``synthdb datasets list``."""

    name: str
    kind: str
    source: str
    samples: int
    identities: int
    created_at: datetime


@dataclass(frozen=True)
class ShardGroup:
    """A dataset's committed shards of one content and space: how many, their rows and bytes."""

    content: str
    space: str | None
    shards: int
    rows: int
    bytes: int


@dataclass(frozen=True)
class DatasetContents:
    """What a dataset holds, counted (``synthdb datasets show``, and what a delete removes)."""

    samples: int
    identities: int
    roles: dict[str, int]
    issues: int
    protocols: int
    shard_groups: list[ShardGroup]
    indexes: int


def _count(conn: sa.Connection, table: sa.Table, dataset_id: int) -> int:
    return conn.execute(
        sa.select(sa.func.count()).select_from(table).where(table.c.dataset_id == dataset_id)
    ).scalar_one()


def list_datasets(catalog: Catalog) -> list[DatasetListing]:
    """Every dataset with its sample and identity counts, by name."""
    samples = sa.select(sa.func.count()).where(_sample.c.dataset_id == _dataset.c.id).scalar_subquery()
    identities = sa.select(sa.func.count()).where(_identity.c.dataset_id == _dataset.c.id).scalar_subquery()
    statement = sa.select(
        _dataset.c.name, _dataset.c.kind, _dataset.c.source, samples, identities, _dataset.c.created_at
    ).order_by(_dataset.c.name)
    with catalog.engine.connect() as conn:
        return [DatasetListing(*row) for row in conn.execute(statement)]


def contents(catalog: Catalog, dataset_id: int) -> DatasetContents:
    """Counts of a dataset's rows: samples (by role), identities, issues, protocols, committed shards by
    content and space, and the indexes that cover it."""
    with catalog.engine.connect() as conn:
        roles = conn.execute(
            sa.select(_sample.c.role, sa.func.count())
            .where(_sample.c.dataset_id == dataset_id)
            .group_by(_sample.c.role)
            .order_by(_sample.c.role)
        ).all()
        issues = conn.execute(
            sa.select(sa.func.count())
            .select_from(_issue.join(_sample, _sample.c.id == _issue.c.sample_id))
            .where(_sample.c.dataset_id == dataset_id)
        ).scalar_one()
        groups = conn.execute(
            sa.select(
                _shard.c.content,
                _shard.c.space,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(_shard.c.rows), 0),
                sa.func.coalesce(sa.func.sum(_shard.c.bytes), 0),
            )
            .where(_shard.c.dataset_id == dataset_id, _shard.c.state == ShardState.COMMITTED)
            .group_by(_shard.c.content, _shard.c.space)
            .order_by(_shard.c.content, _shard.c.space)
        ).all()
        return DatasetContents(
            samples=sum(count for _, count in roles),
            identities=_count(conn, _identity, dataset_id),
            roles={role: count for role, count in roles},
            issues=issues,
            protocols=_count(conn, _protocol, dataset_id),
            shard_groups=[ShardGroup(c, s, n, int(r), int(b)) for c, s, n, r, b in groups],
            indexes=len(indexes.covering(conn, dataset_id)),
        )


def check_name(name: str) -> None:
    """Refuse a dataset name nobody could type or read back: empty, too long, or with control characters."""
    if not name.strip() or len(name) > MAX_NAME or any(not ch.isprintable() for ch in name):
        raise SynthdbError(
            f"{name!r} is not a usable dataset name: give 1 to {MAX_NAME} printable characters"
        )


def rename(catalog: Catalog, dataset_id: int, new_name: str) -> None:
    """Give a dataset another name; a taken name is an error, also when another process takes it meanwhile."""
    check_name(new_name)
    taken = SynthdbError(f"a dataset named '{new_name}' exists already: choose another name")
    try:
        with catalog.begin() as conn:
            if conn.execute(sa.select(_dataset.c.id).where(_dataset.c.name == new_name)).first() is not None:
                raise taken
            conn.execute(sa.update(_dataset).where(_dataset.c.id == dataset_id).values(name=new_name))
    except sa.exc.IntegrityError as exc:  # PostgreSQL: another transaction took the name since our check
        if getattr(exc.orig, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise
        raise taken from None


def delete(catalog: Catalog, dataset_id: int) -> None:
    """Delete a dataset and, in the same transaction, every row that belongs to it (identities, samples,
    issues, protocols and their pairs, shard rows: the foreign keys cascade) and the indexes that cover it.
    Their files are left to ``synthdb gc``, which removes files no row references."""
    with catalog.begin() as conn:
        indexes.delete_in(conn, indexes.covering(conn, dataset_id))
        conn.execute(sa.delete(_dataset).where(_dataset.c.id == dataset_id))
