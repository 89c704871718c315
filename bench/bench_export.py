"""Export throughput of recordio and webdataset vs Pillow encoding the same JPEGs (goal: at least 70%).

4,000 generated 112x112 faces-like PNGs (200 identities x 20: smooth colour fields plus grain, so
their JPEGs are as large as real crops') are exported at 112x112, JPEG quality 95. An export has to
decode each PNG and encode a JPEG; the baselines do exactly that work with bare Pillow, on the same
number of threads, writing nothing: (a) decode + encode, the like-for-like floor, against which the
goal is measured; (b) encode only, from pixels already in memory, for reference. The export figures
include everything else: the catalog query, record framing, writes, checkpoints (fsync + state file),
sha256 of every output file and the manifest. Same process, alternating repeats, medians.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from synthdb.admin import init_workspace
from synthdb.export.api import export
from synthdb.sources.registry import import_named

IDENTITIES, PER_IDENTITY, SIZE, QUALITY, REPEATS = 200, 20, 112, 95, 3
THREADS = min(8, os.cpu_count() or 1)


def make_images(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for k in range(IDENTITIES):
        (root / f"{k:05d}").mkdir(parents=True)
        for j in range(PER_IDENTITY):
            field = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
            smooth = np.asarray(Image.fromarray(field).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
            grain = rng.normal(0, 6, smooth.shape)
            pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
            path = root / f"{k:05d}" / f"{j:02d}.png"
            Image.fromarray(pixels).save(path, compress_level=1)
            paths.append(path)
    return paths


def encode(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def decode_encode(path: Path) -> bytes:
    with Image.open(path) as img:
        return encode(img.convert("RGB"))


def threaded(fn: Callable[[object], bytes], items: list) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in pool.map(fn, items, chunksize=32):
            pass
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        tmp_path = Path(tmp)
        paths = make_images(tmp_path / "tree")
        decoded = [Image.open(p).convert("RGB") for p in paths]
        ctx = init_workspace(tmp_path / "ws", models_dir=str(tmp_path / "models"))
        import_named(ctx, "imagefolder", tmp_path / "tree", name="bench", quiet=True)
        names = ("decode+encode", "encode only", "recordio", "webdataset")
        times: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(REPEATS):
            times["decode+encode"].append(threaded(decode_encode, paths))
            times["encode only"].append(threaded(encode, decoded))
            for fmt in ("recordio", "webdataset"):
                out = tmp_path / f"{fmt}{rep}"
                t0 = time.perf_counter()
                report = export(
                    ctx, "bench", fmt, out, size=SIZE, quality=QUALITY, workers=THREADS, quiet=True
                )
                times[fmt].append(time.perf_counter() - t0)
                assert report.manifest["output"]["images"] == len(paths)
                shutil.rmtree(out)
        ctx.close()
    n = len(paths)
    rate = {name: n / statistics.median(t) for name, t in times.items()}
    print(f"{len(paths)} images {SIZE}x{SIZE}, JPEG q{QUALITY}, {THREADS} threads, median of {REPEATS}")
    print(f"{'method':<44}{'images/s':>10}")
    labels = {
        "decode+encode": "Pillow PNG decode + JPEG encode (baseline)",
        "encode only": "Pillow JPEG encode from memory",
        "recordio": "synthdb export --format recordio",
        "webdataset": "synthdb export --format webdataset",
    }
    for name, label in labels.items():
        print(f"{label:<44}{rate[name]:>10,.0f}")
    for fmt in ("recordio", "webdataset"):
        print(
            f"{fmt}: {rate[fmt] / rate['decode+encode']:.0%} of decode+encode (goal >= 70%), "
            f"{rate[fmt] / rate['encode only']:.0%} of encode only"
        )


if __name__ == "__main__":
    main()
