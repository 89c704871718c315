"""What every genuine-database importer shares: entries, path safety, streaming chunked import.

A source only *scans*: it yields ``Entry`` objects (key, path relative to the root, identity label,
attributes, protocol memberships) in a deterministic order. ``import_source`` does the rest the same
way for all of them: one run row; entries streamed in chunks so memory stays bounded (WebFace42M has
42M files); each chunk committed in one transaction; files stat-ed (decoded only with
``verify_images``); missing, unreadable and root-escaping files counted and named in the run's
summary instead of stopping the import; re-running adds nothing unless ``update`` asks for new files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from synthdb.catalog import bulk
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.runs import recorded_run, set_summary
from synthdb.catalog.schema import Dataset, GroupMember, ProtocolGroup, Sample
from synthdb.catalog.schema import Protocol as ProtocolRow
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.progress import progress_bar

CHUNK = 5_000
LISTED_PROBLEMS = 200
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass(frozen=True)
class Entry:
    """One sample a source found. ``groups`` holds (protocol, group, purpose) memberships."""

    key: str
    path: str | None
    identity: str | None
    attributes: dict[str, Any] | None = None
    label: str | None = None
    groups: tuple[tuple[str, str, str | None], ...] = ()


class Source(Protocol):
    """A genuine-database layout: its name (the dataset's ``source``) and how to scan a root."""

    name: str

    def scan(self, root: Path) -> Iterator[Entry]: ...


@dataclass
class ImportReport:
    dataset: str
    dataset_id: int
    run_id: int | None
    scanned: int = 0
    added: int = 0
    existing: int = 0
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
            "problem_counts": self.problem_counts,
            "problems": self.problems,
        }


def safe_relpath(path: str) -> str | None:
    """``path`` as a clean relative POSIX path, or None when it is absolute or escapes the root."""
    if not path or path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        return None
    parts: list[str] = []
    for part in PurePosixPath(path.replace("\\", "/")).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts) or None


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _check_file(root: Path, entry: Entry, verify: bool, report: ImportReport) -> Entry | None:
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
    full = root / rel
    try:
        if not full.is_file():
            report.problem("missing", rel)
            return None
    except OSError:  # e.g. a file name the file system cannot encode, or a symlink loop
        report.problem("unreadable", rel)
        return None
    if verify:
        from PIL import Image

        try:
            with Image.open(full) as image:
                image.load()
        except Exception as exc:  # noqa: BLE001 - any decoder failure means the same thing here
            report.problem("unreadable", f"{rel} ({type(exc).__name__})")
            return None
    return (
        entry
        if rel == entry.path
        else Entry(rel, rel, entry.identity, entry.attributes, entry.label, entry.groups)
    )


def _group_ids(conn: Connection, dataset_id: int, names: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    protocols, groups = ProtocolRow.__table__, ProtocolGroup.__table__
    found: dict[tuple[str, str], int] = {}
    for protocol, group in sorted(names):
        pid = conn.execute(
            sa.select(protocols.c.id).where(
                protocols.c.dataset_id == dataset_id, protocols.c.name == protocol
            )
        ).scalar_one_or_none()
        if pid is None:
            pid = conn.execute(
                sa.insert(protocols).values(dataset_id=dataset_id, name=protocol).returning(protocols.c.id)
            ).scalar_one()
        gid = conn.execute(
            sa.select(groups.c.id).where(groups.c.protocol_id == pid, groups.c.name == group)
        ).scalar_one_or_none()
        if gid is None:
            gid = conn.execute(
                sa.insert(groups).values(protocol_id=pid, name=group).returning(groups.c.id)
            ).scalar_one()
        found[(protocol, group)] = gid
    return found


def _commit_chunk(
    ctx: Context, dataset_id: int, run_id: int, chunk: list[Entry], report: ImportReport
) -> None:
    samples = Sample.__table__
    with ctx.catalog.begin() as conn:
        keys = [e.key for e in chunk]
        existing = set(
            conn.execute(
                sa.select(samples.c.key).where(samples.c.dataset_id == dataset_id, samples.c.key.in_(keys))
            ).scalars()
        )
        fresh = [e for e in dict((e.key, e) for e in chunk).values() if e.key not in existing]
        report.existing += len(chunk) - len(fresh)
        if not fresh:
            return
        labels = [e.identity for e in fresh]
        known = [label for label in labels if label is not None]
        ident_map = dict(zip(known, bulk.identity_ids(conn, dataset_id, known).tolist(), strict=True))
        ids = bulk.allocate_ids(conn, samples, len(fresh))
        bulk.insert_samples(
            conn,
            dataset_id,
            ids,
            [e.key for e in fresh],
            [None if label is None else ident_map[label] for label in labels],
            "genuine",
            labels=[e.label for e in fresh],
            paths=[e.path for e in fresh],
            attributes=[e.attributes for e in fresh],
            run_id=run_id,
        )
        group_ids = _group_ids(conn, dataset_id, {(p, g) for e in fresh for p, g, _ in e.groups})
        members = [
            {"group_id": group_ids[(p, g)], "sample_id": int(sid), "purpose": purpose}
            for e, sid in zip(fresh, ids, strict=True)
            for p, g, purpose in e.groups
        ]
        if members:
            conn.execute(sa.insert(GroupMember.__table__), members)
        report.added += len(fresh)


def _chunks(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    iterator = iter(entries)
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
    dataset = Dataset.__table__
    with ctx.catalog.engine.connect() as conn:
        row = conn.execute(
            sa.select(dataset.c.id, dataset.c.source, dataset.c.root).where(dataset.c.name == name)
        ).first()
    if row is not None and row.source != source.name:
        raise SynthdbError(
            f"dataset '{name}' exists with source '{row.source}', not '{source.name}': choose another --name"
        )
    if row is not None and not update:
        count = _sample_count(ctx, row.id)
        return ImportReport(
            dataset=name,
            dataset_id=row.id,
            run_id=None,
            existing=count,
            note=f"dataset '{name}' is imported already ({count} samples); "
            "pass --update to add files that appeared since",
        )
    params = {"root": str(root), "name": name, "update": update, "verify_images": verify_images}
    with recorded_run(ctx.catalog, "import", algorithm=source.name, params=params) as run_id:
        dataset_id = (
            row.id
            if row is not None
            else create_dataset(ctx.catalog, name, "genuine", source.name, root=str(root), run_id=run_id)
        )
        report = ImportReport(dataset=name, dataset_id=dataset_id, run_id=run_id)
        with progress_bar(None, f"importing {name}", quiet) as advance:
            checked = (_check_file(root, e, verify_images, report) for e in source.scan(root))
            for chunk in _chunks((e for e in checked if e is not None), CHUNK):
                report.scanned += len(chunk)
                _commit_chunk(ctx, dataset_id, run_id, chunk, report)
                advance(len(chunk))
        report.scanned += sum(report.problem_counts.values())
        set_summary(ctx.catalog, run_id, report.summary())
    return report


def _sample_count(ctx: Context, dataset_id: int) -> int:
    samples = Sample.__table__
    with ctx.catalog.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(samples.c.dataset_id == dataset_id)).scalar_one()
