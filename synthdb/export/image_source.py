"""One sample's image as the bytes an export stores: copied as it is, or decoded, cropped, resized, encoded.

Copying beats re-encoding whenever the file already is what the format wants (a JPEG of the right size
for RecordIO and WebDataset; any file for ImageFolder and bob when neither crop nor size is asked):
re-encoding a JPEG loses quality and costs most of an export's time. Otherwise the photo is read with
:func:`synthdb.faces.detect.load_image` (upright, RGB), cropped with an alignment preset (a detector
finds the face in genuine photos; generated images are reframed from their fixed geometry), resized and
encoded: JPEG for record formats, PNG (lossless) for file trees. A file that cannot be used is a
:class:`Skip` with its reason, not a crash.

The dataset's tree may have changed since it was imported (a file replaced by a symlink to
``/etc/passwd``, a 2 GB sparse ``.jpg``), so every file is checked again when it is read
(:mod:`synthdb.untrusted`): it must resolve inside the dataset root (``escapes_root``), be at most
``MAX_IMAGE_BYTES`` and not much larger than its pixels, and declare at most ``MAX_IMAGE_PIXELS``
(``too_large``), and be an image at all (``unreadable``): only then is it copied, or decoded.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from synthdb.errors import SynthdbError
from synthdb.faces.detect import Detector, load_image
from synthdb.untrusted import MAX_IMAGE_BYTES, ImageHeader, Refused, image_header, read_capped, resolve_inside

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


class ImageSource:
    """Callable ``relpath -> Encoded | Skip`` for one export's settings; safe to call from many threads.

    ``encoding`` is ``jpeg`` or ``keep`` (see :class:`synthdb.export.job.FormatSpec`). ``crop`` is an
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
        self.root = Path(os.path.realpath(root))  # resolved once: each file is checked against it
        self.encoding, self.size, self.quality = encoding, size, quality
        self.cropper, self.source = None, source
        self._detector: Detector | None = None  # loaded on the first photo that needs one
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
        try:
            path = resolve_inside(self.root, relpath)
            header = image_header(path)
            if self.cropper is None:
                copied = self._copy(path, header, relpath)
                if copied is not None:
                    return copied
            pixels = load_image(path)
        except Refused as exc:
            return Skip(exc.kind, str(exc))
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

    def _copy(self, path: Path, header: ImageHeader, relpath: str) -> Encoded | None:
        """The file's own bytes when they already fit, else None (decode and encode).

        ``path`` is resolved and its ``header`` checked (:func:`synthdb.untrusted.image_header`); the
        bytes are read with the same cap, so a file that grew since is refused rather than copied.
        JPEG records copy files named .jpg/.jpeg only: a JPEG under another name just gets re-encoded.
        """
        if self.encoding == "keep":
            if self.size is not None:
                return None
            return Encoded(read_capped(path, MAX_IMAGE_BYTES, "image"), self.extension(relpath), None)
        if path.suffix.lower() not in JPEG_SUFFIXES or header.format != "JPEG" or header.mode != "RGB":
            return None
        if (self.size is not None and header.size != (self.size, self.size)) or header.orientation != 1:
            return None
        return Encoded(read_capped(path, MAX_IMAGE_BYTES, "image"), ".jpg", header.size)

    def _crop(self, pixels: np.ndarray) -> np.ndarray | Skip:
        import torch

        assert self.cropper is not None
        batch = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0).float()
        try:
            with torch.no_grad():
                if self.cropper.algorithm in ("similarity", "ffhq"):
                    with self._detector_lock:  # detectors keep per-call state: one image at a time
                        found = self._detector_of_source().detect([pixels])
                    crops, statuses = self.cropper.crop_detected(batch, found)
                else:
                    crops, statuses = self.cropper(batch)
        except SynthdbError as exc:
            return Skip("crop_failed", str(exc))
        status = statuses[0]
        if not status.ok:
            return Skip("no_face" if status.faces == 0 else "crop_failed", status.error or "crop failed")
        return crops[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()

    def _detector_of_source(self) -> Detector:
        """The detector of the ``source`` preset, from the model zoo (which knows where its weights are),
        built once; called under the detector lock."""
        if self._detector is None:
            from synthdb import zoo  # torch and every network: only when a photo is cropped

            self._detector = zoo.detector(None, str(self.source))
        return self._detector

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
