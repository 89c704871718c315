"""Generator synthesis throughput on the CPU: batch 1 vs batch 32 (goal: batching pays off, ratio > 1).

Every untrained tiny StyleGAN configuration (``stylegan2-tiny``, ``stylegan3-tiny``, ``stylegan3-r-tiny``:
64x64, random weights from a fixed seed) synthesises 64 images from fixed w, under ``torch.inference_mode``
with constant noise, once image by image and once in batches of 32. Images/s is the median of three passes
after a warm-up (oneDNN builds its kernels on the first call of every shape). Generators that render from a
camera (``eg3d-tiny``) have their own benchmark, ``bench_eg3d.py``.
"""

from __future__ import annotations

import statistics
import time

import torch

from synthdb.nets.generator import ARCHITECTURES, TINY, Generator

IMAGES = 64
BATCHES = (1, 32)


def images_per_second(generator: Generator, w: torch.Tensor, batch: int, repeats: int = 3) -> float:
    rates = []
    with torch.inference_mode():
        generator.synthesis(w[:batch])
        for _ in range(repeats):
            start = time.perf_counter()
            for chunk in w.split(batch):
                generator.synthesis(chunk)
            rates.append(len(w) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    print(f"CPU synthesis, {IMAGES} images, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'generator':<16} {'batch':>5} {'images/s':>9}")
    for name, config in TINY.items():
        if ARCHITECTURES[config.architecture].synthesis_takes_c:
            print(f"{name:<16} renders from a camera: see bench_eg3d.py")
            continue
        generator = Generator.load(name)
        w = generator.mapping(
            torch.randn(IMAGES, generator.z_dim, generator=torch.Generator().manual_seed(0))
        )
        rates = {batch: images_per_second(generator, w, batch) for batch in BATCHES}
        for batch, rate in rates.items():
            print(f"{name:<16} {batch:>5} {rate:>9.1f}")
        ratio = rates[BATCHES[-1]] / rates[BATCHES[0]]
        verdict = "batching pays off" if ratio > 1 else "BATCHING DOES NOT PAY OFF"
        print(f"{name:<16} batch {BATCHES[-1]} / batch {BATCHES[0]}: x{ratio:.2f} ({verdict})")


if __name__ == "__main__":
    main()
