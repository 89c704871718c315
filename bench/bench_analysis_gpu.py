"""Identity-analysis figures on a CUDA GPU (skips cleanly without one), one process, ratios printed.

1. Inter/intra histogram of 640,000 x 512 embeddings (10,000 identities x 64; 2.05e11 pairs) with
   ``histogram.scan`` on the GPU, vs the bare GEMM for the same pairs (our GPU panels, no binning).
2. Nearest identity at 1,000,000 references x 512: 10,000 queries through synthdb's ``Searcher`` on an
   exact (Flat) index - on the GPU when faiss-gpu is installed, else FAISS on the CPU, said in the output -
   vs a bare torch matrix product + top-k on the GPU.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

# isort: off
import synthdb  # noqa: F401 - before FAISS: it names OpenBLAS's kernels (synthdb/openblas.py)
import faiss

# isort: on

from synthdb.analysis.histogram import GPU_TILE, scan
from synthdb.analysis.index import Searcher, gpu_count
from synthdb.analysis.vectors import normalized


def faces_like(
    identities: int, per: int, dims: int, rng: np.random.Generator, noise: float = 0.9
) -> np.ndarray:
    basis = rng.standard_normal((32, dims)) / math.sqrt(32)
    centres = normalized((rng.standard_normal((identities, 32)) @ basis).astype(np.float32))
    out = np.repeat(centres, per, axis=0)
    out += (noise / math.sqrt(dims) * rng.standard_normal(out.shape)).astype(np.float32)
    return out


def bare_gemm(unit: torch.Tensor) -> float:
    rows, cols = GPU_TILE
    buffer = torch.empty(rows * cols, device=unit.device)
    torch.cuda.synchronize()
    start = time.perf_counter()
    n = len(unit)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        panel = unit[r0:r1]
        torch.mm(panel, unit[r0:r1].T, out=buffer[: (r1 - r0) ** 2].view(r1 - r0, r1 - r0))
        for c0 in range(r1, n, cols):
            c1 = min(n, c0 + cols)
            torch.mm(panel, unit[c0:c1].T, out=buffer[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0))
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    if not torch.cuda.is_available():
        print("skipped: torch sees no CUDA GPU (the CPU figures are in bench_analysis.py)")
        return
    torch.backends.cuda.matmul.allow_tf32 = False  # exact float32 products, as on the CPU
    rows: list[tuple[str, str]] = [("device", torch.cuda.get_device_name())]
    rng = np.random.default_rng(0)
    x = faces_like(10_000, 64, 512, rng)
    ids = np.repeat(np.arange(10_000), 64)
    floor = bare_gemm(torch.from_numpy(normalized(x)).cuda())
    scan(x[:20_000], ids[:20_000], device="cuda")  # warm up kernels and caches
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = scan(x, ids, device="cuda")
    torch.cuda.synchronize()
    ours = time.perf_counter() - start
    inter, intra = result.histogram(result.inter), result.histogram(result.intra)
    n = len(x)
    assert inter.pairs + intra.pairs == n * (n - 1) // 2
    rows += [
        ("histogram 640k x 512", f"{inter.pairs:,} inter + {intra.pairs:,} intra pairs, 1024 bins"),
        ("  ours (scan on cuda)", f"{ours:.2f} s ({inter.pairs / ours / 1e9:.1f} G pairs/s)"),
        ("  bare GEMM, same pairs", f"{floor:.2f} s -> ours {ours / floor:.2f}x of it"),
        ("  edge pairs (bound)", f"{inter.edge_pairs + intra.edge_pairs:,}"),
    ]
    del result
    refs = normalized(faces_like(1_000_000, 1, 512, np.random.default_rng(1), noise=0.35))
    queries = normalized(faces_like(10_000, 1, 512, np.random.default_rng(2), noise=0.35))
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(512))
    flat.add_with_ids(refs, np.arange(len(refs), dtype=np.int64))
    searcher = Searcher(flat)
    searcher.search(queries[:100], 5)
    start = time.perf_counter()
    _, found = searcher.search(queries, 5)
    faiss_time = time.perf_counter() - start
    where = "GPU" if gpu_count() else "CPU (faiss-cpu: install faiss-gpu for the GPU path)"
    refs_gpu, queries_gpu = torch.from_numpy(refs).cuda(), torch.from_numpy(queries).cuda()
    torch.cuda.synchronize()
    start = time.perf_counter()
    best = torch.cat([(q @ refs_gpu.T).topk(5, dim=1).indices for q in queries_gpu.split(2048)])
    torch.cuda.synchronize()
    torch_time = time.perf_counter() - start
    agree = float(np.mean(best[:, 0].cpu().numpy() == found[:, 0]))
    rows += [
        ("nearest 10k vs 1M x 512, exact", f"synthdb Searcher (FAISS on {where}) {faiss_time:.2f} s"),
        (
            "  bare torch mm + topk on cuda",
            f"{torch_time:.2f} s -> Searcher {faiss_time / torch_time:.2f}x of it; "
            f"top-1 agreement {agree:.4f}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
