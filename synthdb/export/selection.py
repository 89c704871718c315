"""Which samples an export writes, and in which order: the dataset, an optional ``--where`` predicate, then
one deterministic order (identities and keys in natural order, compared in Python so that SQLite and
PostgreSQL collations cannot change it), with contiguous class ids given to identities in that order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from synthdb.catalog import samples
from synthdb.catalog.datasets import get_dataset
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.hdf5 import natural_sort_key


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    name: str
    kind: str
    root: Path | None
    attributes: dict[str, Any]
    created_by_run_id: int | None


class SampleRecord(NamedTuple):
    """One selected sample; ``cls`` is its contiguous class id (-1 without an identity)."""

    id: int
    key: str
    path: str | None
    identity_id: int | None
    identity: str | None
    role: str
    label: str | None
    attributes: dict[str, Any] | None
    run_id: int | None
    cls: int


@dataclass(frozen=True)
class ClassRecord:
    """A class of the export: the catalog identity behind a contiguous class id (its list position)."""

    identity_id: int
    label: str


@dataclass
class Selection:
    """The samples an export writes, in export order, and the classes they map to."""

    dataset: DatasetInfo
    samples: list[SampleRecord]
    classes: list[ClassRecord]
    excluded: dict[str, int]

    def fingerprint(self) -> str:
        """A digest of the ordered selection: a resumed export must see exactly the same samples."""
        digest = hashlib.sha256()
        for s in self.samples:
            digest.update(f"{s.id}\t{s.key}\t{s.path}\t{s.identity_id}\t{s.cls}\n".encode())
        return digest.hexdigest()

    def source_runs(self) -> set[int]:
        runs = {s.run_id for s in self.samples if s.run_id is not None}
        if self.dataset.created_by_run_id is not None:
            runs.add(self.dataset.created_by_run_id)
        return runs


def load_dataset(ctx: Context, name: str) -> DatasetInfo:
    row = get_dataset(ctx.catalog, name)  # names what exists when the name is wrong
    return DatasetInfo(
        id=row.id,
        name=row.name,
        kind=row.kind,
        root=Path(row.root) if row.root else None,
        attributes=row.attributes or {},
        created_by_run_id=row.created_by_run_id,
    )


WHERE_TEMPLATE = (
    "SELECT s.id FROM catalog.sample AS s LEFT JOIN catalog.identity AS i ON i.id = s.identity_id "
    "WHERE s.dataset_id = {dataset_id} AND CAST(({{expr}}) AS BOOLEAN)"
)
WHERE_TIMEOUT_S = 3_600.0  # the selection scans the whole dataset (tens of millions of rows): bounded
_WHERE_HINT = "pass one boolean expression over s.* and i.*, e.g. --where \"s.role = 'reference'\""


def where_query(dataset_id: int, predicate: str) -> str:
    """The SQL that selects a dataset's samples for which ``predicate`` holds, proven to hold the predicate
    as one expression.

    The predicate goes inside ``CAST((...) AS BOOLEAN)`` of a fixed statement, and the *assembled*
    statement is parsed by DuckDB: its tree must equal the template's everywhere outside that CAST
    (:func:`synthdb.analysis.sql_guard.embed_expression`), so quotes, parentheses, comments or ``;`` in
    the predicate cannot reach the rest of the statement. The whole statement then passes the same
    table and function allow-lists as ``synthdb query``, and runs on its sandboxed, read-only, bounded
    connection. DuckDB's tokenizer first names the common mistakes (``;``, comments, ``$``, a stray ``)``).
    """
    from synthdb.analysis.query import CATALOG_TABLES
    from synthdb.analysis.sql_guard import duckdb_policy, embed_expression, lexical_refusal

    text = predicate.strip()
    if not text:
        raise SynthdbError(f"--where is empty: {_WHERE_HINT}")
    reason = lexical_refusal(text)
    if reason:
        raise SynthdbError(f"--where refused: {reason}; {_WHERE_HINT}")
    template = WHERE_TEMPLATE.format(dataset_id=int(dataset_id))
    try:
        return embed_expression(template, text, duckdb_policy(CATALOG_TABLES))
    except SynthdbError as exc:
        raise SynthdbError(f"--where refused: {exc}; {_WHERE_HINT}") from None


def check_where(predicate: str) -> str:
    """Validate a ``--where`` predicate (see :func:`where_query`) and return it stripped."""
    where_query(0, predicate)
    return predicate.strip()


def matching_ids(ctx: Context, dataset_id: int, predicate: str) -> np.ndarray:
    """Ids of the dataset's samples for which ``predicate`` holds, evaluated by DuckDB over the catalog."""
    from synthdb.analysis.query import query

    sql = where_query(dataset_id, predicate)
    try:
        table = query(ctx, sql, timeout_s=WHERE_TIMEOUT_S)
    except SynthdbError as exc:
        raise SynthdbError(
            f"--where failed: {exc} (columns: s.key, s.path, s.role, s.label, "
            "s.attributes, i.label, i.attributes, ...)"
        ) from None
    return table.column(0).to_numpy(zero_copy_only=False).astype(np.int64)


def select(
    ctx: Context, dataset: DatasetInfo, where: str | None, needs_identity: bool, needs_image: bool
) -> Selection:
    """The dataset's samples that ``where`` keeps and the format can use (``needs_identity``, ``needs_image``:
    the format's :class:`~synthdb.export.job.FormatSpec`), in export order."""
    keep = set(matching_ids(ctx, dataset.id, where).tolist()) if where else None
    rows: list[tuple[Any, ...]] = []
    excluded = {"no_identity": 0, "no_image": 0}
    for row in samples.listing(ctx.catalog, dataset.id):
        if keep is not None and row.id not in keep:
            continue
        if needs_identity and row.identity_id is None:
            excluded["no_identity"] += 1
            continue
        if needs_image and not row.path:
            excluded["no_image"] += 1
            continue
        rows.append(tuple(row))
    order: dict[str, tuple[Any, ...]] = {}

    def sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        label = row[4]
        if label is not None and label not in order:
            order[label] = natural_sort_key(label)
        return (label is None, order.get(label, ()), natural_sort_key(row[1]), row[0])

    rows.sort(key=sort_key)
    classes: list[ClassRecord] = []
    class_of: dict[int, int] = {}
    for row in rows:
        if row[3] is not None and row[3] not in class_of:
            class_of[row[3]] = len(classes)
            classes.append(ClassRecord(row[3], row[4]))
    records = [SampleRecord(*row, cls=class_of.get(row[3], -1)) for row in rows]
    return Selection(dataset, records, classes, {k: v for k, v in excluded.items() if v})
