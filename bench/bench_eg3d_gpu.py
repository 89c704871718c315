"""Full-size EG3D-512 rendering throughput on a CUDA GPU: fp32 vs bf16 autocast, eager vs torch.compile.

The network is the released FFHQ 512-128 architecture (:data:`synthdb.nets.eg3d.FFHQ_512`: 256 px tri-planes,
128x128 rays with 48 + 48 samples, 8XDC superresolution to 512 px) with random weights from a fixed seed: no
EG3D weights are available here, and speed does not depend on them. Rendering only (w, camera -> image and
depth), constant noise and deterministic ray sampling, ``torch.inference_mode``, fixed batch; images/s is
the median of three timed passes after warm-up (and after compilation, whose time is reported separately).
The compiled and bf16 images and depths are compared with eager fp32 (max abs difference; images span about
[-1, 1], depths 2.25 to 3.3). fp32 means torch's defaults: cuDNN convolutions may use TF32.

Exits 0 with a message when no CUDA GPU is visible, so ``make bench`` passes on CPU-only machines.
``--device cpu --small --batch 1`` runs the same code path on a CPU with the tiny configuration (a smoke
test).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from gpu_common import measure, sync

from synthdb.nets import eg3d
from synthdb.nets.generator import Generator


def build(small: bool, device: torch.device) -> Generator:
    if small:
        return Generator.load("eg3d-tiny").to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = eg3d.EG3DGenerator(**eg3d.FFHQ_512)
    return Generator(network, "eg3d", eg3d.FFHQ_512, name="eg3d-512-random", untrained=True).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="eg3d-tiny instead of the full-size network.")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="Eager only (no torch.compile rows).")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_eg3d_gpu: no CUDA GPU visible, skipped (run it on a GPU machine)")
        return
    torch.backends.cudnn.benchmark = True
    generator = build(args.small, device)
    z = torch.randn(args.batch, 512, generator=torch.Generator().manual_seed(1)).to(device)
    c = generator.camera(yaw_deg=20).expand(args.batch, -1)
    with torch.inference_mode():
        w = generator.mapping(z, generator.camera(), truncation_psi=0.7, w_plus=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{generator.describe()} on {name}, torch {torch.__version__}, batch {args.batch}")
    print(f"{'mode':<22} {'images/s':>9} {'warm-up s':>10} {'max |diff| image':>17} {'max |diff| depth':>17}")

    network = generator.network

    def render(w: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = network.render(w, c)
        return out.image, out.depth

    rows: list[tuple[str, Callable[..., tuple[torch.Tensor, torch.Tensor]], bool]] = [
        ("eager fp32", render, False),
        ("eager bf16 autocast", render, True),
    ]
    if not args.no_compile:
        compiled = torch.compile(render)
        rows += [("compiled fp32", compiled, False), ("compiled bf16 autocast", compiled, True)]
    reference = None
    for label, fn, bf16 in rows:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

        def run(
            fn: Callable[..., tuple[torch.Tensor, torch.Tensor]] = fn, autocast: object = autocast
        ) -> tuple:
            with torch.inference_mode(), autocast:
                return fn(w, c)

        sync(device)
        start = time.perf_counter()
        image, depth = run()
        run()
        sync(device)
        warmup = time.perf_counter() - start
        image, depth = image.float(), depth.float()
        reference = (image, depth) if reference is None else reference
        diff_image = (image - reference[0]).abs().max().item()
        diff_depth = (depth - reference[1]).abs().max().item()
        rate = measure(run, args.batch, args.iters, device)
        print(f"{label:<22} {rate:>9.2f} {warmup:>10.1f} {diff_image:>17.2e} {diff_depth:>17.2e}")


if __name__ == "__main__":
    main()
