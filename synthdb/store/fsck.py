"""Check the store against the catalog (``synthdb fsck``) and remove what no row owns (``synthdb gc``).

The commit protocol guarantees that a committed row points to a complete file; a crash can only
leave files nobody references. ``fsck`` lists both kinds of trouble:

- missing: a committed row whose file is gone (data loss: re-run the command that wrote it);
- corrupt: a committed row whose file has another size or sha256 (same);
- orphan: a file under ``shards/`` or ``indexes/`` that no row references (a writer died after its
  rename, or an index build between committing its new file and removing the one it replaced);
- staged: a file left in ``staging/`` (a writer died before its rename).

Index files are checked for presence only: their rows hold no checksum.

``gc`` removes orphans, staged leftovers and the files and rows of retired shards. A file younger
than ``min_age`` seconds is kept, since a live writer on another process may be about to commit it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from synthdb.catalog.schema import Shard, VectorIndex
from synthdb.context import Context
from synthdb.files import file_digest
from synthdb.store.layout import INDEXES, SHARDS, STAGING


@dataclass
class FsckReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.corrupt or self.orphans or self.staged)


@dataclass
class GcReport:
    removed_files: list[str] = field(default_factory=list)
    removed_rows: int = 0
    kept_young: list[str] = field(default_factory=list)


def _files_under(ctx: Context, top: str) -> set[str]:
    found = set()
    for dirpath, _dirs, files in os.walk(ctx.store.root / top):
        found.update(ctx.store.relpath(Path(dirpath, name)) for name in files)
    return found


def fsck(ctx: Context, verify: bool = True, advance: Callable[[int], None] | None = None) -> FsckReport:
    """Compare files and rows; with ``verify`` re-hash every committed file (else sizes only)."""
    table = Shard.__table__
    with ctx.catalog.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.path, table.c.state, table.c.bytes, table.c.sha256)).all()
        indexes = conn.execute(sa.select(VectorIndex.__table__.c.path)).scalars().all()
    report = FsckReport()
    index_files = _files_under(ctx, INDEXES)
    report.missing.extend(path for path in indexes if path not in index_files)
    index_orphans = index_files - set(indexes)
    on_disk = _files_under(ctx, SHARDS)
    for path, state, size, sha256 in rows:
        on_disk.discard(path)
        if state != "committed":
            continue
        report.checked += 1
        full = ctx.store.abspath(path)
        if not full.is_file():
            report.missing.append(path)
        elif full.stat().st_size != size or (verify and file_digest(full) != (size, sha256)):
            report.corrupt.append(path)
        if advance:
            advance(1)
    report.orphans = sorted(on_disk | index_orphans)
    report.staged = sorted(_files_under(ctx, STAGING))
    return report


def gc(ctx: Context, min_age: float = 300.0) -> GcReport:
    """Remove orphan and staged files older than ``min_age`` seconds, and retired shards."""
    report = GcReport()
    found = fsck(ctx, verify=False)
    now = time.time()
    for rel in found.orphans + found.staged:
        full = ctx.store.abspath(rel)
        try:
            if now - full.stat().st_mtime < min_age:
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
            full = ctx.store.abspath(rel)
            if full.exists():
                full.unlink()
                report.removed_files.append(rel)
            conn.execute(sa.delete(table).where(table.c.id == shard_id))
            report.removed_rows += 1
    return report
