"""Projection throughput on CPU (issue 9 benchmark): target-steps/s projecting one target at a time
vs 16 targets together, one process.

Baseline: the reference projector's batch of 1, here the same code called once per target. Batched:
the 16 targets in one call (each keeps its own latent, noise and draws). Same targets, same steps,
same losses (dlib-resnet features + pixels + noise regulariser). Goal: batched pays off (ratio > 1).
Models: stylegan2-tiny (UNTRAINED, 64 px) + dlib-resnet. W statistics are computed once, outside the
timing.
"""

from __future__ import annotations

import argparse
import time

import torch

from synthdb import zoo
from synthdb.latent.project import ProjectionParams, Projector
from synthdb.nets.generator import Generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    generator = Generator.tiny("stylegan2-tiny").to(args.device)
    embedder = zoo.embedder(None, "dlib-resnet", args.device)
    params = ProjectionParams(name="bench", images=["-"], steps=args.steps, w_avg_samples=10000)
    projector = Projector(generator, embedder, params)
    z = torch.randn(args.targets, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        targets = generator.synthesis(generator.mapping(z.to(args.device), truncation_psi=0.7))
    keys = [f"t{i}" for i in range(args.targets)]
    projector.project(targets[:2], keys[:2])  # warm-up (allocator, oneDNN kernels)

    start = time.perf_counter()
    for i in range(args.targets):
        projector.project(targets[i : i + 1], keys[i : i + 1])
    one = args.targets * args.steps / (time.perf_counter() - start)
    start = time.perf_counter()
    projector.project(targets, keys)
    batched = args.targets * args.steps / (time.perf_counter() - start)

    print(f"{generator.describe()} + dlib-resnet, {args.targets} targets x {args.steps} steps, {args.device}")
    print(f"{'mode':<28} {'target-steps/s':>15}")
    print(f"{'batch 1 (baseline)':<28} {one:>15.2f}")
    print(f"{f'batch {args.targets}':<28} {batched:>15.2f}")
    print(f"ratio batched / batch 1: {batched / one:.2f}x (goal > 1)")


if __name__ == "__main__":
    main()
