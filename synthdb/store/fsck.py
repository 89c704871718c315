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

from synthdb.catalog import Catalog, indexes, shards
from synthdb.catalog.schema import ShardState
from synthdb.files import file_digest
from synthdb.store.layout import INDEX_PATH, INDEXES, SHARD_PATH, SHARDS, STAGED_PATH, STAGING, Store


@dataclass
class FsckReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.corrupt or self.orphans or self.staged or self.foreign)


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


def fsck(
    catalog: Catalog, store: Store, verify: bool = True, advance: Callable[[int], None] | None = None
) -> FsckReport:
    """Compare files and rows; with ``verify`` re-hash every committed file (else sizes only)."""
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
