"""Langevin throughput (issue 6 benchmark), CPU or GPU, one process (Dispersion: bench_dispersion.py).

One Langevin iteration for ``--identities`` (256) references. synthdb's batched step: one forward
pass holding the graph and one backward (default), and the memory-bounded mode (a no-grad pass,
then one backward per batch of ``--batch-size``); others' embeddings detached in both. Baseline:
the reference package's loop (the same no-grad pass, then one forward+backward per identity).
Same models, same latents; goal: batched >= 4x faster. Also checks they give the same force.

Models: stylegan2-tiny (UNTRAINED, 64 px) + dlib-resnet by default; ``--generator`` names another.
"""

from __future__ import annotations

import argparse
import time

import torch

from synthdb.generate.pipeline import Pipeline, load_pipeline
from synthdb.generate.references import LangevinParams, ReferenceParams, langevin_step, repulsion_potential


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
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    lp = LangevinParams(repulsion_radius=0.5)
    params = ReferenceParams(
        name="bench", num_identities=args.identities, generator=args.generator, batch_size=args.batch_size,
        device=args.device, langevin=lp,
    ).resolved()  # fmt: skip
    pipeline = load_pipeline(None, params)
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


if __name__ == "__main__":
    main()
