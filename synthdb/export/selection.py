"""Which samples an export writes, and in which order, streamed so that memory does not grow with them.

The order: identities in natural order of their labels (``9`` before ``10``; samples without an identity
last), each identity's samples in natural order of their keys, compared in Python so that SQLite and
PostgreSQL collations cannot change it; contiguous class ids go to identities in that order.

Why streamed: an export may select tens of millions of samples. The catalog's rows arrive in id order,
``RUN_ROWS`` at a time; each run is sorted in memory and, when there is more than one, written as JSON
lines into a spill folder inside the export's own folder; the runs are merged once into one sorted file
that every later pass reads line by line (:meth:`Selection.samples`). What stays in memory is one run,
one line per run during the merge, and the ids a ``--where`` predicate matched (8 bytes each). A selection
that fits in one run never touches the disk.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from synthdb.catalog import samples
from synthdb.catalog.datasets import get_dataset
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.hdf5 import natural_sort_key

RUN_ROWS = 50_000
"""Samples sorted in memory at a time; more are spilled in sorted runs of this size and merged."""
SORTED_NAME = "selection.jsonl"


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


@dataclass
class Selection:
    """The samples an export writes, in export order, read back as often as a format needs them.

    ``count`` samples in ``classes`` identities; ``excluded`` counts the samples the format cannot use
    (no identity, no image); ``numeric_labels`` says every identity label is a distinct integer.
    """

    dataset: DatasetInfo
    count: int
    classes: int
    excluded: dict[str, int]
    fingerprint: str
    source_runs: set[int]
    numeric_labels: bool
    _rows: list[SampleRecord] | None = None
    _spill: Path | None = None
    _sorted: Path | None = field(default=None, repr=False)

    def samples(self, start: int = 0) -> Iterator[SampleRecord]:
        """The selected samples in export order, from position ``start``."""
        if self._rows is not None:
            yield from itertools.islice(self._rows, start, None)
            return
        assert self._sorted is not None
        with open(self._sorted, encoding="utf-8") as lines:
            for line in itertools.islice(lines, start, None):
                yield SampleRecord(*json.loads(line))

    def close(self) -> None:
        """Remove the spill folder (the export's own scratch space)."""
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)


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
    """Ids of the dataset's samples for which ``predicate`` holds, sorted, evaluated by DuckDB over the
    catalog (8 bytes per match: the one part of a selection held whole)."""
    from synthdb.analysis.query import query

    sql = where_query(dataset_id, predicate)
    try:
        table = query(ctx, sql, timeout_s=WHERE_TIMEOUT_S)
    except SynthdbError as exc:
        raise SynthdbError(
            f"--where failed: {exc} (columns: s.key, s.path, s.role, s.label, "
            "s.attributes, i.label, i.attributes, ...)"
        ) from None
    return np.sort(table.column(0).to_numpy(zero_copy_only=False).astype(np.int64))


# --------------------------------------------------------------------------------------------- building

Row = tuple[Any, ...]
"""A catalog listing row: (id, key, path, identity_id, identity, role, label, attributes, run_id)."""


def _order(row: Row) -> tuple[Any, ...]:
    """Export order: identities by natural label order (none last), then natural key order, then id."""
    label = row[4]
    return (label is None, natural_sort_key(label) if label is not None else (), row[3] or 0,
            natural_sort_key(row[1]), row[0])  # fmt: skip


def _kept(
    ctx: Context, dataset: DatasetInfo, keep: np.ndarray | None, needs: tuple[bool, bool], excluded: dict
) -> Iterator[Row]:
    """The dataset's rows that ``keep`` (sorted ids, None: all) holds and the format can use, in id order."""
    needs_identity, needs_image = needs
    listing = samples.listing(ctx.catalog, dataset.id)
    while block := list(itertools.islice(listing, 5_000)):
        if keep is not None:
            ids = np.fromiter((r.id for r in block), np.int64, len(block))
            at = np.minimum(np.searchsorted(keep, ids), max(len(keep) - 1, 0))
            hits = keep[at] == ids if len(keep) else np.zeros(len(block), np.bool_)
            block = [r for r, hit in zip(block, hits, strict=True) if hit]
        for row in block:
            if needs_identity and row.identity_id is None:
                excluded["no_identity"] += 1
            elif needs_image and not row.path:
                excluded["no_image"] += 1
            else:
                yield tuple(row)


def _write_run(rows: list[Row], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, default=str) + "\n" for row in rows)
    return path


def _read_run(path: Path) -> Iterator[Row]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield tuple(json.loads(line))


def _sorted_rows(rows: Iterable[Row], spill: Path) -> tuple[Iterator[Row] | list[Row], bool]:
    """``rows`` in export order: a sorted list when they fit in one run, else a merge of spilled runs."""
    runs: list[Path] = []
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= RUN_ROWS:
            spill.mkdir(parents=True, exist_ok=True)
            runs.append(_write_run(sorted(chunk, key=_order), spill / f"run-{len(runs):06d}.jsonl"))
            chunk = []
    chunk.sort(key=_order)
    if not runs:
        return chunk, False
    runs.append(_write_run(chunk, spill / f"run-{len(runs):06d}.jsonl"))
    return heapq.merge(*(_read_run(p) for p in runs), key=_order), True


def select(
    ctx: Context,
    dataset: DatasetInfo,
    keep: np.ndarray | None,
    needs_identity: bool,
    needs_image: bool,
    spill: Path,
) -> Selection:
    """The dataset's samples that ``keep`` holds (sorted ids from :func:`matching_ids`; None: all) and the
    format can use, in export order; runs beyond the first are spilled under ``spill`` (removed by
    :meth:`Selection.close`)."""
    shutil.rmtree(spill, ignore_errors=True)  # left by a run killed while it selected
    excluded = {"no_identity": 0, "no_image": 0}
    rows = _kept(ctx, dataset, keep, (needs_identity, needs_image), excluded)
    ordered, spilled = _sorted_rows(rows, spill)
    digest = hashlib.sha256()
    tally = _Tally(dataset)
    records: list[SampleRecord] | None = None if spilled else []
    out = open(spill / SORTED_NAME, "w", encoding="utf-8") if spilled else None  # noqa: SIM115
    try:
        for row in ordered:
            record = SampleRecord(*row, cls=tally.add(row))
            digest.update(f"{record.id}\t{record.key}\t{record.path}\t{record.identity_id}\t{record.cls}\n".encode())
            if out is not None:
                out.write(json.dumps(record, default=str) + "\n")
            else:
                assert records is not None
                records.append(record)
    finally:
        if out is not None:
            out.close()
    if spilled:
        for run in spill.glob("run-*.jsonl"):
            run.unlink()
    return Selection(
        dataset,
        tally.count,
        tally.classes,
        {k: v for k, v in excluded.items() if v},
        digest.hexdigest(),
        tally.runs,
        tally.numeric,
        records,
        spill if spilled else None,
        spill / SORTED_NAME if spilled else None,
    )


class _Tally:
    """Counts, class ids and facts gathered while the sorted selection streams past once."""

    def __init__(self, dataset: DatasetInfo) -> None:
        self.count = self.classes = 0
        self.runs: set[int] = set() if dataset.created_by_run_id is None else {dataset.created_by_run_id}
        self.numeric = True
        self._identity: int | None = None
        self._number: int | None = None

    def add(self, row: Row) -> int:
        """Count ``row`` and return its class id (-1 without an identity)."""
        self.count += 1
        if row[8] is not None:
            self.runs.add(int(row[8]))
        if row[3] is None:
            return -1
        if row[3] != self._identity:
            self._identity = row[3]
            self.classes += 1
            self._check_number(str(row[4]))
        return self.classes - 1

    def _check_number(self, label: str) -> None:
        """Labels ``7`` and ``007`` sort next to each other, so one comparison finds equal numbers."""
        if not label.isdigit():
            self.numeric = False
            return
        if self._number == int(label):
            self.numeric = False
        self._number = int(label)
