"""Check the store against the catalog (``synthdb fsck``) and remove what no row owns (``synthdb gc``).

The commit protocol guarantees that a committed row points to a complete file; a crash can only
leave files nobody references. ``fsck`` lists both kinds of trouble:

- missing: a committed row whose file is gone (data loss: re-run the command that wrote it);
- corrupt: a committed row whose file has another size or sha256 (same), or whose path is not one
  synthdb writes (a damaged or crafted catalog: the path is never opened);
- orphan: a file under ``shards/`` or ``indexes/`` that no row references (a writer died after its
  rename, or an index build between committing its new file and removing the one it replaced);
- staged: a file left in ``staging/`` (a writer died before its rename);
- foreign: anything else under those folders (a symlink, a name synthdb never writes): left alone.

Index files are checked for presence only: their rows hold no checksum.

With ``files`` it also checks that every sample's image file exists (``synthdb fsck --files``): a
regular file at its path under its dataset's root, resolving inside that root. That is what an import
into the wrong root, a moved dataset or a deleted file breaks; files are stat-ed, never opened.

``gc`` removes orphans, staged leftovers and the files and rows of retired shards. A file younger
than ``min_age`` seconds is kept, since a live writer on another process may be about to commit it.

Both act only on a store that carries this workspace's marker (:meth:`Store.check_owned`), only on
the names synthdb writes (``SHARD_PATH``, ``INDEX_PATH``, ``STAGED_PATH``), and never through a
symlink: a folder link is not entered, a file link is neither read nor deleted.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from synthdb.catalog import Catalog, indexes, samples, shards
from synthdb.catalog.schema import ShardState
from synthdb.files import file_digest
from synthdb.store.layout import INDEX_PATH, INDEXES, SHARD_PATH, SHARDS, STAGED_PATH, STAGING, Store
from synthdb.untrusted import RootGuard

LISTED_FILES = 200
"""Sample files ``fsck --files`` names one by one; the rest are counted (a lost root loses millions)."""


@dataclass
class FsckReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    files_checked: int = 0
    missing_files: list[str] = field(default_factory=list)
    missing_file_count: int = 0

    @property
    def clean(self) -> bool:
        store_clean = not (self.missing or self.corrupt or self.orphans or self.staged or self.foreign)
        return store_clean and self.missing_file_count == 0

    def summary(self, files: bool = False) -> str:
        """The last line of ``synthdb fsck``: what was checked, what is wrong and what fixes it."""
        files_part = f", {self.files_checked} sample files" if files else ""
        checked = f"{self.checked} committed shards{files_part}"
        if self.clean:
            return f"clean: {checked} checked"
        listed = " (the first listed)" if len(self.missing_files) < self.missing_file_count else ""
        lost = f", {self.missing_file_count} sample files missing{listed}" if files else ""
        return (
            f"{checked} checked; {len(self.missing)} missing, {len(self.corrupt)} corrupt, "
            f"{len(self.orphans)} orphan, {len(self.staged)} staged, {len(self.foreign)} foreign{lost}. "
            "`synthdb gc` removes orphan and staged files; missing or corrupt shards need the command that "
            "wrote them re-run; foreign files are not synthdb's: it leaves them; a missing sample file needs "
            "its file back under its dataset's root (`synthdb datasets show NAME` shows the root)."
        )

    def file_missing(self, dataset: str, path: str, why: str) -> None:
        self.missing_file_count += 1
        if len(self.missing_files) < LISTED_FILES:
            self.missing_files.append(f"{dataset}: {path} ({why})")


@dataclass
class GcReport:
    removed_files: list[str] = field(default_factory=list)
    removed_rows: int = 0
    kept_young: list[str] = field(default_factory=list)


def _files_under(store: Store, top: str, pattern: re.Pattern[str], foreign: list[str]) -> set[str]:
    """The regular files under ``store/top`` named as synthdb names them; everything else met there
    (symlinks, other names, other kinds of file) goes to ``foreign``. No folder link is entered."""
    base = store.root / top
    if not os.path.lexists(base):
        return set()
    if not stat.S_ISDIR(os.lstat(base).st_mode):
        foreign.append(top)
        return set()
    found = set()
    for dirpath, dirs, files in os.walk(base):  # os.walk lists folder links in dirs, never enters them
        for name in [d for d in dirs if os.path.islink(os.path.join(dirpath, d))] + files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, store.root).replace(os.sep, "/")
            if stat.S_ISREG(os.lstat(full).st_mode) and pattern.fullmatch(rel):
                found.add(rel)
            else:
                foreign.append(rel)
    return found


def _check_shard(store: Store, row: shards.ShardRow, verify: bool, report: FsckReport) -> None:
    """File a committed shard row under missing or corrupt when its file is not what the row says."""
    full = store.owned_path(row.path, SHARD_PATH)
    if full is None:
        report.corrupt.append(row.path)  # not a path synthdb writes: never opened
    elif not full.is_file():
        report.missing.append(row.path)
    elif full.stat().st_size != row.bytes or (verify and file_digest(full) != (row.bytes, row.sha256)):
        report.corrupt.append(row.path)


def _sample_file_problem(guard: RootGuard, path: str) -> str | None:
    """Why the sample file ``path`` under ``guard``'s root cannot be read (None when it can): it is not
    there, not a regular file, or it leads out of the root (``..``, an absolute path, a symlink)."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts:
        return "outside its root"
    if not guard.folder_inside(os.path.dirname(path)):
        return "outside its root"
    full = os.path.join(guard.root, path)
    try:
        mode = os.lstat(full).st_mode
        if stat.S_ISLNK(mode):
            if not guard.link_inside(full):
                return "outside its root"
            mode = os.stat(full).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except (OSError, ValueError) as exc:  # no permission, a symlink loop, a name the system cannot take
        return f"unreadable: {getattr(exc, 'strerror', None) or exc}"
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_sample_files(catalog: Catalog, report: FsckReport, advance: Callable[[int], None] | None) -> None:
    """Stat every sample's image file under its dataset's root (``fsck --files``)."""
    guard, root = None, None
    for found in samples.image_paths(catalog):
        if found.root != root:
            root, guard = found.root, RootGuard(found.root)
        report.files_checked += 1
        why = _sample_file_problem(guard, found.path)
        if why is not None:
            report.file_missing(found.dataset, found.path, why)
        if advance:
            advance(1)


def fsck(
    catalog: Catalog,
    store: Store,
    verify: bool = True,
    advance: Callable[[int], None] | None = None,
    files: bool = False,
) -> FsckReport:
    """Compare files and rows; with ``verify`` re-hash every committed file (else sizes only); with
    ``files`` also check that every sample's image file is there."""
    store.check_owned()
    rows = shards.every_shard(catalog)
    index_paths = indexes.paths(catalog)
    report = FsckReport()
    index_files = _files_under(store, INDEXES, INDEX_PATH, report.foreign)
    report.missing.extend(path for path in index_paths if path not in index_files)
    index_orphans = index_files - set(index_paths)
    on_disk = _files_under(store, SHARDS, SHARD_PATH, report.foreign)
    for row in rows:
        on_disk.discard(row.path)
        if row.state != ShardState.COMMITTED:
            continue
        report.checked += 1
        _check_shard(store, row, verify, report)
        if advance:
            advance(1)
    report.orphans = sorted(on_disk | index_orphans)
    report.staged = sorted(_files_under(store, STAGING, STAGED_PATH, report.foreign))
    report.foreign.sort()
    if files:
        check_sample_files(catalog, report, advance)
    return report


def gc(catalog: Catalog, store: Store, min_age: float = 300.0) -> GcReport:
    """Remove orphan and staged files older than ``min_age`` seconds, and retired shards.

    A retired shard's file goes first, then its row: a crash in between leaves a retired row without a
    file, which the next ``gc`` removes.
    """
    report = GcReport()
    found = fsck(catalog, store, verify=False)
    now = time.time()
    for rel in found.orphans + found.staged:
        full = store.abspath(rel)
        try:
            if now - full.lstat().st_mtime < min_age:
                report.kept_young.append(rel)
                continue
            full.unlink()
        except FileNotFoundError:
            continue
        report.removed_files.append(rel)
    retired = shards.retired(catalog)
    for row in retired:
        full = store.owned_path(row.path, SHARD_PATH)  # a row's path is only trusted if synthdb wrote it
        if full is not None and full.exists():
            full.unlink()
            report.removed_files.append(row.path)
    shards.delete(catalog, [row.id for row in retired])
    report.removed_rows = len(retired)
    return report
