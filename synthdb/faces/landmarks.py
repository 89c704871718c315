"""The one landmark convention of synthdb, and the per-image detection results.

Five points, always in this order, as (x, y) pixels of the image they were found in:

    0  subject's left eye centre     (image RIGHT: the larger x in an upright frontal face)
    1  subject's right eye centre    (image left)
    2  nose tip
    3  subject's left mouth corner   (image right)
    4  subject's right mouth corner  (image left)

Pixel centres sit at integer coordinates (the top-left pixel's centre is (0, 0)), as in dlib, OpenCV and
kornia's ``align_corners=True``. Every detector converts to this order once, where it reads its model's output
(:mod:`synthdb.faces.detect`), and every template in :mod:`synthdb.faces.align` is written in it, so no other
module ever has to know which library said "left" from which side.

Detection failures are data, not exceptions: an :class:`ImageFaces` holds zero, one or many faces, or an error
string for an image that could not be read or searched. Nothing is "repaired" with a made-up face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EYE_LEFT, EYE_RIGHT, NOSE, MOUTH_LEFT, MOUTH_RIGHT = range(5)


@dataclass(frozen=True, eq=False)
class Detection:
    """One face: its box, the detector's confidence, the five points and, when a 68-point model ran, those.

    ``box`` is (x0, y0, x1, y1) with ``x1 - x0`` the width in pixels. ``model`` names what produced the points
    (``mtcnn``, ``dlib-5``, ``dlib-68``): with ``dlib-5`` the mouth corners are inferred, not measured (see
    :class:`synthdb.faces.detect.DlibDetector`).
    """

    box: tuple[float, float, float, float]
    score: float
    points: np.ndarray  # (5, 2) float32, in the order of the module docstring
    model: str
    landmarks68: np.ndarray | None = None  # (68, 2) float32, iBUG 300-W numbering

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float32)
        if points.shape != (5, 2):
            raise ValueError(f"expected (5, 2) points, got {points.shape}")
        object.__setattr__(self, "points", points)
        if self.landmarks68 is not None:
            lm = np.asarray(self.landmarks68, dtype=np.float32)
            if lm.shape != (68, 2):
                raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
            object.__setattr__(self, "landmarks68", lm)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))

    @property
    def area(self) -> float:
        """Box area in pixels: what "largest face first" sorts by."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)

    @property
    def eye_left(self) -> np.ndarray:
        return self.points[EYE_LEFT]

    @property
    def eye_right(self) -> np.ndarray:
        return self.points[EYE_RIGHT]

    @property
    def nose(self) -> np.ndarray:
        return self.points[NOSE]

    @property
    def mouth_left(self) -> np.ndarray:
        return self.points[MOUTH_LEFT]

    @property
    def mouth_right(self) -> np.ndarray:
        return self.points[MOUTH_RIGHT]


@dataclass(frozen=True)
class ImageFaces:
    """What a detector found in one image: all faces, largest first, or the error that stopped it."""

    faces: tuple[Detection, ...] = ()
    error: str | None = None
    source: str | None = None  # the file, when the image came from one
    size: tuple[int, int] | None = None  # (height, width) of the searched image

    @property
    def ok(self) -> bool:
        """True when the image was searched; it may still hold no face."""
        return self.error is None

    @property
    def largest(self) -> Detection | None:
        return self.faces[0] if self.faces else None


def sort_largest_first(faces: list[Detection]) -> tuple[Detection, ...]:
    """Largest box first, ties by score, so ``faces[0]`` is the main subject of a portrait."""
    return tuple(sorted(faces, key=lambda f: (-f.area, -f.score)))
