"""Reading a database's tree safely and in a deterministic order: clean relative paths, sorted listings,
folder symlinks named and never entered, metadata files read within a byte cap and inside the root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from synthdb.errors import SynthdbError
from synthdb.sources.entries import LinkedFolder
from synthdb.untrusted import Refused, is_inside, read_capped, resolve_inside

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


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
