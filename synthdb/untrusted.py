"""Reading files whose links, sizes and contents someone else chose: dataset trees and their metadata.

Importers and exports read a tree the user points at, but what lies in it (a symlink to
``/etc/passwd``, a 2 GB sparse ``.jpg``, a 20,000 x 20,000 PNG of one colour) may come from anyone.
Three rules hold wherever such a file is read:

* it must resolve, symlinks followed, to a place inside the root the user named (the root itself may
  be a symlink: the user chose it). Links that stay inside are fine, hard links are inside by nature;
* it is never read past a byte cap, and an image file may not be much larger than its pixels;
* an image's pixel count is read from its header and checked before anything is decoded.

A file that breaks a rule raises :class:`Refused`, a one-line :class:`SynthdbError` with a ``kind``
that importers and exports count and name (``escapes_root``, ``too_large``, ``unreadable``).
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

from synthdb.errors import SynthdbError

MAX_IMAGE_BYTES = 256 << 20
"""The largest image file read: 10x a 24-megapixel PNG, far above any face photo."""
MAX_IMAGE_PIXELS = 89_478_485
"""The most pixels an image may declare: PIL's own decompression-bomb warning threshold (about
9,459 x 9,459), enforced here whatever ``PIL.Image.MAX_IMAGE_PIXELS`` is set to."""
BYTES_PER_PIXEL = 8
"""An image file is at most 8 bytes per declared pixel (16-bit RGBA, stored raw) ..."""
METADATA_SLACK = 16 << 20
"""... plus 16 MiB of metadata (EXIF, ICC, XMP): anything larger is holes or junk (a sparse file)."""
FOLDER_CACHE = 4096
"""Folders whose resolved place an import remembers; scans visit one folder at a time."""


def _pil_image() -> ModuleType:
    """PIL's Image module, imported when first needed (the store and the catalog never need it).

    PIL warns (two lines on stderr) about images over its threshold: :func:`image_header` refuses
    those itself, in one line, so the warning is silenced rather than repeated. The filter is set on
    every call (an idempotent move to the front of the list): code that saves and restores warning
    filters, as pytest does per test, would drop a filter set once.
    """
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image


class Refused(SynthdbError):
    """A file that may not be read, with the ``kind`` of problem importers and exports count it under."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def is_inside(root: str, real: str) -> bool:
    """Whether the resolved path ``real`` is ``root`` or lies under it (both resolved)."""
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def resolve_inside(root: Path, rel: str) -> Path:
    """``root/rel`` with every symlink resolved; :class:`Refused` when that place is outside ``root``.

    ``root`` is resolved already (callers resolve it once, not once per file); were it not, files would
    be refused, never wrongly accepted.
    """
    real = os.path.realpath(os.path.join(root, rel))
    if not is_inside(str(root), real):
        raise Refused(
            "escapes_root",
            f"{root / rel} leads outside {root} (a symlink points elsewhere): put the real file inside "
            "the root",
        )
    return Path(real)


class RootGuard:
    """Containment checks for the many files of one import, resolving each folder once.

    Checking ``realpath`` for every one of 42 million files would cost a ``lstat`` per path component;
    a file's folder is resolved once (scans visit a folder's files together) and the file itself only
    needs a ``realpath`` when it is a symlink, which ``check_file`` learns from the ``lstat`` it does
    anyway.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(root)
        self._folders: dict[str, bool] = {}

    def folder_inside(self, folder: str) -> bool:
        """Whether the folder ``folder`` (relative to the root, '' for the root) resolves inside it."""
        inside = self._folders.get(folder)
        if inside is None:
            if len(self._folders) >= FOLDER_CACHE:
                self._folders.clear()
            real = os.path.realpath(os.path.join(self.root, folder))
            inside = self._folders[folder] = is_inside(self.root, real)
        return inside

    def link_inside(self, full: str) -> bool:
        """Whether the symlink at ``full`` resolves inside the root."""
        return is_inside(self.root, os.path.realpath(full))


def open_regular(path: Path, what: str) -> BinaryIO:
    """``path`` (already resolved) opened for reading, refused unless it is a regular file.

    Opened without blocking and without following a last symlink (one swapped in since it was resolved),
    then checked: a FIFO would block the reader forever, a device never end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise Refused("unreadable", f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused("unreadable", f"{what} {path} is not a regular file")
    return os.fdopen(fd, "rb")


def read_capped(path: Path, limit: int, what: str) -> bytes:
    """The whole file at ``path`` (already resolved), refused when it is not a regular file or holds more
    than ``limit`` bytes; never reads more than ``limit + 1`` bytes, even from a file that grows."""
    with open_regular(path, what) as fh:
        info = os.fstat(fh.fileno())
        if info.st_size > limit:
            raise Refused(
                "too_large", f"{what} {path} holds {info.st_size} bytes, more than the {limit}-byte cap"
            )
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise Refused("too_large", f"{what} {path} grew past the {limit}-byte cap while being read")
    return data


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding a pixel."""

    format: str | None
    mode: str
    size: tuple[int, int]
    orientation: int


def image_header(path: Path) -> ImageHeader:
    """The header of the image at ``path`` (already resolved), after the byte and pixel caps.

    Refuses a file over :data:`MAX_IMAGE_BYTES`, one that declares more than :data:`MAX_IMAGE_PIXELS`
    (PIL's bomb check is not relied on: a program may switch it off), and one much larger than its
    pixels could be stored in (:data:`BYTES_PER_PIXEL` each plus :data:`METADATA_SLACK`): a sparse
    file of holes behind a valid header. Nothing is decoded: the EXIF orientation is read for JPEGs
    only, whose EXIF sits in the header (PIL decodes a whole PNG to find its EXIF).
    """
    image = _pil_image()
    try:
        info = os.stat(path)
    except OSError as exc:
        raise Refused("unreadable", f"cannot read image {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):  # PIL would open a FIFO and wait for a writer forever
        raise Refused("unreadable", f"image {path} is not a regular file")
    size = info.st_size
    if size > MAX_IMAGE_BYTES:
        raise Refused(
            "too_large", f"image {path} holds {size} bytes, more than the {MAX_IMAGE_BYTES}-byte cap"
        )
    try:
        with image.open(path) as img:
            _check_pixels(path, img.size, size)
            orientation = img.getexif().get(0x0112, 1) if img.format == "JPEG" else 1
            return ImageHeader(img.format, img.mode, img.size, orientation)
    except Refused:
        raise
    except image.DecompressionBombError:  # over twice PIL's threshold: PIL refused to even open it
        raise Refused("too_large", f"image {path} declares more than {MAX_IMAGE_PIXELS} pixels") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure (PIL raises many types) means the same
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise Refused("unreadable", f"cannot read image {path}: {reason}") from None


def _check_pixels(path: Path, dimensions: tuple[int, int], size: int) -> None:
    """Refuse an image that declares too many pixels, or whose file is far larger than its pixels."""
    width, height = dimensions
    if width * height > MAX_IMAGE_PIXELS:
        raise Refused(
            "too_large",
            f"image {path} declares {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} allowed "
            "(a decompression bomb or a scan, not a face photo)",
        )
    if size > width * height * BYTES_PER_PIXEL + METADATA_SLACK:
        raise Refused(
            "too_large",
            f"image {path} holds {size} bytes for {width}x{height} pixels: holes or junk past the image "
            "(a sparse file?); re-encode it",
        )
