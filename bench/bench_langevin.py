"""Langevin throughput (issue 6 benchmark, issue 20 robustness), CPU or GPU, one process.

One Langevin iteration for N identities. synthdb's batched step: one forward pass holding the graph
of all N and one backward (default, "whole graph"), and the memory-bounded mode (a no-grad pass, then
one forward+backward per batch of ``--batch-size``); others' embeddings detached in both. Baseline: the
reference package's loop (the same no-grad pass, then one forward+backward per identity). Same models,
same latents; goal: whole graph >= 4x faster than the loop. Also checks they give the same force.

Rounds are interleaved (whole graph, bounded, loop, whole graph, ...: see ``timing.py``), so a
neighbour's burst lands on all three; medians and spreads are printed and the run exits 2 when the
spread makes a ratio meaningless. Cases are ``GENERATOR[:N]``; the default runs three:
- ``stylegan2-tiny:256`` (UNTRAINED, 64 px), the issue's figure;
- ``dcgan-digiface:256``, the trained generator that ships with synthdb (64 px);
- ``stylegan2-256:16``, the full-size StyleGAN2 FFHQ-256 architecture with seeded random weights (the
  arithmetic of the real network; its weights are not needed for timing). N is small by default: the
  whole graph of 256 such images does not fit in a 2-core box's memory, and the loop takes minutes.
Embedder: dlib-resnet (``--embedder``). ``--quick``: N=2, batches of 2, 2 rounds, the two 64-px generators
unless cases are named (a smoke run of seconds; its ratios mean nothing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import random_generator  # noqa: E402
from timing import add_arguments, environment, info, judge, measure, verdict  # noqa: E402

from synthdb import defaults, zoo  # noqa: E402
from synthdb.generate.pipeline import Pipeline  # noqa: E402
from synthdb.generate.references import (  # noqa: E402
    LangevinParams,
    ReferenceParams,
    langevin_step,
    repulsion_potential,
)
from synthdb.nets.generator import Generator  # noqa: E402

CASES = ("stylegan2-tiny:256", "dcgan-digiface:256", "stylegan2-256:16")
#: Full-size architectures timed with random weights: name -> (architecture, resolution, channel base);
#: 16384 is NVIDIA's 256-px FFHQ configuration (as in ``bench_generate_gpu.py``).
RANDOM = {"stylegan2-256": ("stylegan2", 256, 16384)}
QUICK = ("stylegan2-tiny", "dcgan-digiface")
GOAL = 4.0


def reference_loop_forces(pipeline: Pipeline, w: torch.Tensor, lp: LangevinParams) -> torch.Tensor:
    """The reference's gradient pass: all embeddings without gradient, then one identity at a time."""
    fixed = pipeline.embed(w)
    forces = []
    for i in range(len(w)):
        wi = w[i : i + 1].clone().requires_grad_(True)
        u = repulsion_potential(
            pipeline.forward(wi),
            slice(i, i + 1),
            fixed,
            lp.repulsion_coefficient,
            lp.repulsion_radius,
            None,
            0.0,
        )
        (grad,) = torch.autograd.grad(u, wi)
        forces.append(-grad)
    return torch.cat(forces)


def load_generator(name: str, device: torch.device) -> Generator:
    """A model card or tiny configuration through the zoo; a full-size name of :data:`RANDOM` built with
    seeded random weights (timing does not depend on the weights)."""
    if name in RANDOM:
        arch, resolution, channel_base = RANDOM[name]
        return random_generator(arch, resolution, device, channel_base)
    return zoo.generator(None, name, device)


def force_difference(pipeline: Pipeline, w: torch.Tensor, lp: LangevinParams) -> float:
    """Relative difference of the whole-graph force and the loop's: the speed-up is for the same force."""
    loop = reference_loop_forces(pipeline, w, lp)
    k, r0 = lp.repulsion_coefficient, lp.repulsion_radius
    _, grad = pipeline.coupled_gradient(
        w, lambda e, fixed: repulsion_potential(e, slice(0, len(e)), fixed, k, r0, None, 0.0)
    )
    return float((-grad - loop).norm() / loop.norm().clamp_min(1e-12))


def bench_case(
    generator: Generator, embedder: str, n: int, args: argparse.Namespace, sync: Callable[[], None]
) -> bool:
    """One generator: the three modes interleaved, their ratios to the loop; True when the goal is met."""
    dev = generator.device
    pipeline = Pipeline(generator, zoo.embedder(None, embedder, dev), args.batch_size)
    whole = ReferenceParams(
        name="bench", num_identities=n, generator=generator.name, embedder=embedder,
        batch_size=args.batch_size, device=str(dev), langevin=LangevinParams(repulsion_radius=0.5),
    ).resolved()  # fmt: skip
    lp = whole.langevin
    bounded = replace(whole, langevin=replace(lp, whole_graph=False))
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(0)).to(dev)
    with torch.no_grad():
        w = generator.mapping(z, truncation_psi=0.7).detach()
    print(f"\n{generator.describe()} + {pipeline.embedder.name}, N={n}, batch {args.batch_size}, {dev}")
    timings = measure(
        {
            "batched, whole graph": lambda: langevin_step(pipeline, w, 0, whole, None),
            "batched, bounded": lambda: langevin_step(pipeline, w, 0, bounded, None),
            "reference loop (1 per pass)": lambda: reference_loop_forces(pipeline, w, lp),
        },
        args,
        n,
        "identities/s",
        sync,
    )
    full, low_memory, loop = timings.values()
    met = judge(full, loop, GOAL, faster=True)
    info(f"{low_memory.name}: {loop.median / low_memory.median:.2f}x faster than {loop.name}")
    info(f"force relative difference, whole graph vs loop: {force_difference(pipeline, w, lp):.1e}")
    return met


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("cases", nargs="*", default=list(CASES), help="GENERATOR[:N] [%(default)s]")
    ap.add_argument("--embedder", default=defaults.EMBEDDER)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    if args.quick:  # seconds: two tiny cases unless named (``--quick stylegan2-256`` smokes the big one)
        args.batch_size, args.rounds = 2, 2
        args.cases = [case for case in args.cases if case not in CASES] or list(QUICK)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"Langevin iteration, whole graph vs the reference loop; {environment()}", flush=True)
    results = []
    for case in args.cases:
        name, _, count = case.partition(":")
        n = 2 if args.quick else int(count or 256)
        results.append(bench_case(load_generator(name, dev), args.embedder, n, args, sync))
    verdict(results)


if __name__ == "__main__":
    main()
