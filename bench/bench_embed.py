"""``synthdb embed`` end to end vs the bare embedder forward (goal: pipeline >= 40% of bare throughput).

A folder of 500 face images (256x256 JPEGs cut around the faces of the test photos, with
flips and small shifts so no two files are equal) is imported as an ImageFolder dataset and embedded
with dlib-resnet through the whole pipeline (decode in worker processes, detect, align, embed,
commit), once per detector; ``none`` treats the files as aligned already and only decodes and
resizes. The baseline is the bare dlib-resnet forward on 500 pre-aligned (150x150) tensors, batch 32.
Images/s for each, and the ratio to the baseline. Same process, one after the other.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthdb import zoo
from synthdb.admin import init_workspace
from synthdb.embed_dataset import embed_dataset
from synthdb.faces.detect import load_image
from synthdb.faces.embed import Embedder
from synthdb.sources.registry import import_named

FACES = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"
IMAGES, SIZE = 500, 256


def make_folder(root: Path) -> None:
    """Cut a SIZE x SIZE window around every detected face, then vary it to reach IMAGES files."""
    rng = np.random.default_rng(0)
    detector = zoo.detector(None, "dlib")
    windows = []
    for path in sorted(FACES.glob("*.*")):
        if path.suffix == ".csv":
            continue
        image = load_image(path)
        for face in detector.detect([image])[0].faces[:1]:
            x0, y0, x1, y1 = face.box
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
            windows.append((path.stem.rsplit("_", 1)[0], image, cx, cy, half))
    for k in range(IMAGES):
        identity, image, cx, cy, half = windows[k % len(windows)]
        dx, dy = rng.uniform(-0.1, 0.1, 2) * half
        box = (int(cx + dx - half), int(cy + dy - half), int(cx + dx + half), int(cy + dy + half))
        crop = Image.fromarray(image).crop(box).resize((SIZE, SIZE), Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        (root / identity).mkdir(parents=True, exist_ok=True)
        crop.save(root / identity / f"{k:04d}.jpg", quality=92)


def bare_forward(embedder: Embedder, repeats: int = 3) -> float:
    """Images/s of the embedder alone, median of ``repeats`` passes after warm-up (torch's first calls
    in a process are several times slower)."""
    chips = torch.rand(IMAGES, 3, 150, 150, device=embedder.device) * 255
    rates = []
    with torch.no_grad():
        for _ in range(5):
            embedder.embed(chips[:32])
        for _ in range(repeats):
            t0 = time.perf_counter()
            for start in range(0, IMAGES, 32):
                embedder.embed(chips[start:start + 32])
            if embedder.device.type == "cuda":
                torch.cuda.synchronize()
            rates.append(IMAGES / (time.perf_counter() - t0))
    return float(np.median(rates))


def main(device: str = "cpu") -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        make_folder(Path(tmp) / "faces")
        embedder = zoo.embedder(None, "dlib-resnet", device)
        rates = {"bare forward (pre-aligned, batch 32)": bare_forward(embedder)}
        for detector in ("none", "mtcnn", "dlib"):
            ctx = init_workspace(Path(tmp) / f"ws-{detector}")
            import_named(ctx, "imagefolder", Path(tmp) / "faces", name="faces", quiet=True)
            t0 = time.perf_counter()
            report = embed_dataset(ctx, "faces", "dlib-resnet", detector, device=device, quiet=True)
            rates[f"synthdb embed --detector {detector}"] = report.embedded / (time.perf_counter() - t0)
            ctx.close()
    base = rates["bare forward (pre-aligned, batch 32)"]
    print(f"{f'pipeline (500 images, 256x256, embedder on {device})':<46}{'images/s':>10}{'vs bare':>10}")
    for name, rate in rates.items():
        print(f"{name:<46}{rate:>10.1f}{rate / base:>9.0%}")
    print("goal: pipeline >= 40% of the bare forward")


if __name__ == "__main__":
    main()
