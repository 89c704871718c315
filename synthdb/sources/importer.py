"""The streaming, chunked import every genuine-database source shares (``synthdb import SOURCE PATH``).

A source only *scans* (:mod:`synthdb.sources.entries`): it yields ``Entry`` objects (key, path relative to
the root, identity label, attributes, protocol memberships) in a deterministic order. ``import_source`` does
the rest the same way for all of them: one run row; entries streamed in chunks so memory stays bounded
(WebFace42M has 42M files); each chunk committed in one transaction; files stat-ed (decoded only with
``verify_images``, within :mod:`synthdb.untrusted`'s byte and pixel caps); missing, unreadable,
too large and root-escaping files (a symlink, or a ``..`` path, that leads out of the root) counted and
named in the run's summary instead of stopping the import; folder symlinks are never followed by a scan,
and named too; re-running adds nothing unless ``update`` asks for new files,
or the run that created the dataset never finished (killed, failed): then re-running resumes it.
Sources whose protocols prescribe comparisons (LFW pairs, IJB-C template matches) also yield ``Pair``
objects; they are stored after all samples, when every key they name has an id.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from synthdb.catalog import datasets, imports
from synthdb.catalog.runs import finish_run, process_alive, recorded_run, set_summary
from synthdb.catalog.schema import DatasetKind, RunKind, RunStatus
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.progress import progress_bar
from synthdb.sources.entries import Entry, LinkedFolder, Pair, Source
from synthdb.sources.listing import safe_relpath
from synthdb.untrusted import Refused, RootGuard, image_header

CHUNK = 5_000
LISTED_PROBLEMS = 200


@dataclass
class ImportReport:
    dataset: str
    dataset_id: int
    run_id: int | None
    scanned: int = 0
    added: int = 0
    existing: int = 0
    pairs_added: int = 0
    pairs_existing: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)
    problem_counts: dict[str, int] = field(default_factory=dict)
    note: str | None = None

    def problem(self, kind: str, what: str) -> None:
        self.problem_counts[kind] = self.problem_counts.get(kind, 0) + 1
        listed = self.problems.setdefault(kind, [])
        if len(listed) < LISTED_PROBLEMS:
            listed.append(what)

    def summary(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "added": self.added,
            "existing": self.existing,
            "pairs_added": self.pairs_added,
            "pairs_existing": self.pairs_existing,
            "problem_counts": self.problem_counts,
            "problems": self.problems,
        }


def check_file(
    root: Path, entry: Entry, verify: bool, report: ImportReport, guard: RootGuard | None = None
) -> Entry | None:
    """The entry with its path cleaned, or None (and a named problem) when its file cannot be used.

    The file must resolve inside the root: its folder (resolved once per folder by ``guard``) and, when
    the file is a symlink, the link's target. A link between two files inside the root is fine.
    """
    if entry.path is None:
        return entry
    rel = safe_relpath(entry.path)
    if rel is None:
        report.problem("escapes_root", entry.path)
        return None
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # a non-UTF-8 file name: the catalog stores text, so name it and move on
        report.problem("non_utf8_name", rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        return None
    guard = guard or RootGuard(root)
    full = os.path.join(guard.root, rel)
    if not guard.folder_inside(os.path.dirname(rel)):
        report.problem("escapes_root", rel)
        return None
    try:
        mode = os.lstat(full).st_mode
        if stat.S_ISLNK(mode):
            if not guard.link_inside(full):
                report.problem("escapes_root", rel)
                return None
            mode = os.stat(full).st_mode
        if not stat.S_ISREG(mode):
            report.problem("missing", rel)
            return None
    except (FileNotFoundError, NotADirectoryError):
        report.problem("missing", rel)
        return None
    except (OSError, ValueError):  # e.g. a name the file system cannot encode, a symlink loop, no permission
        report.problem("unreadable", rel)
        return None
    if verify and not _decodes(Path(full), rel, report):
        return None
    return (
        entry
        if rel == entry.path
        else Entry(entry.key, rel, entry.identity, entry.attributes, entry.label, entry.groups)
    )


def _decodes(path: Path, rel: str, report: ImportReport) -> bool:
    """Whether the image decodes, its header checked against the byte and pixel caps first."""
    from PIL import Image

    try:
        image_header(path)
        with Image.open(path) as image:
            image.load()
    except Refused as exc:
        report.problem(exc.kind, rel)
        return False
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the same thing here
        report.problem("unreadable", f"{rel} ({type(exc).__name__})")
        return False
    return True


def _commit_chunk(
    ctx: Context, dataset_id: int, run_id: int, chunk: list[Entry], report: ImportReport
) -> None:
    added = imports.add_entries(ctx.catalog, dataset_id, run_id, chunk)
    report.existing += len(chunk) - added
    report.added += added


def _commit_pairs(ctx: Context, dataset_id: int, chunk: list[Pair], report: ImportReport) -> None:
    """Insert the pairs of a chunk that are not stored yet; a side naming no sample is a problem."""
    result = imports.add_pairs(ctx.catalog, dataset_id, chunk)
    for what in result.unknown:
        report.problem("pair_without_sample", what)
    report.pairs_existing += result.existing
    report.pairs_added += result.added


def _checked(
    found: Entry | LinkedFolder, verify: bool, report: ImportReport, guard: RootGuard
) -> Entry | None:
    """A scanned entry that may be imported, or None; a folder link is named, never entered."""
    if isinstance(found, LinkedFolder):
        inside = guard.link_inside(os.path.join(guard.root, found.path))
        report.problem("linked_folder" if inside else "escapes_root", found.path + "/")
        return None
    return check_file(Path(guard.root), found, verify, report, guard)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def import_source(
    ctx: Context,
    source: Source,
    root: str | os.PathLike,
    name: str | None = None,
    update: bool = False,
    verify_images: bool = False,
    quiet: bool = False,
) -> ImportReport:
    """Index the database at ``root`` into dataset ``name`` (default: the source's name)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise SynthdbError(f"{root} is not a directory: pass the root folder of the {source.name} database")
    name = name or source.name
    existing_id, done = existing_dataset(ctx, name, source.name, update, root)
    if done is not None:
        return done
    source.check(root)
    params = {"root": str(root), "name": name, "update": update, "verify_images": verify_images}
    with recorded_run(ctx.catalog, RunKind.IMPORT, algorithm=source.name, params=params) as run_id:
        dataset_id = (
            existing_id
            if existing_id is not None
            else datasets.create_dataset(
                ctx.catalog, name, DatasetKind.GENUINE, source.name, root=str(root), run_id=run_id
            )
        )
        report = ImportReport(dataset=name, dataset_id=dataset_id, run_id=run_id)
        with progress_bar(None, f"import {name}", quiet, unit="files") as advance:
            guard = RootGuard(root)
            checked = (_checked(e, verify_images, report, guard) for e in source.scan(root))
            for chunk in _chunks((e for e in checked if e is not None), CHUNK):
                report.scanned += len(chunk)
                _commit_chunk(ctx, dataset_id, run_id, chunk, report)
                advance(len(chunk))
            report.scanned += sum(report.problem_counts.values())
            for pair_chunk in _chunks(source.pairs(root), CHUNK):
                _commit_pairs(ctx, dataset_id, pair_chunk, report)
        set_summary(ctx.catalog, run_id, report.summary())
        adopt_unfinished(ctx, dataset_id, run_id)
    return report


def existing_dataset(
    ctx: Context, name: str, source_name: str, update: bool, root: Path | None = None
) -> tuple[int | None, ImportReport | None]:
    """The id of dataset ``name`` if it exists, and the report that ends an import without ``update``.

    A dataset of another source under the same name is an error: importing into it would mix layouts.
    So is one imported from another ``root`` (resolved): its sample paths are relative to its own root,
    so files added from another folder would point nowhere.
    """
    row = datasets.find_dataset(ctx.catalog, name)
    if row is None:
        return None, None
    if row.source != source_name:
        raise SynthdbError(
            f"dataset '{name}' exists with source '{row.source}', not '{source_name}': choose another --name"
        )
    if root is not None and row.root is not None and Path(row.root).resolve() != root:
        raise SynthdbError(
            f"dataset '{name}' was imported from {row.root}, not {root}, and its sample paths are relative "
            f"to that folder: pass {row.root} to update it, or choose another --name for {root}"
        )
    made = datasets.creator(ctx.catalog, row.id)
    if not update and made.status == RunStatus.RUNNING and process_alive(made.host, made.pid):
        raise SynthdbError(
            f"dataset '{name}' is being imported by run {made.run_id} (pid {made.pid} on {made.host}): wait "
            "for it; if that process is gone, pass --update to resume the import"
        )
    if update or made.status not in (None, RunStatus.SUCCEEDED):  # an import that never finished: resume it
        return row.id, None
    count = datasets.sample_count(ctx.catalog, row.id)
    return row.id, ImportReport(
        dataset=name,
        dataset_id=row.id,
        run_id=None,
        existing=count,
        note=f"dataset '{name}' is imported already ({count} samples); "
        "pass --update to add files that appeared since",
    )


def adopt_unfinished(ctx: Context, dataset_id: int, run_id: int) -> None:
    """After run ``run_id`` completed dataset ``dataset_id``: if the run that created it never finished,
    close that run as interrupted and record ``run_id`` as the creator, so the next plain re-run sees a
    finished import (and says so) instead of resuming again."""
    made = datasets.creator(ctx.catalog, dataset_id)
    if made.run_id in (None, run_id) or made.status == RunStatus.SUCCEEDED:
        return
    if made.status == RunStatus.RUNNING:
        finish_run(ctx.catalog, made.run_id, RunStatus.INTERRUPTED, f"run {run_id} resumed it")
    datasets.set_creator(ctx.catalog, dataset_id, run_id)
