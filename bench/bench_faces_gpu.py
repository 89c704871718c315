"""Face-model figures on a CUDA GPU: dlib-resnet torch vs dlib-bin, and ``synthdb embed`` vs bare forward.

Run it whenever a GPU is visible; on a CPU-only machine it says so and exits 0. Same measurements as
``bench_dlib_resnet.py`` and ``bench_embed.py``, with the torch side on ``cuda`` (dlib-bin has no GPU
path here and stays on the CPU; detection runs in the CPU worker processes as it does in production).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_embed  # noqa: E402 - the sibling benchmark, reused with device="cuda"
from bench_dlib_resnet import N_CHIPS, collect_chips, median_seconds  # noqa: E402

from synthdb import zoo  # noqa: E402
from synthdb.nets.dlib_resnet import chips_to_tensor, load_dlib_resnet  # noqa: E402


def dlib_vs_torch_cuda() -> None:
    import dlib

    chips = collect_chips(bench_embed.FACES, N_CHIPS)
    reference = dlib.face_recognition_model_v1(str(zoo.weights_path(None, "dlib-resnet")))
    net = load_dlib_resnet(zoo.weights_path(None, "dlib-resnet")).cuda()
    batch = chips_to_tensor(np.stack(chips)).cuda()

    def run_torch() -> None:
        with torch.no_grad():
            net(batch)
        torch.cuda.synchronize()

    t_dlib = median_seconds(lambda: reference.compute_face_descriptor(chips), 3, warmup=1)
    t_cuda = median_seconds(run_torch, 30, warmup=10)
    print(f"{'engine (32 chips)':<40}{'ms/image':>10}")
    print(f"{'dlib-bin (CPU)':<40}{1000 * t_dlib / N_CHIPS:>10.2f}")
    print(f"{'dlib-resnet torch on ' + torch.cuda.get_device_name():<40}{1000 * t_cuda / N_CHIPS:>10.3f}")
    print(f"speed-up {t_dlib / t_cuda:.0f}x (goal >= 10x)")


def main() -> None:
    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU visible (run this benchmark on a GPU machine)")
        return
    dlib_vs_torch_cuda()
    bench_embed.main(device="cuda")


if __name__ == "__main__":
    main()
