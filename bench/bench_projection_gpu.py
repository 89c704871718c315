"""Projection throughput on a CUDA GPU (issue 9 benchmark): optimisation steps/s of a full-size 256 px
StyleGAN2 (config F shape, random weights from a fixed seed: no face generator weights are available
here, and speed does not depend on them) with dlib-resnet features, batch 1 vs batch 16 targets.

Exits 0 with a message when no CUDA GPU is visible, so ``make bench`` passes on CPU-only machines.
``--device cpu --batch 2 --steps 2 --resolution 32`` runs the same code path on a CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import time

import torch
from gpu_common import random_generator, sync

from synthdb import zoo
from synthdb.latent.project import ProjectionParams, Projector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_projection_gpu: no CUDA GPU visible, skipped (run it on a GPU machine)")
        return
    torch.backends.cudnn.benchmark = True
    generator = random_generator("stylegan2", args.resolution, device, channel_base=16384)
    embedder = zoo.embedder(None, "dlib-resnet", device)
    projector = Projector(generator, embedder, ProjectionParams(name="bench", images=["-"], steps=args.steps))
    z = torch.randn(args.batch, 512, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        targets = generator.synthesis(generator.mapping(z, truncation_psi=0.7))
    keys = [f"t{i}" for i in range(args.batch)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{generator.describe()} + dlib-resnet on {name}, torch {torch.__version__}, {args.steps} steps")
    print(f"{'targets per call':<18} {'steps/s':>9} {'target-steps/s':>15}")
    rates = {}
    for batch in sorted({1, args.batch}):
        projector.project(targets[:batch], keys[:batch])  # warm-up (cuDNN autotuning)
        sync(device)
        start = time.perf_counter()
        projector.project(targets[:batch], keys[:batch])
        sync(device)
        steps = args.steps / (time.perf_counter() - start)
        rates[batch] = steps * batch
        print(f"{batch:<18} {steps:>9.2f} {steps * batch:>15.2f}")
    print(f"ratio batch {args.batch} / batch 1 (target-steps/s): {rates[args.batch] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
