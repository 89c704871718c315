"""Crop image files from one preset's geometry into another's: the library side of ``synthdb crop``.

A job over files, above :mod:`synthdb.faces`: it reads and writes files and takes its detector from the
model zoo, which knows where the detector's weights are.

``crop_images(paths, "mtcnn", "arcface", out_dir)`` reads each photo, crops it, writes ``out_dir/<stem>.png``
and reports every file's outcome. One bad file (unreadable, no face, wrong size for a fixed preset) is a line
in the report, not the end of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthdb import zoo
from synthdb.errors import SynthdbError
from synthdb.faces.align import Cropper, CropPreset, CropStatus, get_preset
from synthdb.faces.detect import Detector, load_image


@dataclass(frozen=True)
class CropResult:
    """One input file: where its crop went, or why there is none; ``faces`` counts detections."""

    source: str
    output: str | None
    error: str | None = None
    faces: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class CropReport:
    """Every file's :class:`CropResult`, in input order."""

    results: tuple[CropResult, ...]

    @property
    def written(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> tuple[CropResult, ...]:
        return tuple(r for r in self.results if not r.ok)


def output_names(paths: Sequence[str | Path]) -> list[str]:
    """``<stem>.png`` per input, with ``_1``, ``_2``... where stems repeat (a/x.jpg and b/x.png)."""
    used: set[str] = set()
    names = []
    for path in paths:
        stem, name, n = Path(path).stem, f"{Path(path).stem}.png", 0
        while name in used:
            n += 1
            name = f"{stem}_{n}.png"
        used.add(name)
        names.append(name)
    return names


def crop_images(paths: Sequence[str | Path], from_preset: str | CropPreset, to_preset: str | CropPreset,
                out_dir: str | Path, *, device: str | torch.device | None = None,
                detector: Detector | None = None) -> CropReport:
    """Crop each image file and write the crops as PNGs into ``out_dir`` (created if missing).

    ``from_preset`` is a detector (``mtcnn``, ``dlib``: the largest face of each photo is cropped),
    ``resize``, or the fixed geometry the files already have (``ffhq``, ``ffhq256``...: generator output).
    Files are handled one at a time, so photos of any size mix; ``detector`` reuses an already loaded one.
    """
    source = get_preset(from_preset)
    device = zoo.device_of(device)  # None: cuda when visible, as every command's --device
    if detector is None and source.kind == "detector":
        detector = zoo.detector(None, source.name, device)
    cropper = Cropper(source, to_preset, detector=detector, value_range=(0.0, 255.0))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path, name in zip(paths, output_names(paths), strict=True):
        try:
            crop, status = _crop_one(cropper, load_image(path), device)
        except SynthdbError as e:
            results.append(CropResult(str(path), None, str(e)))
            continue
        if not status.ok:
            results.append(CropResult(str(path), None, status.error, status.faces))
            continue
        pixels = crop[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        Image.fromarray(pixels).save(out / name)
        results.append(CropResult(str(path), str(out / name), None, status.faces))
    return CropReport(tuple(results))


def _crop_one(cropper: Cropper, image: np.ndarray,
              device: str | torch.device) -> tuple[torch.Tensor, CropStatus]:
    batch = torch.from_numpy(image.copy()).permute(2, 0, 1).unsqueeze(0).float().to(device)
    with torch.no_grad():
        if cropper.algorithm in ("similarity", "ffhq"):
            crops, statuses = cropper.crop_detected(batch, cropper.detector.detect([image]))
        else:
            crops, statuses = cropper(batch)
    return crops, statuses[0]
