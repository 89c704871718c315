"""The generation commands end to end through the real CLI: references, variations (sharded via a
SLURM array environment), images of the stored latents, runs list/show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate.dataset_images import generate_dataset_images
from synthdb.generate.references import ReferenceParams, generate_references
from synthdb.nets.generator import Generator, to_uint8
from synthdb.store.fsck import fsck
from tests.generate.test_references import vectors

TINY_GENERATOR = "stylegan2-tiny"  # untrained: these tests are about the machinery, not faces


def synthdb(ws: Path, *args: str, env: dict | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTHDB_", "SLURM_", "SGE_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "synthdb.cli.main", "-w", str(ws), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_references_variations_images_through_the_cli(sqlite_ctx: Context) -> None:
    ws = sqlite_ctx.ws.root
    out = synthdb(
        ws, "generate", "references", "--name", "refs", "--num-identities", "3", "--algorithm", "langevin",
        "--langevin-iterations", "2", "-r0", "0.5", "--ict", "0.25", "-q",
    )  # fmt: skip
    assert "3 langevin references in dataset refs" in out
    for task in ("1", "2"):  # a SLURM job array of 2 tasks, 1-based like `--array=1-2`
        env = {"SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
        out = synthdb(
            ws, "generate", "variations", "--name", "var", "--references", "refs", "--num-variations", "2",
            "--dispersion-iterations", "1", "--identities-per-unit", "1", env=env,
        )  # fmt: skip
        assert f"(shard {task} of 2)" in out
    keys, _ = vectors(sqlite_ctx, "var")
    assert sorted(keys) == [f"{i:05d}/augmentation_{a}" for i in range(3) for a in range(2)]
    assert "images" not in synthdb(ws, "runs", "list")
    assert "references" in synthdb(ws, "runs", "list") and "langevin" in synthdb(ws, "runs", "show", "1")
    assert f"6 image(s) written to {ws / 'datasets' / 'var'}" in synthdb(ws, "generate", "images", "var")
    assert "0 image(s)" in synthdb(ws, "generate", "images", "var")  # done already: nothing to redo
    assert len(list((ws / "datasets" / "var").glob("*/augmentation_*.png"))) == 6
    assert fsck(sqlite_ctx.catalog, sqlite_ctx.store).clean


@pytest.mark.slow
def test_images_are_the_images_of_the_stored_latents(sqlite_ctx: Context, tmp_path: Path) -> None:
    generate_references(
        sqlite_ctx, ReferenceParams(generator=TINY_GENERATOR, name="r", algorithm="random", num_identities=3)
    )
    rendered = generate_dataset_images(sqlite_ctx, "r", root=str(tmp_path / "img"), batch_size=2)
    assert rendered.count == 3 and rendered.root == (tmp_path / "img").resolve()
    keys, w = vectors(sqlite_ctx, "r", "latent")
    gen = Generator.load("stylegan2-tiny")
    with torch.no_grad():  # the same batching (2 + 1) on the same machine: bit for bit
        same = torch.cat(
            [gen.synthesis(torch.from_numpy(part), noise_mode="const") for part in (w[:2], w[2:])]
        )
        other = gen.synthesis(torch.from_numpy(w), noise_mode="const")  # one batch of 3
    for key, pixels, near in zip(keys, to_uint8(same), to_uint8(other), strict=True):
        written = np.asarray(Image.open(tmp_path / "img" / f"{key}.png"))
        assert np.array_equal(written, pixels)
        assert np.abs(written.astype(int) - near.astype(int)).max() <= 1  # another batching: within 1/255
    with pytest.raises(SynthdbError, match="drop --root"):
        generate_dataset_images(sqlite_ctx, "r", root=str(tmp_path / "elsewhere"))
    generate_references(
        sqlite_ctx, ReferenceParams(generator=TINY_GENERATOR, name="c", algorithm="random", num_identities=1)
    )
    generate_dataset_images(sqlite_ctx, "c", crop="arcface")
    assert Image.open(sqlite_ctx.ws.root / "datasets" / "c" / "00000" / "reference.png").size == (112, 112)
