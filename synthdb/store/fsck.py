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

import sqlalchemy as sa

from synthdb.catalog.schema import Shard, VectorIndex
from synthdb.context import Context
from synthdb.files import file_digest
from synthdb.store.layout import INDEX_PATH, INDEXES, SHARD_PATH, SHARDS, STAGED_PATH, STAGING


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


def _files_under(ctx: Context, top: str, pattern: re.Pattern[str], foreign: list[str]) -> set[str]:
    """The regular files under ``store/top`` named as synthdb names them; everything else met there
    (symlinks, other names, other kinds of file) goes to ``foreign``. No folder link is entered."""
    base = ctx.store.root / top
    if not os.path.lexists(base):
        return set()
    if not stat.S_ISDIR(os.lstat(base).st_mode):
        foreign.append(top)
        return set()
    found = set()
    for dirpath, dirs, files in os.walk(base):  # os.walk lists folder links in dirs, never enters them
        for name in [d for d in dirs if os.path.islink(os.path.join(dirpath, d))] + files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, ctx.store.root).replace(os.sep, "/")
            if stat.S_ISREG(os.lstat(full).st_mode) and pattern.fullmatch(rel):
                found.add(rel)
            else:
                foreign.append(rel)
    return found


def _check_shard(ctx: Context, path: str, size: int, sha256: str, verify: bool, report: FsckReport) -> None:
    """File a committed shard row under missing or corrupt when its file is not what the row says."""
    full = ctx.store.owned_path(path, SHARD_PATH)
    if full is None:
        report.corrupt.append(path)  # not a path synthdb writes: never opened
    elif not full.is_file():
        report.missing.append(path)
    elif full.stat().st_size != size or (verify and file_digest(full) != (size, sha256)):
        report.corrupt.append(path)


def fsck(ctx: Context, verify: bool = True, advance: Callable[[int], None] | None = None) -> FsckReport:
    """Compare files and rows; with ``verify`` re-hash every committed file (else sizes only)."""
    ctx.store.check_owned()
    table = Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.path, table.c.state, table.c.bytes, table.c.sha256)).all()
        indexes = conn.execute(sa.select(VectorIndex.__table__.c.path)).scalars().all()
    report = FsckReport()
    index_files = _files_under(ctx, INDEXES, INDEX_PATH, report.foreign)
    report.missing.extend(path for path in indexes if path not in index_files)
    index_orphans = index_files - set(indexes)
    on_disk = _files_under(ctx, SHARDS, SHARD_PATH, report.foreign)
    for path, state, size, sha256 in rows:
        on_disk.discard(path)
        if state != "committed":
            continue
        report.checked += 1
        _check_shard(ctx, path, size, sha256, verify, report)
        if advance:
            advance(1)
    report.orphans = sorted(on_disk | index_orphans)
    report.staged = sorted(_files_under(ctx, STAGING, STAGED_PATH, report.foreign))
    report.foreign.sort()
    return report


def gc(ctx: Context, min_age: float = 300.0) -> GcReport:
    """Remove orphan and staged files older than ``min_age`` seconds, and retired shards."""
    report = GcReport()
    found = fsck(ctx, verify=False)
    now = time.time()
    for rel in found.orphans + found.staged:
        full = ctx.store.abspath(rel)
        try:
            if now - full.lstat().st_mtime < min_age:
                report.kept_young.append(rel)
                continue
            full.unlink()
        except FileNotFoundError:
            continue
        report.removed_files.append(rel)
    table = Shard.__table__
    with ctx.catalog.begin() as conn:
        retired = conn.execute(sa.select(table.c.id, table.c.path).where(table.c.state == "retired")).all()
        for shard_id, rel in retired:
            full = ctx.store.owned_path(rel, SHARD_PATH)  # a row's path is only trusted if synthdb wrote it
            if full is not None and full.exists():
                full.unlink()
                report.removed_files.append(rel)
            conn.execute(sa.delete(table).where(table.c.id == shard_id))
            report.removed_rows += 1
    return report
