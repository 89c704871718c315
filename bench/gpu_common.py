"""What the GPU benchmarks share: full-size random-initialised generators, and a CUDA-aware stopwatch.

No face generator weights ship with synthdb, so GPU throughput is measured on networks of the released
sizes with random weights (the arithmetic is the same). Imported by the ``bench_*_gpu.py`` scripts, which
run as ``python bench/SCRIPT.py`` (this folder is then on ``sys.path``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from synthdb.nets.generator import Generator
from synthdb.nets.stylegan2 import StyleGAN2Generator
from synthdb.nets.stylegan3 import StyleGAN3Generator

#: NVIDIA's FFHQ configurations (StyleGAN2 config F; StyleGAN3-T), without resolution and channel base.
CONFIGS = {
    "stylegan2": (StyleGAN2Generator, {"mapping_kwargs": {"num_layers": 8}}),
    "stylegan3-t": (StyleGAN3Generator, {"mapping_kwargs": {"num_layers": 2}}),
}


def random_generator(arch: str, resolution: int, device: torch.device, channel_base: int) -> Generator:
    """A full-size network with seeded random weights; ``w_avg`` is the mean w of 4096 random z, so
    truncation pulls towards a real centre. The global RNG is left untouched."""
    network_class, extra = CONFIGS[arch]
    kwargs = {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_channels": 3, "channel_max": 512, **extra}
    kwargs.update(img_resolution=resolution, channel_base=channel_base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = network_class(**kwargs)
        with torch.no_grad():
            network.mapping.w_avg.copy_(network.mapping(torch.randn(4096, 512), None)[:, 0].mean(0))
    name = f"{arch}-{resolution}-random"
    return Generator(network, arch, kwargs, name=name, untrained=True).to(device)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(run: Callable[[], object], batch: int, iters: int, device: torch.device) -> float:
    """Items per second of ``run`` (``batch`` items per call): the median of 3 timings of ``iters`` calls."""
    rates = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            run()
        sync(device)
        rates.append(batch * iters / (time.perf_counter() - start))
    return statistics.median(rates)
