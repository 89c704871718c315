"""``synthdb fsck --files``: every sample's image file exists under its dataset's root (stat only).

Real imports on SQLite and PostgreSQL; files are then removed, swapped for links out of the root, for
folders or FIFOs, and catalog rows are crafted to point outside: each is named, nothing is opened.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import sqlalchemy as sa

from synthdb.catalog.schema import Sample
from synthdb.context import Context
from synthdb.sources.registry import import_named
from synthdb.store.fsck import LISTED_FILES, fsck
from tests.conftest import CliRun
from tests.sources.test_databases import png_bytes, touch
from tests.test_datasets import make_vectors


def _photos(ctx: Context, root: Path, people: int = 2, per: int = 2, name: str = "photos") -> None:
    for p in range(people):
        for k in range(per):
            touch(root / f"p{p:03d}" / f"{k}.png", png_bytes())
    import_named(ctx, "imagefolder", root, name=name)


def test_a_deleted_image_is_named_by_fsck_files(ctx: Context, tmp_path: Path, synthdb_cli: CliRun) -> None:
    """On SQLite and PostgreSQL; datasets without images (latents only) are not checked."""
    _photos(ctx, tmp_path / "photos")
    make_vectors(ctx, "latents-only")
    assert fsck(ctx.catalog, ctx.store, files=True).files_checked == 4
    (tmp_path / "photos" / "p001" / "0.png").unlink()
    report = fsck(ctx.catalog, ctx.store, files=True)
    assert not report.clean and report.missing_files == ["photos: p001/0.png (missing)"]
    assert fsck(ctx.catalog, ctx.store).clean  # without --files only the store is checked
    output = synthdb_cli("fsck", "--files", "--quick", ws=ctx, code=1).output
    assert "missing sample file: photos: p001/0.png (missing)" in output
    assert "1 sample files missing" in output.splitlines()[-1]
    output = synthdb_cli("fsck", "--quick", ws=ctx, code=0).output
    assert output.startswith("clean: ")


def test_links_out_of_the_root_folders_and_fifos_are_named_never_opened(
    sqlite_ctx: Context, tmp_path: Path
) -> None:
    """A file swapped for a link out of the root, a folder, or a FIFO (which would block a reader): each is
    named with its reason, and nothing blocks."""
    root = tmp_path / "photos"
    _photos(sqlite_ctx, root, people=1, per=3)
    outside = tmp_path / "outside.png"
    touch(outside, png_bytes())
    (root / "p000" / "0.png").unlink()
    os.symlink(outside, root / "p000" / "0.png")
    (root / "p000" / "1.png").unlink()
    (root / "p000" / "1.png").mkdir()
    (root / "p000" / "2.png").unlink()
    os.mkfifo(root / "p000" / "2.png")
    report = fsck(sqlite_ctx.catalog, sqlite_ctx.store, files=True)
    assert report.missing_files == [
        "photos: p000/0.png (outside its root)",
        "photos: p000/1.png (not a regular file)",
        "photos: p000/2.png (not a regular file)",
    ]


def test_crafted_rows_pointing_outside_are_named_without_a_look(sqlite_ctx: Context, tmp_path: Path) -> None:
    """Rows written by someone else (``..``, an absolute path, a folder link out of the root) are refused
    by their name, before any file system call could touch the place they point to."""
    root = tmp_path / "photos"
    _photos(sqlite_ctx, root, people=1, per=3)
    (tmp_path / "secret").mkdir()
    touch(tmp_path / "secret" / "key.png", png_bytes())
    os.symlink(tmp_path / "secret", root / "linked")
    crafted = {"p000/0.png": "../secret/key.png", "p000/1.png": str(tmp_path / "secret" / "key.png"),
               "p000/2.png": "linked/key.png"}  # fmt: skip
    sample = Sample.__table__
    with sqlite_ctx.catalog.begin() as conn:
        for key, path in crafted.items():
            conn.execute(sa.update(sample).where(sample.c.key == key).values(path=path))
    report = fsck(sqlite_ctx.catalog, sqlite_ctx.store, files=True)
    assert sorted(report.missing_files) == sorted(f"photos: {p} (outside its root)" for p in crafted.values())


def test_a_lost_root_is_counted_and_the_list_is_bounded(sqlite_ctx: Context, tmp_path: Path) -> None:
    """A dataset whose root is gone loses every file: all are counted, the first ``LISTED_FILES`` named."""
    root = tmp_path / "photos"
    _photos(sqlite_ctx, root, people=LISTED_FILES // 2 + 3, per=2)
    shutil.rmtree(root)
    report = fsck(sqlite_ctx.catalog, sqlite_ctx.store, files=True)
    total = 2 * (LISTED_FILES // 2 + 3)
    assert report.missing_file_count == report.files_checked == total
    assert len(report.missing_files) == LISTED_FILES
    assert "(the first listed)" in report.summary(files=True)
