"""Generation at full size on a CUDA GPU (issue 6): one Langevin iteration and one Dispersion step with a
full-size StyleGAN2-256 (FFHQ-256 shape: 8 mapping layers, 14 w rows, up to 512 channels; random weights
from a fixed seed, since speed does not depend on them) and the dlib-resnet embedder.

Prints seconds per Langevin iteration for ``--identities`` (256) references in both modes (whole graph,
the default; and the memory-bounded no-grad pass + one backward per batch), identities/s, and seconds per
Dispersion step for ``--disp-identities`` (16) x ``--disp-variations`` (16) latents; medians of
``--repeats`` (3) after a warm-up, with peak GPU memory. Baseline: one Langevin iteration's reference
loop (one identity per forward+backward) on the first ``--loop-identities`` (32), scaled to N.

Exits 0 with a message when no CUDA GPU is visible, so ``make bench`` passes on CPU-only machines;
``--device cpu --resolution 32 --identities 8 --disp-identities 2 --disp-variations 4`` smoke-tests it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from gpu_common import random_generator

from synthdb import defaults, zoo
from synthdb.generate.pipeline import Pipeline
from synthdb.generate.references import LangevinParams, ReferenceParams, langevin_step, repulsion_potential
from synthdb.generate.variations import VariationParams, dispersion_unit


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def loop_iteration(pipeline: Pipeline, w: torch.Tensor, r0: float) -> None:
    """The reference's gradient pass: all embeddings without gradient, then one identity at a time."""
    fixed = pipeline.embed(w)
    for i in range(len(w)):
        wi = w[i : i + 1].clone().requires_grad_(True)
        u = repulsion_potential(pipeline.forward(wi), slice(i, i + 1), fixed, 1.0, r0, None, 0.0)
        torch.autograd.grad(u, wi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--identities", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--loop-identities", type=int, default=32)
    ap.add_argument("--disp-identities", type=int, default=16)
    ap.add_argument("--disp-variations", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_generate_gpu: no CUDA GPU visible, skipped (run it on a GPU machine)")
        return
    torch.backends.cudnn.benchmark = True
    generator = random_generator("stylegan2", args.resolution, device, channel_base=16384)
    pipeline = Pipeline(generator, zoo.embedder(None, defaults.EMBEDDER, device), args.batch_size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{pipeline.generator.describe()} + {pipeline.embedder.name} on {name}, torch {torch.__version__}")
    z = torch.randn(args.identities, 512, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        w = pipeline.generator.mapping(z, truncation_psi=0.7)
    params = ReferenceParams(
        name="bench", num_identities=args.identities, batch_size=args.batch_size, device=args.device,
        generator=generator.name, langevin=LangevinParams(repulsion_radius=1.4),
    ).resolved()  # fmt: skip
    n = args.identities
    rows = []
    for whole in (True, False):
        params.langevin.whole_graph = whole
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed(lambda: langevin_step(pipeline, w, 0, params, None), device, args.repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        rows.append(
            (f"langevin iteration, {'whole graph' if whole else 'bounded'}", seconds, n / seconds, peak)
        )
    k = min(args.loop_identities, n)
    loop = timed(lambda: loop_iteration(pipeline, w[:k], 1.4), device, 1) * n / k
    rows.append((f"reference loop (from {k} identities)", loop, n / loop, float("nan")))
    m = args.disp_identities * args.disp_variations
    vp = VariationParams(
        name="b", references="r", num_variations=args.disp_variations, iterations=1, generator=generator.name
    ).resolved()
    refs_w, labels = w[: args.disp_identities], [f"{i:05d}" for i in range(args.disp_identities)]
    refs_e = pipeline.embed(refs_w)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # one dispersion_unit call at 1 iteration = one gradient step + the final embedding pass
    step = timed(lambda: dispersion_unit(pipeline, vp, labels, refs_w, refs_e, None), device, args.repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    rows.append((f"dispersion step, {args.disp_identities}x{args.disp_variations}", step, m / step, peak))
    head = f"N={n}, batch {args.batch_size}"
    print(f"{head:<40} {'seconds':>9} {'latents/s':>10} {'peak GiB':>9}")
    for label, seconds, rate, peak in rows:
        print(f"{label:<40} {seconds:>9.3f} {rate:>10.1f} {peak:>9.2f}")
    print(f"langevin speed-up vs the reference loop: {loop / rows[0][1]:.1f}x (whole graph)")


if __name__ == "__main__":
    main()
