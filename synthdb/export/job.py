"""An export's job: its options, the format it writes, the samples it skipped, and the manifest at the end.

An export is a pure function of (catalog rows, image files, parameters): the samples come from
:mod:`synthdb.export.selection` in one deterministic order, the output folder's state from
:mod:`synthdb.export.folder`; a format writer gets a :class:`Job` and writes that sequence. When a format is
done, ``manifest.json`` lists every file with its size and sha256, the counts, the runs that made the source
data and the export runs, the synthdb version and the parameters.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from synthdb import __version__
from synthdb.catalog.runs import set_progress
from synthdb.context import Context
from synthdb.export.folder import MANIFEST_NAME, STATE_NAME, ExportState, json_bytes, write_atomic
from synthdb.export.selection import SampleRecord, Selection
from synthdb.files import file_digest

if TYPE_CHECKING:
    from synthdb.export.image_source import Encoded, ImageSource, Skip

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
    images: ImageSource | None
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


