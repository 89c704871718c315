"""EG3D rendering throughput on the CPU: batch 1 vs batch 16 (goal: batching pays off, ratio > 1).

The untrained ``eg3d-tiny`` configuration (64x64 from 32x32 rays, 12 + 12 samples per ray, 32x32 tri-planes;
random weights from a fixed seed) renders 16 images from fixed w and one fixed camera, under
``torch.inference_mode`` with constant noise (deterministic ray sampling), once image by image and once as
one batch. Images/s is the median of three passes after a warm-up.
"""

from __future__ import annotations

import statistics
import time

import torch

from synthdb.nets.generator import Generator

IMAGES = 16
BATCHES = (1, 16)


def images_per_second(generator: Generator, w: torch.Tensor, c: torch.Tensor, batch: int) -> float:
    rates = []
    with torch.inference_mode():
        generator.render(w[:batch], c)
        for _ in range(3):
            start = time.perf_counter()
            for chunk in w.split(batch):
                generator.render(chunk, c)
            rates.append(len(w) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    print(
        f"CPU EG3D rendering, {IMAGES} images, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    generator = Generator.load("eg3d-tiny")
    c = generator.camera(yaw_deg=15)
    z = torch.randn(IMAGES, generator.z_dim, generator=torch.Generator().manual_seed(0))
    w = generator.mapping(z, generator.camera())
    rates = {batch: images_per_second(generator, w, c, batch) for batch in BATCHES}
    for batch, rate in rates.items():
        print(f"eg3d-tiny batch {batch:>2}: {rate:7.2f} images/s")
    ratio = rates[BATCHES[-1]] / rates[BATCHES[0]]
    verdict = "batching pays off" if ratio > 1 else "BATCHING DOES NOT PAY OFF"
    print(f"eg3d-tiny batch {BATCHES[-1]} / batch {BATCHES[0]}: x{ratio:.2f} ({verdict})")


if __name__ == "__main__":
    main()
