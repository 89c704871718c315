"""Full-size StyleGAN2-1024 and StyleGAN3-T-1024 synthesis throughput on a CUDA GPU: fp32 vs bf16 autocast,
eager vs torch.compile.

The networks are StyleGAN2 config F and StyleGAN3-T at 1024x1024 (NVIDIA's FFHQ-1024 shapes: 18 w rows and
up to 512 channels; 16 w rows, 14 layers and up to 512 channels) with random weights from a fixed seed: no
face generator weights are available here, and speed does not depend on them. ``--arch`` picks one.
Synthesis only (w -> image), constant noise, ``torch.inference_mode``, fixed batch; images/s is the median
of three timed passes after warm-up (and after compilation, whose time is reported separately). The
compiled and bf16 outputs are compared with eager fp32 (max abs difference; images span about [-1, 1]).
fp32 means torch's defaults: cuDNN convolutions may use TF32.

Exits 0 with a message when no CUDA GPU is visible, so ``make bench`` passes on CPU-only machines.
``--device cpu --resolution 32 --batch 2`` runs the same code path on a CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from gpu_common import CONFIGS, measure, random_generator, sync

from synthdb.nets.generator import Generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="Eager only (no torch.compile rows).")
    parser.add_argument("--arch", choices=[*CONFIGS, "all"], default="all", help="Network(s) to measure.")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_generators_gpu: no CUDA GPU visible, skipped (run it on a GPU machine)")
        return
    torch.backends.cudnn.benchmark = True
    for arch in CONFIGS if args.arch == "all" else [args.arch]:
        bench(random_generator(arch, args.resolution, device, channel_base=32768), args, device)


def bench(generator: Generator, args: argparse.Namespace, device: torch.device) -> None:
    z = torch.randn(args.batch, 512, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        w = generator.mapping(z, truncation_psi=0.7, w_plus=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{generator.describe()} on {name}, torch {torch.__version__}, batch {args.batch}")
    print(f"{'mode':<22} {'images/s':>9} {'warm-up s':>10} {'max |diff| vs eager fp32':>25}")

    eager = generator.synthesis
    compiled = None if args.no_compile else torch.compile(generator.synthesis)
    reference = None
    rows = [("eager fp32", eager, False), ("eager bf16 autocast", eager, True)]
    if compiled is not None:
        rows += [("compiled fp32", compiled, False), ("compiled bf16 autocast", compiled, True)]
    for label, fn, bf16 in rows:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

        def run(fn: Callable[..., torch.Tensor] = fn, autocast: object = autocast) -> torch.Tensor:
            with torch.inference_mode(), autocast:
                return fn(w)

        sync(device)
        start = time.perf_counter()
        out = run()
        run()
        sync(device)
        warmup = time.perf_counter() - start
        out = out.float()
        reference = out if reference is None else reference
        diff = (out - reference).abs().max().item()
        rate = measure(run, args.batch, args.iters, device)
        print(f"{label:<22} {rate:>9.1f} {warmup:>10.1f} {diff:>25.2e}")


if __name__ == "__main__":
    main()
