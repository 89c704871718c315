"""Protocol rows: a dataset's protocols, their groups, the samples in each group and the pairs they compare.

Importers create them (:func:`group_ids`, inside an import chunk's transaction); bob and ``.bin``
exports and projections of a protocol's group read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from synthdb.catalog.engine import Catalog
from synthdb.catalog.lookup import rows_in
from synthdb.catalog.schema import GroupMember, Protocol, ProtocolGroup, VerificationPair

_protocol, _group = Protocol.__table__, ProtocolGroup.__table__
_member, _pair = GroupMember.__table__, VerificationPair.__table__

STREAM_ROWS = 50_000


class Membership(NamedTuple):
    """A sample in a protocol group, with its purpose there (train, enroll, probe; None when unsaid)."""

    group: str
    purpose: str | None
    sample_id: int


class PairRow(NamedTuple):
    """One comparison of a group, in file order: two samples, or two templates; ``genuine`` may be None."""

    first_sample_id: int | None
    second_sample_id: int | None
    first_template: str | None
    second_template: str | None
    genuine: bool | None


def protocols_of(catalog: Catalog, dataset_id: int) -> dict[str, int]:
    """name -> id of a dataset's protocols, in name order."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(_protocol.c.name, _protocol.c.id)
            .where(_protocol.c.dataset_id == dataset_id)
            .order_by(_protocol.c.name)
        ).all()
    return dict(rows)


def groups_of(catalog: Catalog, protocol_ids: Iterable[int]) -> dict[str, list[int]]:
    """group name -> ids of the groups of that name across ``protocol_ids`` (a name can be in several)."""
    found: dict[str, list[int]] = {}
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(_group.c.name, _group.c.id)
            .where(_group.c.protocol_id.in_(list(protocol_ids)))
            .order_by(_group.c.id)
        )
        for name, group_id in rows:
            found.setdefault(name, []).append(group_id)
    return found


def members(catalog: Catalog, protocol_id: int) -> list[Membership]:
    """Every membership of a protocol's groups."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(_group.c.name, _member.c.purpose, _member.c.sample_id)
            .join(_member, _member.c.group_id == _group.c.id)
            .where(_group.c.protocol_id == protocol_id)
        ).all()
    return [Membership(*row) for row in rows]


def groups_with_pairs(catalog: Catalog, protocol_id: int) -> list[str]:
    """Names of a protocol's groups that prescribe comparisons, sorted."""
    with catalog.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(_group.c.name)
                .join(_pair, _pair.c.group_id == _group.c.id)
                .where(_group.c.protocol_id == protocol_id)
                .distinct()
                .order_by(_group.c.name)
            ).scalars()
        )


def pairs(catalog: Catalog, protocol_id: int, group: str) -> list[PairRow]:
    """The comparisons of one group of a protocol, in the order of the protocol's file."""
    return list(iter_pairs(catalog, protocol_id, group))


def group_ids(conn: Connection, dataset_id: int, names: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(protocol, group) -> group id, creating missing protocols and groups (in an import's transaction)."""
    found: dict[tuple[str, str], int] = {}
    for protocol, group in sorted(names):
        pid = conn.execute(
            sa.select(_protocol.c.id).where(
                _protocol.c.dataset_id == dataset_id, _protocol.c.name == protocol
            )
        ).scalar_one_or_none()
        if pid is None:
            pid = conn.execute(
                sa.insert(_protocol).values(dataset_id=dataset_id, name=protocol).returning(_protocol.c.id)
            ).scalar_one()
        gid = conn.execute(
            sa.select(_group.c.id).where(_group.c.protocol_id == pid, _group.c.name == group)
        ).scalar_one_or_none()
        if gid is None:
            gid = conn.execute(
                sa.insert(_group).values(protocol_id=pid, name=group).returning(_group.c.id)
            ).scalar_one()
        found[(protocol, group)] = gid
    return found


def group_names(catalog: Catalog, protocol_id: int) -> list[str]:
    """The names of a protocol's groups, sorted (bob maps them onto its train, dev and eval)."""
    with catalog.engine.connect() as conn:
        statement = sa.select(_group.c.name).where(_group.c.protocol_id == protocol_id)
        return list(conn.execute(statement.order_by(_group.c.name)).scalars())



def memberships_of(catalog: Catalog, protocol_id: int, sample_ids: Iterable[int]) -> list[Membership]:
    """The memberships of the given samples in a protocol's groups (one chunk of an export's samples)."""
    columns = (_group.c.name, _member.c.purpose, _member.c.sample_id)
    linked = (_group.c.id == _member.c.group_id, _group.c.protocol_id == protocol_id)
    with catalog.engine.connect() as conn:
        return [Membership(*row) for row in rows_in(conn, columns, _member.c.sample_id, sample_ids, *linked)]


class PairSide(NamedTuple):
    """A sample compared in a group's image pairs: ``first`` (enrolled) or second (probed)."""

    group: str
    sample_id: int
    first: bool


def pair_sides(catalog: Catalog, protocol_id: int, sample_ids: Iterable[int]) -> set[PairSide]:
    """Which of the given samples a protocol's image pairs compare, in which group and on which side."""
    wanted = list(sample_ids)
    found: set[PairSide] = set()
    with catalog.engine.connect() as conn:
        for column, first in ((_pair.c.first_sample_id, True), (_pair.c.second_sample_id, False)):
            linked = (_group.c.id == _pair.c.group_id, _group.c.protocol_id == protocol_id)
            for name, sample_id in rows_in(conn, (_group.c.name, column), column, wanted, *linked):
                found.add(PairSide(name, sample_id, first))
    return found


def iter_pairs(catalog: Catalog, protocol_id: int, group: str) -> Iterator[PairRow]:
    """:func:`pairs`, streamed (IJB-C's test1 compares 15 million template pairs)."""
    statement = (
        sa.select(
            _pair.c.first_sample_id,
            _pair.c.second_sample_id,
            _pair.c.first_template,
            _pair.c.second_template,
            _pair.c.genuine,
        )
        .join(_group, _group.c.id == _pair.c.group_id)
        .where(_group.c.protocol_id == protocol_id, _group.c.name == group)
        .order_by(_pair.c.position)
    )
    with catalog.engine.connect() as conn:
        for row in conn.execution_options(yield_per=STREAM_ROWS).execute(statement):
            yield PairRow(*row)
