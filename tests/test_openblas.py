"""OpenBLAS kernels named before FAISS loads its own copy (synthdb/openblas.py), as that copy reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synthdb.openblas import core_for, cpu_flags

# Imports synthdb then FAISS, and asks FAISS's bundled OpenBLAS which kernels it chose.
PROBE = """
import ctypes, json, os
import synthdb, faiss
paths = {p for p in open("/proc/self/maps").read().split() if "faiss" in p and "openblas" in p}
names = []
for path in sorted(paths):
    corename = ctypes.CDLL(path).openblas_get_corename
    corename.restype = ctypes.c_char_p
    names.append(corename().decode())
print(json.dumps({"set": os.environ.get("OPENBLAS_CORETYPE"), "faiss_openblas": names}))
"""


def _probe(env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout)


def _env_without_coretype() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}


def test_kernel_family_follows_the_instruction_set() -> None:
    avx2 = {"sse4_2", "avx", "avx2", "fma"}
    assert core_for(avx2 | {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}) == "SKYLAKEX"
    assert core_for(avx2 | {"avx512f"}) == "HASWELL"  # Knights Landing: AVX-512F without BW/VL
    assert core_for(avx2) == "HASWELL"
    assert core_for({"sse4_2", "avx"}) is None


def test_cpu_flags_are_read_from_the_first_processor(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_faiss_openblas_runs_the_kernels_the_cpu_supports() -> None:
    """On this CPU FAISS's OpenBLAS gets the family synthdb names, not the SSE3 fallback an unknown CPU
    gets (a 5x slower exact search on Sapphire Rapids)."""
    wanted = core_for(cpu_flags())
    seen = _probe(_env_without_coretype())
    if not seen["faiss_openblas"]:
        pytest.skip("this FAISS build does not bundle OpenBLAS")
    if wanted is None:
        pytest.skip("CPU without AVX2: OpenBLAS's own choice stands")
    assert seen["set"] == wanted
    assert [name.upper() for name in seen["faiss_openblas"]] == [wanted]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_a_users_own_choice_stands() -> None:
    seen = _probe({**_env_without_coretype(), "OPENBLAS_CORETYPE": "Haswell"})
    assert seen["set"] == "Haswell"
    if seen["faiss_openblas"]:
        assert [name.upper() for name in seen["faiss_openblas"]] == ["HASWELL"]
