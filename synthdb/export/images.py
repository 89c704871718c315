"""One sample's image as the bytes an export stores: copied as it is, or decoded, cropped, resized, encoded.

Copying beats re-encoding whenever the file already is what the format wants (a JPEG of the right size
for RecordIO and WebDataset; any file for ImageFolder and bob when neither crop nor size is asked):
re-encoding a JPEG loses quality and costs most of an export's time. Otherwise the photo is read with
:func:`synthdb.faces.detect.load_image` (upright, RGB), cropped with an alignment preset (a detector
finds the face in genuine photos; generated images are reframed from their fixed geometry), resized and
encoded: JPEG for record formats, PNG (lossless) for file trees. A file that cannot be used is a
:class:`Skip` with its reason, not a crash.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from synthdb.errors import SynthdbError
from synthdb.faces.detect import load_image

EXIF_ORIENTATION = 0x0112
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True)
class Encoded:
    """Image bytes, the file extension they call for, and (width, height) when known."""

    data: bytes
    ext: str
    size: tuple[int, int] | None


@dataclass(frozen=True)
class Skip:
    """Why a sample has no image in the export: ``kind`` for counting, ``detail`` for people."""

    kind: str
    detail: str


class ImagePipeline:
    """Callable ``relpath -> Encoded | Skip`` for one export's settings; safe to call from many threads.

    ``encoding`` is ``jpeg`` or ``keep`` (see :class:`synthdb.export.common.FormatSpec`). ``crop`` is an
    output preset (``arcface``, ``ffhq``...), ``source`` the geometry the images are in (a detector such
    as ``mtcnn`` for photos, or the fixed preset of generated images); ``size`` makes the result
    ``size`` x ``size``.
    """

    def __init__(
        self,
        root: Path,
        *,
        encoding: str,
        crop: str | None = None,
        source: str | None = None,
        size: int | None = None,
        quality: int = 95,
    ) -> None:
        self.root, self.encoding, self.size, self.quality = root, encoding, size, quality
        self.cropper = None
        if crop is not None:
            from synthdb.faces.align import Cropper  # torch and kornia: only when cropping

            if source is None:
                raise SynthdbError(
                    "--crop needs the images' geometry: pass --from (mtcnn for photos, "
                    "or the generator's preset such as ffhq256)"
                )
            self.cropper = Cropper(source, crop, value_range=(0.0, 255.0))
        self._detector_lock = threading.Lock()

    def __call__(self, relpath: str) -> Encoded | Skip:
        path = self.root / relpath
        try:
            if self.cropper is None:
                copied = self._copy(path)
                if copied is not None:
                    return copied
            pixels = load_image(path)
        except SynthdbError as exc:
            return Skip("unreadable", str(exc))
        if self.cropper is not None:
            cropped = self._crop(pixels)
            if isinstance(cropped, Skip):
                return cropped
            pixels = cropped
        return self._encode(pixels)

    def extension(self, name: str) -> str:
        """The extension a file written from ``name`` gets: its own when copied, else the encoder's.

        Known before any file is read, so a resumed export can name files it wrote before the crash.
        """
        if self.encoding == "jpeg":
            return ".jpg"
        if self.cropper is not None or self.size is not None:
            return ".png"
        return PurePosixPath(name).suffix.lower() or ".img"

    def _copy(self, path: Path) -> Encoded | None:
        """The file's own bytes when they already fit, else None (decode and encode).

        For JPEG records only files named .jpg/.jpeg are opened to look: opening costs as much as a small
        image's decode, and a JPEG under another name just gets re-encoded.
        """
        if self.encoding == "keep":
            return Encoded(_read(path), self.extension(path.name), None) if self.size is None else None
        if path.suffix.lower() not in JPEG_SUFFIXES:
            return None
        try:
            with Image.open(path) as img:
                if img.format != "JPEG" or img.mode != "RGB":
                    return None
                if self.size is not None and img.size != (self.size, self.size):
                    return None
                if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
                    return None
                size = img.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return None  # load_image names the problem
        return Encoded(_read(path), ".jpg", size)

    def _crop(self, pixels: np.ndarray) -> np.ndarray | Skip:
        import torch

        assert self.cropper is not None
        batch = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0).float()
        try:
            with torch.no_grad():
                if self.cropper.algorithm in ("similarity", "ffhq"):
                    with self._detector_lock:  # detectors keep per-call state: one image at a time
                        found = self.cropper.detector.detect([pixels])
                    crops, statuses = self.cropper.crop_detected(batch, found)
                else:
                    crops, statuses = self.cropper(batch)
        except SynthdbError as exc:
            return Skip("crop_failed", str(exc))
        status = statuses[0]
        if not status.ok:
            return Skip("no_face" if status.faces == 0 else "crop_failed", status.error or "crop failed")
        return crops[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()

    def _encode(self, pixels: np.ndarray) -> Encoded:
        img = Image.fromarray(pixels, "RGB")
        if self.size is not None and img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        if self.encoding == "jpeg":
            img.save(buffer, format="JPEG", quality=self.quality)
            return Encoded(buffer.getvalue(), ".jpg", img.size)
        img.save(buffer, format="PNG")
        return Encoded(buffer.getvalue(), ".png", img.size)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SynthdbError(f"cannot read image {path}: {reason} (check the dataset root)") from None
