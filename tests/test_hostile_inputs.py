"""Hostile and broken files handed to importers: each is named in one clear line and nothing else is lost."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from synthdb.catalog.schema import Sample
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.sources.registry import import_named
from synthdb.store import parquet
from tests.stress.harness import STATS


def _keys(ctx: Context) -> set[str]:
    with ctx.catalog.engine.connect() as conn:
        return set(conn.execute(sa.select(Sample.key)).scalars())


def _tree(root: Path) -> Path:
    for i in range(4):
        (root / "ok").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(root / "ok" / f"{i}.png")
    return root


def test_broken_images_are_named_and_the_rest_imported(sqlite_ctx: Context, tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    whole = (root / "ok" / "0.png").read_bytes()
    (root / "bad").mkdir()
    (root / "bad" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "bad" / "garbage.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    report = import_named(sqlite_ctx, "imagefolder", root, name="t", verify_images=True, quiet=True)
    assert sorted(p.split(" ")[0] for p in report.problems["unreadable"]) == [
        "bad/garbage.jpg",
        "bad/truncated.png",
    ]
    assert _keys(sqlite_ctx) == {f"ok/{i}.png" for i in range(4)}
    STATS["hostile_inputs"] += 2


def test_symlink_loops_and_non_utf8_names_do_not_stop_an_import(sqlite_ctx: Context, tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    os.symlink(root, root / "ok" / "loop")  # a folder link back to the root
    os.symlink("self.png", root / "ok" / "self.png")  # a file link to itself
    raw = os.fsencode(root / "ok") + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    with open(raw, "wb") as f:
        f.write((root / "ok" / "0.png").read_bytes())
    report = import_named(sqlite_ctx, "imagefolder", root, name="t", quiet=True)
    assert _keys(sqlite_ctx) == {f"ok/{i}.png" for i in range(4)}
    named = {kind: list(items) for kind, items in report.problems.items()}
    assert named.get("non_utf8_name") == ["ok/caf\ufffd.png"]
    assert "ok/self.png" in named.get("unreadable", []) + named.get("missing", [])
    STATS["hostile_inputs"] += 3


def test_truncated_hdf5_samples_file_is_one_clear_error(sqlite_ctx: Context, tmp_path: Path) -> None:
    from tests.test_importers import build_collection

    build_collection(tmp_path / "demo")
    path = tmp_path / "demo" / "samples.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SynthdbError, match=str(path)) as refused:
        import_named(sqlite_ctx, "samples", path, quiet=True)
    assert "\n" not in str(refused.value) and _keys(sqlite_ctx) == set()
    STATS["hostile_inputs"] += 1


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_parquet_shard_names_fsck(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s.parquet"
    parquet.write_table(parquet.to_table(np.arange(3), None, {"embedding": np.ones((3, 8))}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    with pytest.raises(SynthdbError, match=r"is unreadable .*synthdb fsck"):
        parquet.read_vectors(path, "embedding")
    STATS["hostile_inputs"] += 1


def test_pickle_with_a_global_off_the_allow_list_runs_nothing(tmp_path: Path) -> None:
    from synthdb.nets.pickles import read_network_pickle

    canary = tmp_path / "ran"
    payload = b"\x80\x02cos\nsystem\nX" + len(f"touch {canary}").to_bytes(4, "little")
    payload += f"touch {canary}".encode() + b"\x85R."
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(SynthdbError, match=r"refused: the pickle needs the Python global os\.system"):
        read_network_pickle(path)
    assert not canary.exists()
    STATS["hostile_inputs"] += 1
