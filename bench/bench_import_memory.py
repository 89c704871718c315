"""Import memory: a 1,000,000-file ImageFolder tree imported with peak RSS under 1 GB (the goal).

Imports must stream (WebFace42M has 42M files): the scan holds one directory listing at a time and
rows go to the catalog in chunks. The tree (10,000 identity folders x 100 zero-byte .jpg files) is
created by worker processes, so this process does nothing heavy before the import; its peak RSS
(``resource.getrusage``, which covers the whole run) is then the import's. A /proc sampler also
reports the RSS when the import starts, to show what the import itself adds. The tree and the
catalog are removed afterwards.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from synthdb.admin import init_workspace
from synthdb.sources.registry import import_named

IDENTITIES, PER_IDENTITY = 10_000, 100
FILES = IDENTITIES * PER_IDENTITY
GOAL_BYTES = 1 << 30


def _make(args: tuple[str, int, int]) -> None:
    root, start, stop = args
    for identity in range(start, stop):
        folder = os.path.join(root, f"{identity:06d}")
        os.mkdir(folder)
        for k in range(PER_IDENTITY):
            os.close(
                os.open(os.path.join(folder, f"{identity:06d}_{k:03d}.jpg"), os.O_CREAT | os.O_WRONLY, 0o644)
            )


def build(root: Path) -> None:
    step = 500
    jobs = [(str(root), start, min(start + step, IDENTITIES)) for start in range(0, IDENTITIES, step)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_make, jobs))


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Sampler(threading.Thread):
    """Samples this process's RSS every 50 ms (a second witness next to getrusage's peak)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.05)


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root = Path(tmp) / "tree"
        root.mkdir()
        t0 = time.perf_counter()
        build(root)
        print(f"built {FILES:,} files in {IDENTITIES:,} folders in {time.perf_counter() - t0:.1f} s")
        ctx = init_workspace(Path(tmp) / "ws", models_dir=str(Path(tmp) / "models"))
        start_rss = rss_bytes()
        sampler = Sampler()
        sampler.start()
        try:
            t0 = time.perf_counter()
            report = import_named(ctx, "imagefolder", root, quiet=True)
            elapsed = time.perf_counter() - t0
        finally:
            sampler.stop.set()
            sampler.join()
            ctx.close()
        assert report.added == FILES and not report.problem_counts, report.summary()
        t0 = time.perf_counter()
        shutil.rmtree(root)
        print(f"removed the tree in {time.perf_counter() - t0:.1f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(f"imported {FILES:,} files in {elapsed:.1f} s ({FILES / elapsed:,.0f} rows/s, SQLite catalog)")
    print(f"RSS at import start {start_rss / 2**20:,.0f} MiB; peak sampled {sampler.peak / 2**20:,.0f} MiB")
    print(
        f"peak RSS (getrusage) {peak / 2**20:,.0f} MiB = {peak / GOAL_BYTES:.2f}x the 1 GiB goal: "
        f"{'met' if peak < GOAL_BYTES else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
