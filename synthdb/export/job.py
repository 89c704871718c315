"""An export's job: its options, the format it writes, the samples it skipped, and the manifest at the end.

An export is a pure function of (catalog rows, image files, parameters): the samples come from
:mod:`synthdb.export.selection` in one deterministic order, the output folder's state from
:mod:`synthdb.export.folder`; a format writer gets a :class:`Job` and writes that sequence. When a format is
done, ``manifest.json`` lists every file with its size and sha256, the counts, the runs that made the source
data and the export runs, the synthdb version and the parameters.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from synthdb import __version__
from synthdb.catalog.runs import set_progress
from synthdb.context import Context
from synthdb.export.folder import (
    MANIFEST_NAME,
    SPILL_NAME,
    STATE_NAME,
    ExportState,
    json_bytes,
    open_at,
    sync,
    write_atomic,
)
from synthdb.export.selection import SampleRecord, Selection
from synthdb.files import file_digest
from synthdb.params import check_fields, count, non_negative, param

if TYPE_CHECKING:
    from synthdb.export.image_source import Encoded, ImageSource, Skip

LISTED_SKIPS = 200
PROGRESS_SECONDS = 2.0

T = TypeVar("T")
R = TypeVar("R")


# ------------------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class ExportOptions:
    """Every parameter of an export. ``params()`` holds those that shape the output bytes. The field specs
    are also the options of ``synthdb export`` (:mod:`synthdb.params`)."""

    where: str | None = param(
        None, help="Read-only SQL predicate over sample s and identity i, e.g. \"s.role = 'reference'\"."
    )
    crop: str | None = param(None, help="Align into this preset (arcface, iresnet_bob, ffhq, dlib150, ...).")
    source: str | None = param(
        None,
        flags=("--from",),
        help="Geometry of the images for --crop: mtcnn/dlib (photos) or the generator's preset (ffhq256, "
        "...) [default: the dataset's, else mtcnn].",
    )
    size: int | None = param(
        None,
        low=8,
        high=4096,
        metavar="PIXELS",
        help="Output side in pixels [default: 112 for recordio and pairs-bin, else the image's own].",
    )
    quality: int = param(95, low=1, high=100, help="JPEG quality.")
    protocol: str | None = param(None, help="Catalog protocol (bob; pairs-bin: take its pairs).")
    group: str | None = param(
        None, help="Protocol group: pairs-bin takes its pairs, bob exports it as its dev group."
    )
    pairs: int | None = param(
        None, low=2, metavar="N", help="pairs-bin: sample this many pairs, half genuine [default: 6000]."
    )
    seed: int = non_negative(0, help="Seed of sampled pairs.")
    embedding_model: str | None = param(
        None,
        flags=("--embeddings",),
        hidden=("--embedding-model",),
        metavar="MODEL",
        help="synthetics-h5: the embedding space to write, or none [default: the 512-d one, the only width "
        "the reference's loader reads].",
    )
    shard_max_count: int = count(100_000, help="webdataset: samples per shard at most.")
    shard_max_bytes: int = count(
        1_000_000_000, flags=("--shard-max-size",), help="webdataset: bytes per shard at most."
    )
    workers: int | None = count(None, help="Image threads [default: CPU count, at most 8].")
    checkpoint_every: int = count(1_000, cli=False, help="Samples between checkpoints of a resumable export.")
    quiet: bool = param(False, cli=False, help="No progress bar.")

    def __post_init__(self) -> None:
        check_fields(self)  # the ranges the CLI's parser applies, for the API too

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
    """Samples an export could not write (unreadable file, no face), counted by kind, never silently;
    the first LISTED_SKIPS are listed with their reasons (the list stays bounded however many fail)."""

    counts: dict[str, int] = field(default_factory=dict)
    listed: list[dict[str, Any]] = field(default_factory=list)

    def add(self, sample: SampleRecord, skip: Skip) -> None:
        self.counts[skip.kind] = self.counts.get(skip.kind, 0) + 1
        if len(self.listed) < LISTED_SKIPS:
            self.listed.append({"sample_id": sample.id, "key": sample.key, "reason": skip.detail})

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "listed": self.listed}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SkipLog:
        data = data or {}
        return cls(dict(data.get("counts", {})), list(data.get("listed", [])))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# -------------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One export in progress: what a format writer gets.

    ``notes`` are said to the user and kept in the manifest (what was left out or changed, and why).
    """

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
    notes: list[str] = field(default_factory=list)
    _last_progress: float = 0.0

    def report_progress(self, done: int, total: int) -> None:
        """Record progress on the run row, at most every PROGRESS_SECONDS (it is a catalog write)."""
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_SECONDS or done >= total:
            self._last_progress = now
            set_progress(self.ctx.catalog, self.run_id, done / total if total else 1.0)

    def encoded(
        self, items: Iterable[T], path: Callable[[T], str | None] = attrgetter("path")
    ) -> Iterator[tuple[T, Encoded | Skip]]:
        """(item, encoded image or skip) for each item (a sample, or a sample with what the format needs of
        it; ``path`` gives its image), in order, encoded on worker threads: a bounded window of them in
        flight, so a stream of any length costs the same memory."""
        assert self.images is not None
        pipeline = self.images
        yield from ordered_map(lambda item: (item, pipeline(path(item))), items, self.options.threads)


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


CLASSES_NAME = "classes.csv"
LISTED_EMPTY = 200


class ClassTable:
    """Output class ids, and ``classes.csv`` (``class,identity_id,identity,images``) written as classes close.

    An identity none of whose images could be written (only a photo without a face, say) gets no class:
    ids stay contiguous over the identities that have images, in export order, so insightface's
    ``property``, the RecordIO header and class ranges, WebDataset's ``.cls`` and the CSV agree. Samples
    arrive grouped by identity, so a class is complete when the next one starts. The CSV grows by
    appending at its committed length (:func:`~synthdb.export.folder.open_at`) and the open class is
    part of the checkpoint, so a resumed export writes the same rows.
    """

    def __init__(self, path: Path, saved: dict[str, Any] | None) -> None:
        saved = saved or {}
        self.offset = int(saved.get("offset", 0))
        self.written = int(saved.get("written", 0))
        self.empty = int(saved.get("empty", 0))
        self.empty_listed: list[str] = list(saved.get("empty_listed", []))
        self._open: list[Any] | None = saved.get("open")  # [cls, identity_id, label, output id, images]
        self._file: BinaryIO = open_at(path, self.offset)
        if self.offset == 0:
            self._append(["class", "identity_id", "identity", "images"])

    def image(self, sample: SampleRecord) -> int:
        """The output class id of ``sample``, whose image is being written."""
        self.see(sample)
        assert self._open is not None
        if self._open[4] == 0:
            self._open[3] = self.written
            self.written += 1
        self._open[4] += 1
        return int(self._open[3])

    def see(self, sample: SampleRecord) -> None:
        """Note that ``sample`` was processed (written or skipped): a new identity closes the last class."""
        if self._open is not None and self._open[0] == sample.cls:
            return
        self._close_open()
        self._open = [sample.cls, sample.identity_id, sample.identity, -1, 0]

    def finish(self) -> None:
        """Close the last class and the file."""
        self._close_open()
        self.sync()
        self._file.close()

    def sync(self) -> None:
        sync(self._file)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint: call after :meth:`sync`."""
        return {
            "offset": self.offset,
            "written": self.written,
            "empty": self.empty,
            "empty_listed": self.empty_listed,
            "open": self._open,
        }

    def close(self) -> None:
        self._file.close()

    def _close_open(self) -> None:
        if self._open is None:
            return
        _, identity_id, label, out_id, images = self._open
        if images:
            self._append([out_id, identity_id, label, images])
        else:
            self.empty += 1
            if len(self.empty_listed) < LISTED_EMPTY:
                self.empty_listed.append(str(label))
        self._open = None

    def _append(self, row: list[Any]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(row)
        data = buffer.getvalue().encode()
        self._file.write(data)
        self.offset += len(data)


def read_classes(path: Path) -> Iterator[tuple[int, int]]:
    """(class id, images) of each row of a ``classes.csv`` this module wrote, in order."""
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            yield int(row["class"]), int(row["images"])


def write_manifest(job: Job, output: dict[str, Any]) -> dict[str, Any]:
    """Hash every output file and write ``manifest.json`` with the format's ``output`` facts; return it."""
    files: dict[str, dict[str, Any]] = {}
    skip = (STATE_NAME, MANIFEST_NAME)
    paths = sorted(
        p
        for p in job.out.rglob("*")
        if p.is_file() and p.name not in skip and not p.name.endswith(".tmp") and SPILL_NAME not in p.parts
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
        "source_runs": sorted(job.selection.source_runs | job.extra_source_runs),
        "counts": {
            "selected": job.selection.count,
            "identities": job.selection.classes,
            "classes": output.get("classes", job.selection.classes),
            "skipped": job.skips.total,
            "skipped_by_kind": job.skips.counts,
            "excluded": job.selection.excluded,
        },
        "output": output,
        "notes": job.notes,
        "skipped": job.skips.listed,
        "files": files,
    }
    write_atomic(job.out / MANIFEST_NAME, json_bytes(manifest))
    return manifest


