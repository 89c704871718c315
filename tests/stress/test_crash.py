"""Crash safety: SIGKILL real synthdb commands at seeded random moments, resume, compare with a clean run.

One test per command (import, embed, export, index build, references, variations), ``TRIALS`` kills
each (2 in ``make test``, 20 under ``SYNTHDB_STRESS=1``). Every trial starts from a copy of the same
prepared workspace, so the uninterrupted run and the killed-then-resumed one differ only by the kill.
The killed command is the real CLI in a child process; the resume is its Python API twin, in this
process (what a re-run of the command calls, without paying for a second interpreter start).
"""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from synthdb.admin import init_workspace
from synthdb.analysis.index import build_index, load_index
from synthdb.catalog.schema import Sample, VectorIndex
from synthdb.context import Context
from synthdb.embed_dataset import embed_dataset
from synthdb.export.api import export
from synthdb.generate.resume import resume_run
from synthdb.sources.registry import import_named
from tests.stress.harness import (
    TRIALS,
    Snapshot,
    check_recovered,
    child_threads,
    has_dataset,
    run_killed,
    snapshot,
    synthdb,
    timed,
    unfinished_runs,
)

IDENTITIES, PER_IDENTITY = 6, 4


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty workspace, and beside it an ImageFolder tree of 150x150 noise crops (dlib-resnet's chip)."""
    top = tmp_path_factory.mktemp("crash")
    rng = np.random.default_rng(0)
    for i in range(IDENTITIES * PER_IDENTITY):
        folder = top / "tree" / f"id{i // PER_IDENTITY:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    init_workspace(top / "ws", models_dir=str(top / "models")).close()
    return top


def copy_ws(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def stage(base: Path, name: str, *commands: tuple[str, ...]) -> Path:
    """A workspace copy of ``base/ws`` with ``commands`` run on it (cached per stage name)."""
    target = base / f"stage-{name}"
    if not target.exists():
        ws = copy_ws(base / "ws", base / f"building-{name}")
        for args in commands:
            synthdb(ws, *args)
        ws.rename(target)
    return target


def crash_trials(
    start: Path,
    tmp_path: Path,
    args: list[str],
    resume: Callable[[Context], None],
    compare: Callable[[Context, Context], None] | None = None,
) -> None:
    """Run ``args`` once uninterrupted, then ``TRIALS`` times killed and resumed; compare each with the
    first. At least one trial is really killed: when a busy machine let every one finish before its kill
    point, one more is killed as soon as it writes. ``args`` may name ``{ws}``, the workspace copy."""
    clean = copy_ws(start, tmp_path / "clean")
    timing = timed(clean, *[a.format(ws=clean) for a in args])
    with Context.open(clean) as ctx:
        expected: Snapshot = snapshot(ctx)[0]
        killed = False
        for trial in range(TRIALS + 1):
            if trial == TRIALS and killed:
                break
            ws = copy_ws(start, tmp_path / f"trial{trial}")
            seed = zlib.crc32(f"{args} {trial}".encode())
            delay = 0.0 if trial == TRIALS else None
            killed |= run_killed(ws, [a.format(ws=ws) for a in args], seed, timing, delay).killed
            with Context.open(ws) as got:
                with child_threads():
                    resume(got)
                check_recovered(got, expected)
                if compare is not None:
                    compare(ctx, got)
            shutil.rmtree(ws)
        assert killed, f"no trial of synthdb {' '.join(args)} was killed while it wrote"


def resume_generation(kind: str, name: str, args: list[str]) -> Callable[[Context], None]:
    """Resume a killed generation run (``runs resume``), or start it when the kill came before its run row."""

    def resume(ctx: Context) -> None:
        for run_id in unfinished_runs(ctx, kind):
            resume_run(ctx, run_id)
        if not has_dataset(ctx, name):
            synthdb(ctx.ws.root, *args)

    return resume


def test_import_killed_and_resumed(base: Path, tmp_path: Path) -> None:
    tree = base / "tree"
    crash_trials(
        base / "ws",
        tmp_path,
        ["import", "imagefolder", str(tree), "--name", "faces"],
        lambda ctx: import_named(ctx, "imagefolder", tree, name="faces", quiet=True),
    )


def imported(base: Path) -> Path:
    return stage(base, "imported", ("import", "imagefolder", str(base / "tree"), "--name", "faces"))


def embedded(base: Path) -> Path:
    return stage(
        base,
        "embedded",
        ("import", "imagefolder", str(base / "tree"), "--name", "faces"),
        ("embed", "faces", "--detector", "none", "--unit-size", "4", "--workers", "0"),
    )


@pytest.mark.slow
def test_embed_killed_and_resumed(base: Path, tmp_path: Path) -> None:
    crash_trials(
        imported(base),
        tmp_path,
        ["embed", "faces", "--detector", "none", "--unit-size", "2", "--batch-size", "2", "--workers", "0"],
        lambda ctx: embed_dataset(ctx, "faces", "dlib-resnet", "none", 2, 2, workers=0, quiet=True),
    )


@pytest.mark.slow
def test_export_killed_and_resumed(base: Path, tmp_path: Path) -> None:
    def same_output(clean: Context, got: Context) -> None:
        want, have = clean.ws.root / "out", got.ws.root / "out"
        files = sorted(p.relative_to(want) for p in want.rglob("*") if p.is_file() and p.suffix != ".json")
        assert files and all((want / f).read_bytes() == (have / f).read_bytes() for f in files)

    crash_trials(
        embedded(base),
        tmp_path,
        ["export", "faces", "{ws}/out", "--format", "recordio", "--size", "32", "--workers", "1"],
        lambda ctx: export(ctx, "faces", "recordio", ctx.ws.root / "out", size=32, workers=1),
        same_output,
    )


def test_index_build_killed_and_resumed(base: Path, tmp_path: Path) -> None:
    def whole_index(_clean: Context, got: Context) -> None:
        with got.catalog.engine.connect() as conn:
            rows = conn.execute(sa.select(VectorIndex.path, VectorIndex.ntotal)).all()
            samples = conn.execute(sa.select(sa.func.count()).select_from(Sample)).scalar_one()
        assert len(rows) == 1 and rows[0].ntotal == samples
        assert load_index(got.store.abspath(rows[0].path)).ntotal == samples

    crash_trials(
        embedded(base),
        tmp_path,
        ["index", "build", "faces", "--model", "dlib-resnet"],
        lambda ctx: build_index(ctx, "faces", "dlib-resnet", quiet=True),
        whole_index,
    )


REFERENCES = [
    "generate", "references", "--name", "refs", "--num-identities", "4", "--algorithm", "langevin",
    "--langevin-iterations", "3", "-r0", "0.5", "--ict", "0.25",
]  # fmt: skip
VARIATIONS = [
    "generate", "variations", "--name", "var", "--references", "refs", "--num-variations", "2",
    "--dispersion-iterations", "1", "--identities-per-unit", "1",
]  # fmt: skip


@pytest.mark.slow
def test_references_killed_and_resumed(base: Path, tmp_path: Path) -> None:
    crash_trials(base / "ws", tmp_path, REFERENCES, resume_generation("references", "refs", REFERENCES))


@pytest.mark.slow
def test_variations_killed_and_resumed(base: Path, tmp_path: Path) -> None:
    start = stage(base, "references", tuple(REFERENCES))
    crash_trials(start, tmp_path, VARIATIONS, resume_generation("variations", "var", VARIATIONS))
