"""Resumable exports: SIGKILL an export mid-way, run it again, get the bytes of an export that never stopped.

The normal suite exports 2,000 images; ``SYNTHDB_STRESS=1`` (``make stress``) runs the acceptance size,
10,000. The child process kills itself with SIGKILL from a worker thread when it asks for image
``kill_at``, so the writer is somewhere between two checkpoints with unsynced bytes behind it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthdb.catalog.schema import Run
from synthdb.context import Context
from synthdb.export.api import export
from synthdb.export.folder import MANIFEST_NAME, STATE_NAME
from synthdb.sources.registry import import_named

IMAGES = 10_000 if os.environ.get("SYNTHDB_STRESS") == "1" else 2_000
PER_IDENTITY = 20

CHILD = r"""
import json, os, signal, sys, threading
import synthdb.export.image_source as image_source
from synthdb.context import Context
from synthdb.export.api import export

ws, fmt, out = sys.argv[1:4]
kill_at, options = int(sys.argv[4]), json.loads(sys.argv[5])
call, lock, seen = image_source.ImageSource.__call__, threading.Lock(), [0]

def dying(self, relpath):
    with lock:
        seen[0] += 1
        if seen[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return call(self, relpath)

image_source.ImageSource.__call__ = dying
with Context.open(ws) as ctx:
    export(ctx, "big", fmt, out, **options)
"""


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IMAGES noise PNGs of 32x32 (noise keeps the JPEGs large enough to spill writer buffers)."""
    root = tmp_path_factory.mktemp("big") / "tree"
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        folder = root / f"{i // PER_IDENTITY:05d}"
        if i % PER_IDENTITY == 0:
            folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            folder / f"{i:06d}.png", compress_level=1
        )
    return root


def outputs(folder: Path) -> dict[str, bytes]:
    skip = {MANIFEST_NAME, STATE_NAME}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


@pytest.mark.parametrize(
    ("fmt", "options", "every", "checked"),
    [
        # checkpoint at 50%, killed at 85%: 35% of the records (> 1 MB) spilled past the checkpoint
        ("recordio", {"size": 32}, IMAGES // 2, ("train.rec", "rec")),
        # checkpoint at 75% in shard 7, shard 8 opened at 80%, killed at 85%
        ("webdataset", {"shard_max_count": IMAGES // 10}, IMAGES // 4, ("big-000008.tar", "offset")),
    ],
)
@pytest.mark.slow
def test_sigkill_then_resume_is_byte_identical(
    sqlite_ctx: Context,
    big_tree: Path,
    tmp_path: Path,
    fmt: str,
    options: dict,
    every: int,
    checked: tuple[str, str],
) -> None:
    import_named(sqlite_ctx, "imagefolder", big_tree, name="big")
    whole = export(sqlite_ctx, "big", fmt, tmp_path / "whole", **options)
    assert whole.manifest["output"]["images"] == IMAGES

    out = tmp_path / "killed"
    kill_at = int(IMAGES * 0.85)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(sqlite_ctx.ws.root),
            fmt,
            str(out),
            str(kill_at),
            json.dumps({**options, "checkpoint_every": every}),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    state = json.loads((out / STATE_NAME).read_text())
    progress = state["progress"]
    assert 0 < progress["next"] < kill_at and not state["complete"] and not (out / MANIFEST_NAME).exists()
    name, offset_key = checked
    if fmt == "webdataset":  # a shard the checkpoint does not know, which a re-run must delete
        assert progress["shard"] == 7 and (out / name).exists()
    else:  # bytes past the checkpoint reached the file, and a re-run must cut them off
        assert (out / name).stat().st_size > progress[offset_key]

    resumed = export(sqlite_ctx, "big", fmt, out, **options)
    assert outputs(out) == outputs(tmp_path / "whole")
    assert resumed.manifest["files"] == whole.manifest["files"]
    assert resumed.manifest["counts"] == whole.manifest["counts"]
    first, second = resumed.manifest["export_runs"]
    with sqlite_ctx.catalog.session() as session:
        killed = session.get(Run, first)  # closed by the run that resumed it
        assert killed.status == "interrupted" and f"run {second} resumed it" in killed.error
        assert session.get(Run, second).status == "succeeded"
