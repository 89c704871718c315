"""What every genuine-database importer shares: entries, path safety, streaming chunked import.

A source only *scans*: it yields ``Entry`` objects (key, path relative to the root, identity label,
attributes, protocol memberships) in a deterministic order. ``import_source`` does the rest the same
way for all of them: one run row; entries streamed in chunks so memory stays bounded (WebFace42M has
42M files); each chunk committed in one transaction; files stat-ed (decoded only with
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
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from synthdb.catalog import bulk
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.runs import finish_run, process_alive, recorded_run, set_summary
from synthdb.catalog.schema import Dataset, GroupMember, ProtocolGroup, Run, Sample, VerificationPair
from synthdb.catalog.schema import Protocol as ProtocolRow
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.progress import progress_bar
from synthdb.untrusted import Refused, RootGuard, image_header, is_inside, read_capped, resolve_inside

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


@dataclass(frozen=True)
class LinkedFolder:
    """A folder symlink a scan met and did not enter (links could loop or lead out of the root).

    ``import_source`` names it: ``escapes_root`` when it leads out of the root, else ``linked_folder``.
    """

    path: str


@dataclass(frozen=True)
class Pair:
    """A comparison a protocol file prescribes, at ``position`` (its line order) in its group.

    The sides are sample keys, or template ids when ``templates`` is true (IJB-C compares templates,
    sets of samples that carry the template id as their label).
    """

    protocol: str
    group: str
    position: int
    first: str
    second: str
    genuine: bool | None
    templates: bool = False


class Source(Protocol):
    """A genuine-database layout: its name (the dataset's ``source``) and how to read a root.

    ``check`` runs before anything is written, so a root that is not this layout fails without
    leaving an empty dataset behind; ``scan`` yields the samples; ``pairs`` the prescribed
    comparisons, read once every sample is in the catalog.
    """

    name: str
    path_kind: str

    def check(self, root: Path) -> None: ...

    def scan(self, root: Path) -> Iterator[Entry | LinkedFolder]: ...

    def pairs(self, root: Path) -> Iterator[Pair]: ...


class DirectorySource:
    """Defaults for sources rooted at a directory: nothing to check up front, no pairs."""

    path_kind = "directory"

    def check(self, root: Path) -> None:
        """Refuse a root that is not this layout before the import writes anything (default: accept)."""

    def pairs(self, root: Path) -> Iterator[Pair]:
        return iter(())


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


def safe_relpath(path: str) -> str | None:
    """``path`` as a clean relative POSIX path, or None when it is absolute or escapes the root."""
    if not path or path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        return None
    if "\\" not in path and "//" not in path and "/." not in "/" + path and not path.endswith("/"):
        return path  # already clean: no empty, "." or ".." part (the common case, checked fast)
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


def sorted_listing(folder: str | os.PathLike) -> list[os.DirEntry[str]]:
    """One directory's entries sorted by name: scans are deterministic and hold one listing at a time."""
    try:
        with os.scandir(folder) as listing:
            return sorted(listing, key=lambda item: item.name)
    except OSError as exc:
        raise SynthdbError(
            f"{folder}: cannot list it ({exc.strerror or exc}); check that it exists and is readable"
        ) from None


def subfolders(folder: str | os.PathLike) -> list[os.DirEntry[str]]:
    """Sorted subfolders, not following symlinks, so a link loop cannot trap a scan."""
    return [item for item in sorted_listing(folder) if item.is_dir(follow_symlinks=False)]


def folders(folder: str | os.PathLike, rel: str) -> Iterator[os.DirEntry[str] | LinkedFolder]:
    """The subfolders of ``folder`` in sorted order, and its folder symlinks as ``LinkedFolder``s
    (named, never entered); ``rel`` is the folder's path under the root, '' or ending in '/'."""
    for item in sorted_listing(folder):
        if item.is_dir(follow_symlinks=False):
            yield item
        elif link := folder_link(item, rel + item.name):
            yield link


def folder_link(item: os.DirEntry[str], rel: str) -> LinkedFolder | None:
    """``item`` (at ``rel`` under the root) as a folder symlink a scan does not enter, else None."""
    try:
        return LinkedFolder(rel) if item.is_symlink() and item.is_dir() else None
    except OSError:  # a link the file system cannot even stat is no folder to enter
        return None


def leads_out(root: Path, folder: Path) -> bool:
    """Whether ``folder`` (a path under ``root``) resolves, symlinks followed, to a place outside it."""
    return not is_inside(os.path.realpath(root), os.path.realpath(folder))


METADATA_BYTES = 1 << 30
"""The largest metadata file an importer reads whole (FFHQ's JSON, 267 MB, is the largest real one)."""


def read_metadata(root: Path, rel: str, fix: str, limit: int = METADATA_BYTES) -> str:
    """The text of the metadata file ``root/rel``.

    Refused when it leads out of the root (a symlink to ``/etc/passwd`` would otherwise be parsed, and
    quoted in errors) or holds more than ``limit`` bytes (a sparse file would otherwise fill memory).
    ``fix`` ends every error message.
    """
    try:
        return read_capped(resolve_inside(root, rel), limit, "metadata file").decode("utf-8")
    except Refused as exc:
        raise SynthdbError(f"{exc}; {fix}") from None
    except UnicodeDecodeError as exc:
        raise SynthdbError(
            f"{root / rel} is not UTF-8 text ({exc.reason} at byte {exc.start}); {fix}"
        ) from None


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
        bulk.insert_rows(conn, GroupMember.__table__, members)
        report.added += len(fresh)


def _commit_pairs(ctx: Context, dataset_id: int, chunk: list[Pair], report: ImportReport) -> None:
    """Insert the pairs of a chunk that are not stored yet; a side naming no sample is a problem."""
    samples, pairs = Sample.__table__, VerificationPair.__table__
    with ctx.catalog.begin() as conn:
        group_ids = _group_ids(conn, dataset_id, {(p.protocol, p.group) for p in chunk})
        stored: set[tuple[int, int]] = set()
        for gid in set(group_ids.values()):
            positions = [p.position for p in chunk if group_ids[(p.protocol, p.group)] == gid]
            stored.update(
                (gid, position)
                for position in conn.execute(
                    sa.select(pairs.c.position).where(
                        pairs.c.group_id == gid, pairs.c.position.between(min(positions), max(positions))
                    )
                ).scalars()
            )
        fresh = [p for p in chunk if (group_ids[(p.protocol, p.group)], p.position) not in stored]
        report.pairs_existing += len(chunk) - len(fresh)
        keys = {side for p in fresh if not p.templates for side in (p.first, p.second)}
        ids = (
            dict(
                conn.execute(
                    sa.select(samples.c.key, samples.c.id).where(
                        samples.c.dataset_id == dataset_id, samples.c.key.in_(sorted(keys))
                    )
                ).all()
            )
            if keys
            else {}
        )
        rows = []
        for p in fresh:
            row: dict[str, Any] = {
                "group_id": group_ids[(p.protocol, p.group)],
                "position": p.position,
                "genuine": p.genuine,
                "first_sample_id": None,
                "second_sample_id": None,
                "first_template": None,
                "second_template": None,
            }
            if p.templates:
                row["first_template"], row["second_template"] = p.first, p.second
            else:
                unknown = [side for side in (p.first, p.second) if side not in ids]
                if unknown:
                    report.problem(
                        "pair_without_sample", f"{p.protocol}/{p.group} #{p.position}: {unknown[0]}"
                    )
                    continue
                row["first_sample_id"], row["second_sample_id"] = ids[p.first], ids[p.second]
            rows.append(row)
        bulk.insert_rows(conn, pairs, rows)
        report.pairs_added += len(rows)


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
    existing_id, done = existing_dataset(ctx, name, source.name, update)
    if done is not None:
        return done
    source.check(root)
    params = {"root": str(root), "name": name, "update": update, "verify_images": verify_images}
    with recorded_run(ctx.catalog, "import", algorithm=source.name, params=params) as run_id:
        dataset_id = (
            existing_id
            if existing_id is not None
            else create_dataset(ctx.catalog, name, "genuine", source.name, root=str(root), run_id=run_id)
        )
        report = ImportReport(dataset=name, dataset_id=dataset_id, run_id=run_id)
        with progress_bar(None, f"importing {name}", quiet) as advance:
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
    ctx: Context, name: str, source_name: str, update: bool
) -> tuple[int | None, ImportReport | None]:
    """The id of dataset ``name`` if it exists, and the report that ends an import without ``update``.

    A dataset of another source under the same name is an error: importing into it would mix layouts.
    """
    dataset, run = Dataset.__table__, Run.__table__
    with ctx.catalog.engine.connect() as conn:
        row = conn.execute(
            sa.select(
                dataset.c.id, dataset.c.source, run.c.id.label("run_id"), run.c.status, run.c.host, run.c.pid
            )
            .outerjoin(run, run.c.id == dataset.c.created_by_run_id)
            .where(dataset.c.name == name)
        ).first()
    if row is None:
        return None, None
    if row.source != source_name:
        raise SynthdbError(
            f"dataset '{name}' exists with source '{row.source}', not '{source_name}': choose another --name"
        )
    if not update and row.status == "running" and process_alive(row.host, row.pid):
        raise SynthdbError(
            f"dataset '{name}' is being imported by run {row.run_id} (pid {row.pid} on {row.host}): wait "
            "for it; if that process is gone, pass --update to resume the import"
        )
    if update or row.status not in (None, "succeeded"):  # an import that never finished: resume it
        return row.id, None
    count = _sample_count(ctx, row.id)
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
    dataset, run = Dataset.__table__, Run.__table__
    with ctx.catalog.engine.connect() as conn:
        row = conn.execute(
            sa.select(dataset.c.created_by_run_id, run.c.status)
            .outerjoin(run, run.c.id == dataset.c.created_by_run_id)
            .where(dataset.c.id == dataset_id)
        ).one()
    if row.created_by_run_id in (None, run_id) or row.status == "succeeded":
        return
    if row.status == "running":
        finish_run(ctx.catalog, row.created_by_run_id, "interrupted", f"run {run_id} resumed it")
    with ctx.catalog.begin() as conn:
        conn.execute(sa.update(dataset).where(dataset.c.id == dataset_id).values(created_by_run_id=run_id))


def _sample_count(ctx: Context, dataset_id: int) -> int:
    samples = Sample.__table__
    with ctx.catalog.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(samples.c.dataset_id == dataset_id)).scalar_one()
