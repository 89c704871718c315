"""Name OpenBLAS's kernels for CPUs its bundled copies are too old to know, before FAISS loads.

faiss-cpu wheels bundle their own OpenBLAS (0.3.15 in faiss-cpu 1.15), which does not recognise CPUs
released after it (Intel Sapphire Rapids and later, AMD Zen 4) and falls back to its SSE3 "Prescott"
kernels. On such a CPU an exact ``IndexFlatIP.search`` of 1,000 x 512 queries against 200,000 vectors took
6.4 s instead of 1.3 s: every ``check nearest`` and index calibration ran 5x slower than the hardware
allows. OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when it loads, so synthdb sets it at import (unless the
user set it) to the newest kernel family those copies know that the CPU's instruction set runs:
SkylakeX for AVX-512, Haswell for AVX2 with FMA. A newer OpenBLAS loaded later in the process (numpy's)
reads the variable too; on these CPUs it picks the same families itself (AMD's Zen family reuses the
Haswell kernels), so its speed does not change.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

AVX512 = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
AVX2 = frozenset({"avx2", "fma"})


def core_for(flags: set[str] | frozenset[str]) -> str | None:
    """The OpenBLAS core type for an x86-64 CPU with these ``/proc/cpuinfo`` flags; None: leave it to
    OpenBLAS (a CPU without AVX2, which old copies handle as well as new ones)."""
    if flags >= AVX512:
        return "SKYLAKEX"
    if flags >= AVX2:
        return "HASWELL"
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of the first CPU (empty where ``/proc/cpuinfo`` is missing: not Linux)."""
    try:
        with cpuinfo.open() as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def choose_kernels() -> str | None:
    """Set ``OPENBLAS_CORETYPE`` for this process and its children unless it is set or the CPU is not
    x86-64; return the value in force."""
    if "OPENBLAS_CORETYPE" not in os.environ and platform.machine().lower() in ("x86_64", "amd64"):
        core = core_for(cpu_flags())
        if core is not None:
            os.environ["OPENBLAS_CORETYPE"] = core
    return os.environ.get("OPENBLAS_CORETYPE")
