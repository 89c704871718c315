"""The catalog half of an import (:mod:`synthdb.sources.importer`): one chunk of entries, one chunk of pairs.

Each chunk is one transaction, and re-running a chunk adds nothing: entries whose key the dataset has
already and pairs already at their position are counted as existing and skipped. The sources'
``Entry`` and ``Pair`` values are read through the :class:`EntryFields` / :class:`PairFields` shapes,
so this layer does not depend on the sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from synthdb.catalog import bulk, protocols
from synthdb.catalog.engine import Catalog
from synthdb.catalog.lookup import mapping_in, rows_in
from synthdb.catalog.schema import GroupMember, Sample, SampleRole, VerificationPair

_sample, _pair = Sample.__table__, VerificationPair.__table__


class EntryFields(Protocol):
    """One sample a source found; ``groups`` holds (protocol, group, purpose) memberships."""

    key: str
    path: str | None
    identity: str | None
    attributes: dict[str, Any] | None
    label: str | None
    groups: tuple[tuple[str, str, str | None], ...]


class PairFields(Protocol):
    """A comparison of a protocol group at ``position``: two sample keys, or two template ids."""

    protocol: str
    group: str
    position: int
    first: str
    second: str
    genuine: bool | None
    templates: bool


@dataclass
class PairsAdded:
    """What one chunk of pairs did; ``unknown`` names each pair with a side that is no sample."""

    added: int = 0
    existing: int = 0
    unknown: list[str] = field(default_factory=list)


def add_entries(catalog: Catalog, dataset_id: int, run_id: int, chunk: Sequence[EntryFields]) -> int:
    """Insert the chunk's samples the dataset does not have yet (genuine role), with their identities and
    protocol memberships, in one transaction; return how many were added."""
    with catalog.begin() as conn:
        keys = [e.key for e in chunk]
        in_dataset = _sample.c.dataset_id == dataset_id
        existing = {key for (key,) in rows_in(conn, [_sample.c.key], _sample.c.key, keys, in_dataset)}
        fresh = [e for e in dict((e.key, e) for e in chunk).values() if e.key not in existing]
        if not fresh:
            return 0
        labels = [e.identity for e in fresh]
        known = [label for label in labels if label is not None]
        ident_map = dict(zip(known, bulk.identity_ids(conn, dataset_id, known).tolist(), strict=True))
        ids = bulk.allocate_ids(conn, _sample, len(fresh))
        bulk.insert_samples(
            conn,
            dataset_id,
            ids,
            [e.key for e in fresh],
            [None if label is None else ident_map[label] for label in labels],
            SampleRole.GENUINE,
            labels=[e.label for e in fresh],
            paths=[e.path for e in fresh],
            attributes=[e.attributes for e in fresh],
            run_id=run_id,
        )
        group_ids = protocols.group_ids(conn, dataset_id, {(p, g) for e in fresh for p, g, _ in e.groups})
        members = [
            {"group_id": group_ids[(p, g)], "sample_id": int(sid), "purpose": purpose}
            for e, sid in zip(fresh, ids, strict=True)
            for p, g, purpose in e.groups
        ]
        bulk.insert_rows(conn, GroupMember.__table__, members)
        return len(fresh)


def add_pairs(catalog: Catalog, dataset_id: int, chunk: Sequence[PairFields]) -> PairsAdded:
    """Insert the chunk's pairs not stored yet, in one transaction; a pair whose side names no sample of
    the dataset is left out and named in the result."""
    result = PairsAdded()
    with catalog.begin() as conn:
        group_ids = protocols.group_ids(conn, dataset_id, {(p.protocol, p.group) for p in chunk})
        stored: set[tuple[int, int]] = set()
        for gid in set(group_ids.values()):
            positions = [p.position for p in chunk if group_ids[(p.protocol, p.group)] == gid]
            found = rows_in(conn, [_pair.c.position], _pair.c.position, positions, _pair.c.group_id == gid)
            stored.update((gid, position) for (position,) in found)
        fresh = [p for p in chunk if (group_ids[(p.protocol, p.group)], p.position) not in stored]
        result.existing = len(chunk) - len(fresh)
        keys = {side for p in fresh if not p.templates for side in (p.first, p.second)}
        ids = mapping_in(conn, _sample.c.key, _sample.c.id, keys, _sample.c.dataset_id == dataset_id)
        rows = []
        for p in fresh:
            row = _pair_row(group_ids[(p.protocol, p.group)], p, ids)
            if row is None:
                unknown = next(side for side in (p.first, p.second) if side not in ids)
                result.unknown.append(f"{p.protocol}/{p.group} #{p.position}: {unknown}")
            else:
                rows.append(row)
        bulk.insert_rows(conn, _pair, rows)
        result.added = len(rows)
    return result


def _pair_row(group_id: int, pair: PairFields, ids: dict[str, int]) -> dict[str, Any] | None:
    """The verification_pair row of ``pair``, or None when a sample side is no known key."""
    row: dict[str, Any] = {
        "group_id": group_id,
        "position": pair.position,
        "genuine": pair.genuine,
        "first_sample_id": None,
        "second_sample_id": None,
        "first_template": None,
        "second_template": None,
    }
    if pair.templates:
        row["first_template"], row["second_template"] = pair.first, pair.second
    elif pair.first in ids and pair.second in ids:
        row["first_sample_id"], row["second_sample_id"] = ids[pair.first], ids[pair.second]
    else:
        return None
    return row
