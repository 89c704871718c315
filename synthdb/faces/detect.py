"""Face detectors that report every face of every image in synthdb's five-point convention.

Two backends: :class:`MtcnnDetector` (facenet-pytorch, batched, CPU or CUDA) and :class:`DlibDetector`
(dlib's HOG detector and shape predictors, CPU). Both return one ImageFaces per image, faces largest first;
an unreadable image or a backend failure becomes that image's error, never a crash of the batch and never a
substitute face. :func:`load_image` is the one way synthdb reads a photo.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from synthdb.errors import SynthdbError
from synthdb.faces.geometry import (
    DLIB_MEAN_FACE_5,
    DLIB_MEAN_MOUTH,
    DLIB_MEAN_NOSE_TIP,
    estimate_similarity,
)
from synthdb.faces.landmarks import Detection, ImageFaces, sort_largest_first


def load_image(path: str | Path) -> np.ndarray:
    """Read a photo as uint8 RGB (H, W, 3), upright and opaque.

    The EXIF orientation is applied (phones store portraits sideways), grayscale and palette images become
    RGB, 16-bit images are scaled to 8 bits, and transparency is composited over black, because the colour
    under a transparent pixel is undefined and must not reach a detector as whatever the encoder left there.
    Raises SynthdbError naming the file for anything PIL cannot decode.
    """
    path = Path(path)
    if not path.is_file():
        raise SynthdbError(f"cannot read image {path}: no such file (check the path)")
    try:
        with Image.open(path) as img:
            return _to_rgb(ImageOps.exif_transpose(img))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split())  # one line, whatever PIL said
        raise SynthdbError(f"cannot read image {path}: {reason} (the file is corrupt or not an image: "
                           "re-export it as PNG or JPEG, or leave it out)") from e


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I"):  # 16- or 32-bit integer grayscale: 16-bit data in practice
        gray = np.asarray(img, dtype=np.float64) / 257.0
        return np.repeat(np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        return np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _check_images(images: Sequence[np.ndarray]) -> None:
    for i, img in enumerate(images):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {i}: expected uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}")


class Detector(ABC):
    """Finds all faces in RGB uint8 images; subclasses implement :meth:`detect`."""

    name: str

    @abstractmethod
    def detect(self, images: Sequence[np.ndarray]) -> list[ImageFaces]:
        """One result per (H, W, 3) uint8 RGB image, in order."""

    def detect_files(self, paths: Sequence[str | Path], chunk: int = 64) -> list[ImageFaces]:
        """Load and search image files; a file that cannot be read gets its error, the others go on."""
        results: list[ImageFaces] = []
        for start in range(0, len(paths), chunk):
            part = [str(p) for p in paths[start:start + chunk]]
            loaded: dict[int, np.ndarray] = {}
            errors: dict[int, str] = {}
            for i, path in enumerate(part):
                try:
                    loaded[i] = load_image(path)
                except SynthdbError as e:
                    errors[i] = str(e)
            found = dict(zip(loaded, self.detect(list(loaded.values())), strict=True))
            results += [replace(found[i], source=p) if i in found else ImageFaces(error=errors[i], source=p)
                        for i, p in enumerate(part)]
        return results


class MtcnnDetector(Detector):
    """facenet-pytorch's MTCNN with every face kept, batched over images of equal size.

    ``min_score`` drops detections below that final-stage probability: MTCNN's own last threshold (0.7)
    lets through background clutter (on the shared test photos: a 0.815 "face" on a dark jacket) while every
    real face there scores >= 0.994.
    """

    name = "mtcnn"

    def __init__(self, device: str | torch.device = "cpu", *, min_face_size: int = 20,
                 min_score: float = 0.95, batch_size: int = 16) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise SynthdbError(f"MTCNN needs facenet-pytorch ({e}): pip install facenet-pytorch") from e
        self._mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size)
        self.min_score, self.batch_size = min_score, batch_size

    def detect(self, images: Sequence[np.ndarray]) -> list[ImageFaces]:
        _check_images(images)
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            by_shape[img.shape].append(i)
        results: dict[int, ImageFaces] = {}
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                results.update(self._detect_batch(batch, [images[i] for i in batch]))
        return [results[i] for i in range(len(images))]

    def _detect_batch(self, indices: list[int], images: list[np.ndarray]) -> dict[int, ImageFaces]:
        try:
            with torch.no_grad():
                boxes, probs, points = self._mtcnn.detect(np.stack(images), landmarks=True)
        except (torch.cuda.OutOfMemoryError, MemoryError):
            # not a property of the images: recording it per image would mark good photos as failed
            height, width = images[0].shape[:2]
            raise SynthdbError(
                f"out of memory detecting faces in {len(images)} images of {width}x{height}: free "
                "memory, run with --device cpu, or downscale the images"
            ) from None
        except Exception as e:  # any other backend failure becomes these images' error
            if len(indices) > 1:  # find out which image it was
                return {i: self._detect_batch([i], [img])[i] for i, img in zip(indices, images, strict=True)}
            return {indices[0]: ImageFaces(error=f"MTCNN failed: {type(e).__name__}: {e}",
                                           size=images[0].shape[:2])}
        rows = zip(indices, images, boxes, probs, points, strict=True)
        return {i: self._faces(img.shape[:2], b, p, pts) for i, img, b, p, pts in rows}

    def _faces(self, size: tuple[int, int], boxes: Any, probs: Any, points: Any) -> ImageFaces:
        if boxes is None:
            return ImageFaces(size=size)
        # facenet-pytorch returns object arrays when a batch's face counts differ: cast.
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        probs = np.asarray(probs, dtype=np.float32).reshape(-1)
        points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
        # MTCNN's order is by image side: [image-left eye, image-right eye, nose, image-left mouth,
        # image-right mouth]; the subject's left is the image right.
        points = points[:, [1, 0, 2, 4, 3]]
        faces = [Detection(tuple(b), p, pts, "mtcnn")
                 for b, p, pts in zip(boxes, probs, points, strict=True) if p >= self.min_score]
        return ImageFaces(sort_largest_first(faces), size=size)


def dlib5_points(parts: np.ndarray) -> np.ndarray:
    """Our five points from dlib's 5-point shape model (eye corners and nose bottom), float32 (5, 2).

    Eye centres are the means of each eye's two corners. The model has no nose tip and no mouth: fit the
    least-squares similarity from dlib's mean face (the template its chips use) to the five parts, move the
    measured nose bottom by the mean face's bottom-to-tip offset under that similarity, and take the mouth
    corners from the mean face (inferred, not measured: use the 68-point model where the mouth matters).
    """
    parts = np.asarray(parts, dtype=np.float64)
    fit = estimate_similarity(torch.from_numpy(DLIB_MEAN_FACE_5)[None], torch.from_numpy(parts))[0].numpy()
    linear, shift = fit[:, :2], fit[:, 2]
    nose = parts[4] + linear @ (DLIB_MEAN_NOSE_TIP - DLIB_MEAN_FACE_5[4])
    mouth = DLIB_MEAN_MOUTH @ linear.T + shift
    return np.stack([parts[0:2].mean(0), parts[2:4].mean(0), nose, *mouth]).astype(np.float32)


def dlib68_points(parts: np.ndarray) -> np.ndarray:
    """Our five points from iBUG 68 points: eye centres = means of the eye contours (42-47 is the subject's
    left eye, 36-41 the right), nose tip 30, mouth corners 54 (subject's left) and 48."""
    parts = np.asarray(parts, dtype=np.float64)
    return np.stack([parts[42:48].mean(0), parts[36:42].mean(0), parts[30], parts[54], parts[48]]).astype(
        np.float32)


class DlibDetector(Detector):
    """dlib's HOG frontal-face detector plus a shape predictor (5 points by default, or 68).

    The 5-point model is what dlib's own face chips use and has no licence restriction; the 68-point model
    (iBUG 300-W: no commercial use) measures the mouth and also fills :attr:`Detection.landmarks68`. Boxes
    are dlib's inclusive rectangles as (left, top, right + 1, bottom + 1). CPU only, one image at a time.
    """

    name = "dlib"

    def __init__(self, shape_predictor: str | Path, *, upsample: int = 1, landmarks: int = 5) -> None:
        """``shape_predictor``: dlib's ``shape_predictor_{5,68}_face_landmarks.dat`` for ``landmarks`` points
        (:func:`synthdb.zoo.detector` finds the installed one)."""
        try:
            import dlib
        except ImportError as e:
            raise SynthdbError(f"the dlib detector needs dlib ({e}): pip install dlib-bin") from e
        if landmarks not in (5, 68):
            raise ValueError(f"landmarks must be 5 or 68, got {landmarks}")
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(shape_predictor))
        self.upsample, self.landmarks = upsample, landmarks

    def detect(self, images: Sequence[np.ndarray]) -> list[ImageFaces]:
        _check_images(images)
        return [self._detect_one(np.ascontiguousarray(img)) for img in images]

    def _detect_one(self, img: np.ndarray) -> ImageFaces:
        try:
            rects, scores, _ = self._detector.run(img, self.upsample, 0.0)
            faces = []
            for rect, score in zip(rects, scores, strict=True):
                parts = np.array([(p.x, p.y) for p in self._shape(img, rect).parts()], dtype=np.float32)
                box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
                if self.landmarks == 5:
                    faces.append(Detection(box, score, dlib5_points(parts), "dlib-5"))
                else:
                    faces.append(Detection(box, score, dlib68_points(parts), "dlib-68", landmarks68=parts))
        except RuntimeError as e:
            return ImageFaces(error=f"dlib failed: {e}", size=img.shape[:2])
        return ImageFaces(sort_largest_first(faces), size=img.shape[:2])
