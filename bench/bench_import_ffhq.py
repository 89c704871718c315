"""FFHQ import: 70,000 entries (JSON + images1024x1024/ files) vs the floor (goal: at most 3x the floor).

The floor is what any importer must do: walk the image tree with os.scandir and json.load the metadata.
The tree follows the upstream layout (``images1024x1024/<5-digit folder>/<index>.png``, empty files)
and the JSON has every upstream key with full-size values (68 landmarks for the aligned image and for
the in-the-wild photo, face quad and rect, Flickr metadata), so parsing costs what the real 267 MB file
costs per entry. The import is timed into a SQLite catalog and into a scratch PostgreSQL database
(``SYNTHDB_TEST_POSTGRES_URL`` or the local default), created and dropped like bench_catalog_insert.py.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from synthdb.admin import init_workspace
from synthdb.sources.registry import import_named

ENTRIES = 70_000
GOAL = 3.0
PG = os.environ.get("SYNTHDB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _points(rng: random.Random, count: int, scale: float) -> list[list[float]]:
    return [[round(rng.uniform(0, scale), 2), round(rng.uniform(0, scale), 2)] for _ in range(count)]


def _entry(rng: random.Random, index: int) -> dict:
    folder = f"{index // 1000 * 1000:05d}"
    md5 = f"{rng.getrandbits(128):032x}"
    return {
        "category": "training" if index < 60_000 else "validation",
        "metadata": {
            "photo_url": f"https://www.flickr.com/photos/user{index}/{rng.getrandbits(40)}/",
            "photo_title": f"photo number {index}",
            "author": f"author {index % 9000}",
            "country": "",
            "license": "Attribution License",
            "license_url": "https://creativecommons.org/licenses/by/2.0/",
            "date_uploaded": "2012-06-21",
            "date_crawled": "2018-10-10",
        },
        "image": {
            "file_url": f"https://drive.google.com/uc?id={md5[:33]}",
            "file_path": f"images1024x1024/{folder}/{index:05d}.png",
            "file_size": 1_400_000 + index,
            "file_md5": md5,
            "pixel_size": [1024, 1024],
            "pixel_md5": md5[::-1],
            "face_landmarks": _points(rng, 68, 1024),
        },
        "thumbnail": {
            "file_url": f"https://drive.google.com/uc?id={md5[1:34]}",
            "file_path": f"thumbnails128x128/{folder}/{index:05d}.png",
            "file_size": 29_000 + index % 997,
            "file_md5": md5[1:] + "0",
            "pixel_size": [128, 128],
            "pixel_md5": md5[2:] + "00",
        },
        "in_the_wild": {
            "file_url": f"https://drive.google.com/uc?id={md5[2:35]}",
            "file_path": f"in-the-wild-images/{folder}/{index:05d}.png",
            "file_size": 3_900_000 + index,
            "file_md5": md5[3:] + "000",
            "pixel_size": [2016, 1512],
            "pixel_md5": md5[4:] + "0000",
            "face_rect": [667, 410, 1438, 1181],
            "face_landmarks": _points(rng, 68, 2000),
            "face_quad": _points(rng, 4, 2000),
        },
    }


def build(root: Path) -> None:
    rng = random.Random(0)
    meta = {str(i): _entry(rng, i) for i in range(ENTRIES)}
    with (root / "ffhq-dataset-v2.json").open("w") as fh:
        json.dump(meta, fh)
    for i in range(ENTRIES):
        folder = root / "images1024x1024" / f"{i // 1000 * 1000:05d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        os.close(os.open(folder / f"{i:05d}.png", os.O_CREAT | os.O_WRONLY, 0o644))


def floor(root: Path) -> float:
    """Walk the tree with os.scandir and json.load the metadata: the least an importer must do."""
    t0 = time.perf_counter()
    stack, files = [str(root)], 0
    while stack:
        with os.scandir(stack.pop()) as listing:
            for item in listing:
                if item.is_dir(follow_symlinks=False):
                    stack.append(item.path)
                else:
                    files += 1
    with (root / "ffhq-dataset-v2.json").open("rb") as fh:
        meta = json.load(fh)
    assert files == ENTRIES + 1 and len(meta) == ENTRIES
    return time.perf_counter() - t0


def measure(root: Path, work: Path, catalog_url: str | None) -> float:
    ctx = init_workspace(work, catalog_url=catalog_url, models_dir=str(work / "models"))
    try:
        t0 = time.perf_counter()
        report = import_named(ctx, "ffhq", root, quiet=True)
        elapsed = time.perf_counter() - t0
    finally:
        ctx.close()
    assert report.added == ENTRIES and not report.problem_counts, report.summary()
    return elapsed


def main() -> None:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root = Path(tmp) / "ffhq"
        root.mkdir()
        t0 = time.perf_counter()
        build(root)
        print(f"built {ENTRIES:,} entries in {time.perf_counter() - t0:.1f} s")
        floor(root)  # warm the page cache, as the imports below find it
        base = min(floor(root) for _ in range(3))
        results["sqlite (WAL file)"] = measure(root, Path(tmp) / "ws-sqlite", None)
        admin = sa.create_engine(
            PG.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
        )
        name = f"synthdb_bench_{uuid.uuid4().hex[:8]}"
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            results["postgresql"] = measure(root, Path(tmp) / "ws-pg", url)
        except sa.exc.OperationalError as exc:
            print(f"postgresql skipped: {str(exc.orig).splitlines()[0]}")
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
    print(f"floor (os.scandir walk + json.load): {base:.2f} s")
    print(f"{'catalog':<20}{'import s':>10}{'rows/s':>12}{'vs floor':>10}")
    for engine, elapsed in results.items():
        print(f"{engine:<20}{elapsed:>10.2f}{ENTRIES / elapsed:>12,.0f}{elapsed / base:>9.2f}x")
    worst = max(results.values()) / base
    print(f"worst ratio {worst:.2f}x vs goal {GOAL:.0f}x: {'met' if worst <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
