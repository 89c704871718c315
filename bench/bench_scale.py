"""How synthdb's time and memory grow with N: one step at a time, growing N, a fitted growth exponent each.

Every (step, N) runs in a fresh Python process, so its peak memory (VmHWM) is its own: setup (building the
tree, committing the vectors the step reads) happens first in another process and is not measured. Each
line gives seconds and peak RSS; ``+MiB`` is the peak above the process's RSS once its libraries were
imported (what the step itself held). The exponent of a step is the slope of log(seconds) or log(+MiB)
over log(N) (least squares): about 1 for linear time, below 0.2 for memory that stays flat.

Steps (N is what grows):
- ``import-sqlite`` / ``import-postgres``: a WebFace42M-layout tree of N empty .jpg files (stat-ed, not
  decoded) imported into a new catalog;
- ``query``: ``synthdb query`` group-by and join over the N samples of that catalog (DuckDB, SQLite scanner);
- ``commit-128`` / ``commit-512``: N embeddings committed in shards of 50,000 (sample rows + Parquet);
- ``scan``: a DuckDB aggregate over the N committed 512-d embeddings (the ``embeddings`` view);
- ``fsck``: checking the store against the catalog after ``commit-128`` (N / 50,000 shards, all hashed);
- ``nearest``: ``check nearest`` of N / 10 query identities against N reference identities (exact, Flat);
- ``histogram``: the exact inter-class histogram of N identities (N (N - 1) / 2 pairs, tiled GEMM);
- ``export``: ``export --format synthetics-h5 --where "s.role = 'variation'"`` of N samples.

``--quick`` runs small sizes (under 5 minutes on 2 cores) and prints the exponents on its last line;
the default sizes go as high as this machine (2 cores, 24 GiB) allows in about an hour; ``--steps``
picks steps, ``--sizes`` overrides the sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

STEP_SIZES: dict[str, tuple[list[int], list[int]]] = {  # (quick, full)
    "import-sqlite": ([4_000, 16_000, 64_000], [10_000, 100_000, 1_000_000]),
    "import-postgres": ([4_000, 16_000, 64_000], [10_000, 100_000, 1_000_000]),
    "query": ([4_000, 16_000, 64_000], [10_000, 100_000, 1_000_000]),
    "commit-128": ([25_000, 100_000, 400_000], [100_000, 1_000_000, 10_000_000]),
    "commit-512": ([25_000, 100_000, 400_000], [100_000, 1_000_000, 4_000_000]),
    "scan": ([25_000, 100_000, 400_000], [100_000, 1_000_000, 4_000_000]),
    "fsck": ([25_000, 100_000, 400_000], [100_000, 1_000_000, 10_000_000]),
    "nearest": ([5_000, 20_000, 80_000], [10_000, 100_000, 1_000_000]),
    "histogram": ([1_000, 4_000, 16_000], [5_000, 20_000, 100_000]),
    "export": ([10_000, 40_000, 160_000], [10_000, 100_000, 1_000_000]),
}
SHARD_ROWS = 50_000
IDENTITY_SIZE = 10  # samples per identity in committed vector datasets
GEMM_NOTE = "histogram: N (N - 1) / 2 pairs, so its time exponent is about 2 (linear in pairs)"


# --- setup (not measured) ----------------------------------------------------------------------------------


def webface_tree(root: Path, n: int) -> None:
    """N empty .jpg files in the WebFace42M layout, 20 per identity folder, in 10 shards."""
    if (root / ".complete").is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    for i in range(n):
        folder = root / str(i % 10) / f"{i % 10}_0_{i // 200:07d}"
        if i % 20 < 10:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i % 10}_{i}.jpg").touch()
    (root / ".complete").touch()


def workspace(path: Path, catalog_url: str | None = None):  # noqa: ANN201 - a Context
    from synthdb.admin import init_workspace
    from synthdb.context import Context

    if (path / "synthdb.toml").is_file():
        return Context.open(path)
    return init_workspace(path, catalog_url=catalog_url)


def committed(path: Path, n: int, dim: int) -> None:
    """A workspace whose dataset ``vectors`` holds n samples (10 per identity) with dim-d embeddings."""
    from synthdb.catalog import bulk
    from synthdb.catalog.datasets import create_dataset
    from synthdb.store.commit import NewSamples, ShardSpec, commit

    if (path / ".complete").is_file():
        return
    shutil.rmtree(path, ignore_errors=True)
    ctx = workspace(path)
    ds = create_dataset(ctx.catalog, "vectors", "synthetic", "generated")
    rng = np.random.default_rng(0)
    for start in range(0, n, SHARD_ROWS):
        rows = min(SHARD_ROWS, n - start)
        labels = [f"{(start + k) // IDENTITY_SIZE:08d}" for k in range(rows)]
        with ctx.catalog.begin() as conn:
            idents = bulk.identity_ids(conn, ds, labels)
        emb = rng.standard_normal((rows, dim), dtype=np.float32)
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=ds,
            unit=f"u{start}",
            samples=NewSamples([f"{start + k}" for k in range(rows)], "variation", idents),
            shards=[ShardSpec("embedding", "m", {"embedding": emb})],
        )
    ctx.close()
    (path / ".complete").touch()


def identities(path: Path, name: str, n: int, seed: int, per_identity: int = 1) -> None:
    """A workspace with dataset ``name``: n identities of ``per_identity`` 128-d embeddings each."""
    from synthdb.catalog import bulk
    from synthdb.catalog.datasets import create_dataset
    from synthdb.store.commit import NewSamples, ShardSpec, commit

    ctx = workspace(path)
    ds = create_dataset(ctx.catalog, name, "synthetic", "generated")
    rng = np.random.default_rng(seed)
    total = n * per_identity
    for start in range(0, total, SHARD_ROWS):
        rows = min(SHARD_ROWS, total - start)
        labels = [f"{(start + k) // per_identity:08d}" for k in range(rows)]
        with ctx.catalog.begin() as conn:
            idents = bulk.identity_ids(conn, ds, labels)
        centres = rng.standard_normal((rows, 128), dtype=np.float32)
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=ds,
            unit=f"u{start}",
            samples=NewSamples([f"{name}/{start + k}" for k in range(rows)], "reference", idents),
            shards=[ShardSpec("embedding", "m", {"embedding": centres})],
        )
    ctx.close()


def postgres_database() -> tuple[str, Callable[[], None]]:
    """A fresh database on the test server and the function that drops it."""
    import sqlalchemy as sa

    base = os.environ.get("SYNTHDB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    admin_url = base.replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"synthdb_scale_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


# --- the measured steps (each runs in a fresh process, after its setup) -----------------------------------


def setup(step: str, n: int, work: Path) -> None:
    if step.startswith("import") or step == "query":
        webface_tree(work / f"tree-{n}", n)
    if step == "query":
        path = work / f"imported-{n}"
        if not (path / ".complete").is_file():
            shutil.rmtree(path, ignore_errors=True)
            run_step("import-sqlite", n, work, path)
            (path / ".complete").touch()
    if step == "fsck":
        committed(work / f"vectors128-{n}", n, 128)
    if step == "scan":
        committed(work / f"vectors512-{n}", n, 512)
    if step == "export":
        committed(work / f"vectors128-{n}", n, 128)
    if step == "nearest" and not (work / f"nearest-{n}" / ".complete").is_file():
        shutil.rmtree(work / f"nearest-{n}", ignore_errors=True)
        identities(work / f"nearest-{n}", "ref", n, seed=1)
        identities(work / f"nearest-{n}", "query", max(1, n // 10), seed=2)
        (work / f"nearest-{n}" / ".complete").touch()
    if step == "histogram" and not (work / f"histogram-{n}" / ".complete").is_file():
        shutil.rmtree(work / f"histogram-{n}", ignore_errors=True)
        identities(work / f"histogram-{n}", "ids", n, seed=3)
        (work / f"histogram-{n}" / ".complete").touch()


def run_step(step: str, n: int, work: Path, target: Path | None = None) -> None:
    """The operation whose time and memory are measured."""
    if step in ("import-sqlite", "import-postgres"):
        from synthdb.sources.registry import import_named

        drop = None
        url = None
        if step == "import-postgres":
            url, drop = postgres_database()
        path = target or work / f"ws-{step}-{uuid.uuid4().hex[:6]}"
        ctx = workspace(path, url)
        try:
            report = import_named(ctx, "webface42m", work / f"tree-{n}", name="wf", quiet=True)
            assert report.added == n, report
        finally:
            ctx.close()
            if drop is not None:
                drop()
            if target is None:
                shutil.rmtree(path, ignore_errors=True)
    elif step == "query":
        from synthdb.analysis.query import query

        ctx = workspace(work / f"imported-{n}")
        per_identity = query(
            ctx, "SELECT identity_id, count(*) AS n FROM catalog.sample GROUP BY identity_id ORDER BY n DESC"
        )
        joined = query(
            ctx,
            "SELECT i.label, count(*) AS n FROM catalog.sample s JOIN catalog.identity i "
            "ON i.id = s.identity_id GROUP BY i.label ORDER BY i.label LIMIT 10",
        )
        assert per_identity.num_rows == math.ceil(n / 20) and joined.num_rows == 10
        ctx.close()
    elif step in ("commit-128", "commit-512"):
        path = work / f"ws-{step}-{uuid.uuid4().hex[:6]}"
        committed(path, n, int(step.split("-")[1]))
        shutil.rmtree(path, ignore_errors=True)
    elif step == "scan":
        from synthdb.analysis.query import query

        ctx = workspace(work / f"vectors512-{n}")
        out = query(ctx, "SELECT count(*) AS n, avg(list_sum(embedding)) AS s FROM embeddings")
        assert out.column("n")[0].as_py() == n
        ctx.close()
    elif step == "fsck":
        from synthdb.store.fsck import fsck

        ctx = workspace(work / f"vectors128-{n}")
        report = fsck(ctx.catalog, ctx.store)
        assert report.clean and report.checked == math.ceil(n / SHARD_ROWS), report
        ctx.close()
    elif step == "nearest":
        from synthdb.analysis.nearest import check_nearest

        ctx = workspace(work / f"nearest-{n}")
        report = check_nearest(ctx, "query", "ref", "m", k=5, threshold=1.0, quiet=True)
        assert len(report.query_identity_ids) == max(1, n // 10)
        ctx.close()
    elif step == "histogram":
        from synthdb.analysis.histogram import histogram

        ctx = workspace(work / f"histogram-{n}")
        result = histogram(ctx, "ids", "m", pair_class="inter", quiet=True)
        assert result.inter.pairs == n * (n - 1) // 2
        ctx.close()
    elif step == "export":
        from synthdb.export.api import export

        ctx = workspace(work / f"vectors128-{n}")
        out = work / f"export-{uuid.uuid4().hex[:6]}"
        export(ctx, "vectors", "synthetics-h5", out, where="s.role = 'variation'", quiet=True)
        shutil.rmtree(out, ignore_errors=True)
        ctx.close()
    else:
        raise SystemExit(f"unknown step {step}")


def rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(step: str, n: int, work: Path, phase: str) -> None:
    """Runs in a fresh process: setup, or the measured step (printing one JSON line)."""
    if phase == "setup":
        setup(step, n, work)
        return
    import torch  # noqa: F401 - every step's libraries are loaded before the baseline is read

    import synthdb.analysis.query  # noqa: F401
    import synthdb.store.commit  # noqa: F401

    base = rss_mib("VmRSS")
    start = time.perf_counter()
    run_step(step, n, work)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mib": rss_mib("VmHWM"), "base_mib": base}))


def measure(step: str, n: int, work: Path) -> dict[str, float]:
    script = [sys.executable, __file__, "--child", step, str(n), str(work)]
    subprocess.run([*script, "setup"], check=True)
    out = subprocess.run([*script, "run"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponent(ns: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) over log(N)."""
    x, y = np.log(np.array(ns, float)), np.log(np.maximum(np.array(values, float), 1e-3))
    return float(np.polyfit(x, y, 1)[0]) if len(ns) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Small sizes: under 5 minutes.")
    ap.add_argument("--steps", nargs="*", default=list(STEP_SIZES), choices=list(STEP_SIZES))
    ap.add_argument("--sizes", nargs="*", type=int, help="Override every step's sizes.")
    ap.add_argument("--workdir", type=Path, help="Keep the generated data here (default: a temp dir).")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        step, n, work, phase = args.child
        child(step, int(n), Path(work), phase)
        return
    from timing import environment

    print(f"bench_scale ({'quick' if args.quick else 'full'}): {environment()}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="synthdb-scale-", dir=Path.cwd()))
    work.mkdir(parents=True, exist_ok=True)
    summary = []
    try:
        for step in args.steps:
            sizes = args.sizes or STEP_SIZES[step][0 if args.quick else 1]
            rows = []
            for n in sizes:
                result = measure(step, n, work)
                rows.append((n, result))
                held = result["peak_mib"] - result["base_mib"]
                seconds, peak = result["seconds"], result["peak_mib"]
                line = f"{step:<16} N={n:>10,}  {seconds:9.2f} s  peak {peak:8.0f} MiB (+{held:7.0f} MiB)"
                print(line, flush=True)
            ns = [n for n, _ in rows]
            t_exp = exponent(ns, [r["seconds"] for _, r in rows])
            m_exp = exponent(ns, [max(r["peak_mib"] - r["base_mib"], 1.0) for _, r in rows])
            print(f"{step:<16} time exponent {t_exp:.2f}, memory exponent {m_exp:.2f}, largest N {ns[-1]:,}")
            summary.append(f"{step} t^{t_exp:.2f} m^{m_exp:.2f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(GEMM_NOTE)
    print("exponents: " + "; ".join(summary))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
