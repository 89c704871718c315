"""Time dlib-bin's face descriptor against the torch port on the same 32 aligned chips, in one process.

The point of the port is throughput for batch scoring: dlib-bin runs one chip at a time on one core, torch
runs the whole batch on its BLAS. Run from the repo root: ``python -m bench.bench_dlib_resnet``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import dlib
import numpy as np
import torch
from PIL import Image

from synthdb import zoo
from synthdb.nets.dlib_resnet import chips_to_tensor, load_dlib_resnet

N_CHIPS = 32


def collect_chips(faces_dir: Path, n: int) -> list[np.ndarray]:
    """Aligned 150x150 chips of the first n faces dlib finds in the photos (repeated if there are fewer)."""
    detector = dlib.get_frontal_face_detector()
    models = zoo.weights_path(None, "dlib-resnet").parent
    landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    chips: list[np.ndarray] = []
    for photo in sorted(p for p in faces_dir.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        with Image.open(photo) as im:
            img = np.asarray(im.convert("RGB"))
        for box in detector(img, 1):
            chips.append(dlib.get_face_chip(img, landmarks(img, box), size=150, padding=0.25))
        if len(chips) >= n:
            break
    if not chips:
        raise SystemExit(f"no faces found in {faces_dir}")
    return [chips[i % len(chips)] for i in range(n)]


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--faces", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed dlib runs (torch runs 5x as many)")
    args = parser.parse_args()

    chips = collect_chips(args.faces, N_CHIPS)
    reference = dlib.face_recognition_model_v1(str(zoo.weights_path(None, "dlib-resnet")))
    net = load_dlib_resnet(zoo.weights_path(None, "dlib-resnet"))
    batch = chips_to_tensor(np.stack(chips))

    def run_dlib() -> np.ndarray:
        return np.array(reference.compute_face_descriptor(chips), dtype=np.float32)  # aligned-chip batch call

    def run_torch() -> torch.Tensor:
        with torch.no_grad():
            return net(batch)

    # torch's first few calls are slow (allocator and oneDNN warm-up), so it gets more warm-up runs.
    t_dlib = median_seconds(run_dlib, args.repeats, warmup=1)
    t_torch = median_seconds(run_torch, 5 * args.repeats, warmup=5)
    max_diff = float(np.abs(run_dlib() - run_torch().numpy()).max())

    print(
        f"dlib face descriptor, {N_CHIPS} aligned 150x150 chips, median of {args.repeats} (dlib) "
        f"/ {5 * args.repeats} (torch) runs"
    )
    print(f"{'engine':<40}{'batch ms':>10}{'ms/image':>10}")
    print(
        f"{'dlib-bin ' + dlib.__version__ + ' compute_face_descriptor':<40}"
        f"{1e3 * t_dlib:>10.1f}{1e3 * t_dlib / N_CHIPS:>10.2f}"
    )
    print(
        f"{f'torch {torch.__version__} float32, {torch.get_num_threads()} threads':<40}"
        f"{1e3 * t_torch:>10.1f}{1e3 * t_torch / N_CHIPS:>10.2f}"
    )
    print(f"speed-up {t_dlib / t_torch:.1f}x (goal >= 10x); max |diff| vs dlib {max_diff:.1e}")


if __name__ == "__main__":
    main()
