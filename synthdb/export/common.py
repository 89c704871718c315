"""What every export shares: the sample selection, the output folder's state, progress and the manifest.

An export is a pure function of (catalog rows, image files, parameters): samples are chosen by the
dataset and an optional ``--where`` predicate, then put in one deterministic order (identities and keys
in natural order, compared in Python so that SQLite and PostgreSQL collations cannot change it), and
identities get contiguous class ids in that order. Formats write that sequence.

The output folder carries a small state file (``.synthdb-export.json``, replaced atomically) with the
parameters, a fingerprint of the selection and the format's committed progress, so a re-run after a
crash continues where the last checkpoint left off and refuses to mix a different selection into the
same folder. When a format is done, ``manifest.json`` lists every file with its size and sha256, the
counts, the runs that made the source data and the export runs, the synthdb version and the parameters.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TypeVar

import numpy as np
import sqlalchemy as sa

from synthdb import __version__
from synthdb.catalog.datasets import dataset_id
from synthdb.catalog.runs import set_progress
from synthdb.catalog.schema import Dataset, Identity, Sample
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.files import file_digest
from synthdb.store.hdf5 import natural_sort_key
from synthdb.store.layout import fsync_dir

if TYPE_CHECKING:
    from synthdb.export.images import Encoded, ImagePipeline, Skip

STATE_NAME = ".synthdb-export.json"
MANIFEST_NAME = "manifest.json"
LISTED_SKIPS = 200
PROGRESS_SECONDS = 2.0

T = TypeVar("T")
R = TypeVar("R")


# ------------------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class ExportOptions:
    """Every parameter of an export. ``params()`` holds those that shape the output bytes."""

    where: str | None = None
    crop: str | None = None
    source: str | None = None
    size: int | None = None
    quality: int = 95
    protocol: str | None = None
    group: str | None = None
    pairs: int | None = None
    seed: int = 0
    embedding_model: str | None = None
    shard_max_count: int = 100_000
    shard_max_bytes: int = 1_000_000_000
    workers: int | None = None
    checkpoint_every: int = 1_000
    quiet: bool = False

    def params(self) -> dict[str, Any]:
        """The parameters recorded in the run, the state file and the manifest (not worker counts)."""
        skip = {"workers", "checkpoint_every", "quiet"}
        return {k: v for k, v in vars(self).items() if k not in skip}

    @property
    def threads(self) -> int:
        return self.workers if self.workers else min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class FormatSpec:
    """What a format needs from the selection and how it writes.

    ``encoding``: ``jpeg`` (records carry JPEG bytes; JPEG sources already in shape are copied as they
    are), ``keep`` (files keep their own encoding when no crop or resize applies, else PNG) or ``None``
    (no images). ``default_size`` applies when ``--size`` is not given (insightface reads 112x112).
    """

    name: str
    write: Callable[[Job], dict[str, Any]]
    needs_identity: bool
    needs_image: bool
    encoding: str | None
    default_size: int | None = None


# ---------------------------------------------------------------------------------------------- selection


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
    table = Dataset.__table__
    found = dataset_id(ctx.catalog, name)  # names what exists when the name is wrong
    with ctx.catalog.engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == found)).one()
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


def select(ctx: Context, dataset: DatasetInfo, where: str | None, spec: FormatSpec) -> Selection:
    """The dataset's samples that ``where`` keeps and the format can use, in export order."""
    samples, identities = Sample.__table__, Identity.__table__
    keep = set(matching_ids(ctx, dataset.id, where).tolist()) if where else None
    rows: list[tuple[Any, ...]] = []
    excluded = {"no_identity": 0, "no_image": 0}
    stmt = (
        sa.select(
            samples.c.id,
            samples.c.key,
            samples.c.path,
            samples.c.identity_id,
            identities.c.label.label("identity"),
            samples.c.role,
            samples.c.label,
            samples.c.attributes,
            samples.c.run_id,
        )
        .select_from(samples.outerjoin(identities, identities.c.id == samples.c.identity_id))
        .where(samples.c.dataset_id == dataset.id)
    )
    with ctx.catalog.engine.connect() as conn:
        for row in conn.execution_options(yield_per=50_000).execute(stmt):
            if keep is not None and row.id not in keep:
                continue
            if spec.needs_identity and row.identity_id is None:
                excluded["no_identity"] += 1
                continue
            if spec.needs_image and not row.path:
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


# ------------------------------------------------------------------------------------------- output state


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once: readers and re-runs never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, default=str) + "\n").encode()


class ExportState:
    """The state file of an output folder: parameters, selection fingerprint, runs, committed progress.

    Opening it takes an exclusive lock on the folder (released by the kernel even after SIGKILL), so two
    exports never write into one folder at once.
    """

    def __init__(self, out: Path, data: dict[str, Any], lock_fd: int) -> None:
        self.out = out
        self.data = data
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, out: Path, params: dict[str, Any], fingerprint: str) -> ExportState:
        """Claim ``out`` for an export: create it, or resume the same export left in it."""
        if out.exists() and not out.is_dir():
            raise SynthdbError(f"{out} is a file: pass a folder for the export")
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SynthdbError(
                f"another export is writing into {out}: wait for it or pick another folder"
            ) from None
        try:
            state = cls._read(out, params, fingerprint)
        except BaseException:
            os.close(fd)
            raise
        return cls(out, state, fd)

    @staticmethod
    def _read(out: Path, params: dict[str, Any], fingerprint: str) -> dict[str, Any]:
        path = out / STATE_NAME
        if not path.exists():
            if any(out.iterdir()):
                raise SynthdbError(
                    f"{out} is not empty and holds no synthdb export: pick an empty or new folder"
                )
            return {
                "params": params,
                "fingerprint": fingerprint,
                "runs": [],
                "progress": {},
                "complete": False,
            }
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SynthdbError(f"{path} is unreadable ({exc}): remove the folder and export again") from None
        if state.get("params") != params:
            raise SynthdbError(
                f"{out} holds an export with other parameters ({state.get('params')}): "
                "re-run with those, or pick another folder"
            )
        if state.get("fingerprint") != fingerprint:
            raise SynthdbError(
                f"{out} holds an export of another selection (the dataset changed since): "
                "remove the folder or pick another one"
            )
        return state

    @property
    def progress(self) -> dict[str, Any]:
        return self.data["progress"]

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete"))

    def save(self) -> None:
        write_atomic(self.out / STATE_NAME, json_bytes(self.data))

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


# -------------------------------------------------------------------------------------------- skip record


@dataclass
class SkipLog:
    """Samples an export could not write (unreadable file, no face), counted by kind, never silently.

    ``ids`` holds every skipped sample id (formats that index ranges per class need them all); the
    first LISTED_SKIPS are listed with their reasons.
    """

    counts: dict[str, int] = field(default_factory=dict)
    listed: list[dict[str, Any]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    def add(self, sample: SampleRecord, skip: Skip) -> None:
        self.counts[skip.kind] = self.counts.get(skip.kind, 0) + 1
        self.ids.append(sample.id)
        if len(self.listed) < LISTED_SKIPS:
            self.listed.append({"sample_id": sample.id, "key": sample.key, "reason": skip.detail})

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "listed": self.listed, "ids": self.ids}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SkipLog:
        data = data or {}
        return cls(dict(data.get("counts", {})), list(data.get("listed", [])), list(data.get("ids", [])))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# -------------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One export in progress: what a format writer gets."""

    ctx: Context
    run_id: int
    spec: FormatSpec
    selection: Selection
    out: Path
    options: ExportOptions
    state: ExportState
    images: ImagePipeline | None
    advance: Callable[[int], None]
    skips: SkipLog = field(default_factory=SkipLog)
    extra_source_runs: set[int] = field(default_factory=set)
    _last_progress: float = 0.0

    def report_progress(self, done: int, total: int) -> None:
        """Record progress on the run row, at most every PROGRESS_SECONDS (it is a catalog write)."""
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_SECONDS or done >= total:
            self._last_progress = now
            set_progress(self.ctx.catalog, self.run_id, done / total if total else 1.0)

    def encoded(self, samples: list[SampleRecord]) -> Iterator[tuple[SampleRecord, Encoded | Skip]]:
        """(sample, encoded image or skip) for each sample, in order, encoded on worker threads."""
        assert self.images is not None
        pipeline = self.images
        results = ordered_map(lambda s: pipeline(s.path), samples, self.options.threads)
        yield from zip(samples, results, strict=True)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, window: int = 0) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, results in input order, at most ``window`` in flight.

    Pillow and libjpeg release the GIL, so decoding and encoding scale over threads; the window keeps
    memory flat however many items there are.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    window = window or workers * 8
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def safe_name(text: str) -> str:
    """A file-name-safe form of a label or key: ``/`` becomes ``__``, other odd characters ``_``."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", text.replace("/", "__")).strip(".")
    return name or "_"


def unique_names(names: Iterable[str]) -> list[str]:
    """Make names unique in order by suffixing ``-1``, ``-2``... (deterministic, like the input order)."""
    used: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 0
        while candidate.lower() in used:  # case-insensitive file systems fold case
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate.lower())
        out.append(candidate)
    return out


def write_classes_csv(job: Job, path: Path) -> None:
    """``class,identity_id,identity,images``: how class ids map back to catalog identities."""
    import csv
    import io

    written: dict[int, int] = {}
    skipped = set(job.skips.ids)
    for s in job.selection.samples:
        if s.id not in skipped and s.cls >= 0:
            written[s.cls] = written.get(s.cls, 0) + 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "identity_id", "identity", "images"])
    for cls, c in enumerate(job.selection.classes):
        writer.writerow([cls, c.identity_id, c.label, written.get(cls, 0)])
    write_atomic(path, buffer.getvalue().encode())


def write_manifest(job: Job, output: dict[str, Any]) -> dict[str, Any]:
    """Hash every output file and write ``manifest.json`` with the format's ``output`` facts; return it."""
    files: dict[str, dict[str, Any]] = {}
    paths = sorted(
        p
        for p in job.out.rglob("*")
        if p.is_file() and p.name not in (STATE_NAME, MANIFEST_NAME) and not p.name.endswith(".tmp")
    )
    digests = ordered_map(lambda p: file_digest(p, fsync=True), paths, job.options.threads)
    for path, (size, sha256) in zip(paths, digests, strict=True):
        files[path.relative_to(job.out).as_posix()] = {"bytes": size, "sha256": sha256}
    manifest = {
        "format": job.spec.name,
        "dataset": job.selection.dataset.name,
        "synthdb_version": __version__,
        "params": job.options.params(),
        "export_runs": list(job.state.data["runs"]),
        "source_runs": sorted(job.selection.source_runs() | job.extra_source_runs),
        "counts": {
            "selected": len(job.selection.samples),
            "classes": len(job.selection.classes),
            "skipped": job.skips.total,
            "skipped_by_kind": job.skips.counts,
            "excluded": job.selection.excluded,
        },
        "output": output,
        "skipped": job.skips.listed,
        "files": files,
    }
    write_atomic(job.out / MANIFEST_NAME, json_bytes(manifest))
    return manifest


def open_at(path: Path, offset: int) -> BinaryIO:
    """Open ``path`` for writing at ``offset``, cutting off whatever a killed run wrote past it.

    A fresh export starts at 0; a resumed one at its last checkpoint, so the bytes that follow are
    exactly those an uninterrupted export would write there.
    """
    fh = open(path, "r+b" if path.exists() else "w+b", buffering=1 << 20)  # noqa: SIM115 - caller closes
    size = fh.seek(0, os.SEEK_END)
    if size < offset:
        fh.close()
        raise SynthdbError(
            f"{path} is shorter ({size} bytes) than its checkpoint ({offset}): it was changed outside "
            "synthdb; remove the folder and export again"
        )
    fh.truncate(offset)
    fh.seek(offset)
    return fh


def sync(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())
