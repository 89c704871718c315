"""Langevin and Dispersion throughput (issue 6 benchmarks), CPU or GPU, one process.

1. One Langevin iteration for ``--identities`` (256) references. synthdb's batched step: one forward
   pass holding the graph and one backward (default), and the memory-bounded mode (a no-grad pass,
   then one backward per batch of ``--batch-size``); others' embeddings detached in both. Baseline:
   the reference package's loop (the same no-grad pass, then one forward+backward per identity).
   Same models, same latents; goal: batched >= 4x faster. Also checks they give the same force.
2. Dispersion: variations/s for ``--disp-identities`` (64) x ``--disp-variations`` (16) over
   ``--disp-iterations`` iterations, at batch sizes 8 and 64.

Models: stylegan2-tiny (UNTRAINED, 64 px) + dlib-resnet by default; ``--generator`` names another.
"""

from __future__ import annotations

import argparse
import time

import torch

from synthdb.generate.pipeline import Pipeline
from synthdb.generate.references import (
    LangevinParams,
    ReferenceParams,
    langevin_step,
    load_pipeline,
    repulsion_potential,
)
from synthdb.generate.variations import VariationParams, dispersion_unit


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


def timed(fn, sync) -> tuple[float, object]:  # noqa: ANN001
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="stylegan2-tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--identities", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--disp-identities", type=int, default=64)
    ap.add_argument("--disp-variations", type=int, default=16)
    ap.add_argument("--disp-iterations", type=int, default=1)
    ap.add_argument("--skip-dispersion", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    lp = LangevinParams(repulsion_radius=0.5)
    params = ReferenceParams(
        name="bench", num_identities=args.identities, generator=args.generator, batch_size=args.batch_size,
        device=args.device, langevin=lp,
    )  # fmt: skip
    pipeline = load_pipeline(params)
    w = pipeline.w_avg + 0.7 * (
        pipeline.generator.mapping(
            torch.randn(
                args.identities, pipeline.generator.z_dim, generator=torch.Generator().manual_seed(0)
            ).to(dev)
        )
        - pipeline.w_avg
    )
    w = w.detach()
    print(f"device {dev}, {pipeline.generator.describe()}, {pipeline.embedder.name}")
    print(f"torch threads {torch.get_num_threads()}")
    langevin_step(pipeline, w[: args.batch_size], 0, params, None)  # warm-up
    t_batched, _ = timed(lambda: langevin_step(pipeline, w, 0, params, None), sync)
    lp.whole_graph = False
    t_bounded, _ = timed(lambda: langevin_step(pipeline, w, 0, params, None), sync)
    t_loop, loop_forces = timed(lambda: reference_loop_forces(pipeline, w, lp), sync)
    fixed = pipeline.embed(w)
    _, grad = pipeline.gradient(
        w, lambda e, rows: repulsion_potential(e, rows, fixed, 1.0, lp.repulsion_radius, None, 0.0)
    )
    agree = float((-grad - loop_forces).norm() / loop_forces.norm().clamp_min(1e-12))
    print(f"{'langevin iteration, N=' + str(args.identities):<40} {'seconds':>10}")
    print(f"{'batched, whole graph (default)':<40} {t_batched:>10.2f}")
    print(f"{'batched, no-grad pass + batch ' + str(args.batch_size):<40} {t_bounded:>10.2f}")
    print(f"{'reference loop (1 identity per pass)':<40} {t_loop:>10.2f}")
    print(f"speed-up {t_loop / t_batched:.2f}x whole graph, {t_loop / t_bounded:.2f}x bounded (goal >= 4x)")
    print(f"force relative difference batched vs loop {agree:.1e}")
    if args.skip_dispersion:
        return
    refs_w = w[: args.disp_identities]
    refs_e = pipeline.embed(refs_w)
    labels = [f"{i:05d}" for i in range(args.disp_identities)]
    n = args.disp_identities * args.disp_variations
    print(
        f"\ndispersion {args.disp_identities} x {args.disp_variations}, {args.disp_iterations} iteration(s)"
    )
    for batch in (8, 64):
        pipeline.batch_size = batch
        vp = VariationParams(
            name="b", references="r", num_variations=args.disp_variations, iterations=args.disp_iterations,
            batch_size=batch,
        )  # fmt: skip
        seconds, _ = timed(lambda vp=vp: dispersion_unit(pipeline, vp, labels, refs_w, refs_e, None), sync)
        steps = n * args.disp_iterations
        print(f"batch {batch:>3}: {seconds:8.2f} s, {steps / seconds:8.1f} variation-steps/s, "
              f"{n / seconds:8.2f} finished variations/s")  # fmt: skip


if __name__ == "__main__":
    main()
