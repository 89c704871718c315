"""Exact FAISS search with the OpenBLAS kernels synthdb names (synthdb/openblas.py) vs those FAISS's bundled
OpenBLAS picks by itself (goal: never slower; on a CPU newer than that OpenBLAS, several times faster).

``IndexFlatIP.search`` of 1,000 x 512 queries against 200,000 vectors, each candidate in a fresh process
(OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when it loads): "faiss alone" imports FAISS with the variable
unset, "synthdb first" imports synthdb, then FAISS. Rounds alternate between the two (see ``timing.py``);
each process prints the kernel family FAISS's OpenBLAS reports. ``--quick``: 200 queries vs 20,000.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import Timing, add_arguments, check_spread, environment, info, judge, verdict  # noqa: E402

CHILD = """
import ctypes, json, sys, time
import numpy as np
if sys.argv[1] == "synthdb":
    import synthdb  # noqa: F401
import faiss
queries, refs = int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
base = rng.standard_normal((refs, 512), dtype=np.float32)
index = faiss.IndexFlatIP(512)
index.add(base)
probe = base[:queries].copy()
index.search(probe[:64], 5)
start = time.perf_counter()
index.search(probe, 5)
seconds = time.perf_counter() - start
names = []
for path in sorted({p for p in open("/proc/self/maps").read().split() if "faiss" in p and "openblas" in p}):
    corename = ctypes.CDLL(path).openblas_get_corename
    corename.restype = ctypes.c_char_p
    names.append(corename().decode())
print(json.dumps({"seconds": seconds, "kernels": names}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    args = ap.parse_args()
    queries, refs = (200, 20_000) if args.quick else (1000, 200_000)
    print(f"IndexFlatIP.search {queries:,} x 512 vs {refs:,}; {environment()}", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    seen: dict[str, list[str]] = {}

    def child(mode: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(queries), str(refs)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        found = json.loads(out.stdout)
        seen[mode] = found["kernels"]
        return found["seconds"]

    rounds: dict[str, list[float]] = {"faiss": [], "synthdb": []}
    for _ in range(args.rounds):  # alternating fresh processes; each reports its search time only
        for mode, seconds in rounds.items():
            seconds.append(child(mode))
    alone, ours = Timing("faiss alone", rounds["faiss"]), Timing("synthdb first", rounds["synthdb"])
    for timing in (alone, ours):
        print(timing.line(queries, "queries/s"), flush=True)
    check_spread({"alone": alone, "ours": ours}, args.max_spread)
    info(f"kernels of FAISS's OpenBLAS: faiss alone {seen['faiss']}, synthdb first {seen['synthdb']}")
    info(f"synthdb first: {alone.median / ours.median:.2f}x faster than faiss alone")
    verdict([judge(ours, alone, 1.1, faster=False)])


if __name__ == "__main__":
    main()
