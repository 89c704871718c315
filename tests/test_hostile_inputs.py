"""Hostile and broken files handed to importers and readers: each is named in one clear line and nothing
else is lost."""

from __future__ import annotations

import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from synthdb.catalog.schema import Sample
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.export.recordio import RecordReader, frame, pack, read_records
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
    from tests.sources.test_databases import build_collection

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


MAGIC = struct.pack("<I", 0xCED7230A)


def _part(cflag: int, length: int, body: bytes = b"") -> bytes:
    return MAGIC + struct.pack("<I", cflag << 29 | length) + body


IMAGE = frame(pack(3.0, 1, b"\xff\xd8" + bytes(50)))
HOSTILE_RECORDS = {
    "no magic": (b"JFIF" * 16, r"byte 0: no record starts there"),
    "length past the end": (_part(0, 1000, bytes(40)), r"byte 0: a part of 1000 bytes runs past the end"),
    "512 MiB declared": (_part(0, (1 << 29) - 1, bytes(8)), r"a part of 536870911 bytes runs past the end"),
    "truncated record": (IMAGE + IMAGE[:-9], rf"byte {len(IMAGE)}: a part of \d+ bytes runs past the end"),
    "truncated length word": (IMAGE + MAGIC[:3], rf"byte {len(IMAGE)}: the file ends inside a record"),
    "cut record never ends": (_part(1, 4, b"abcd"), r"byte 12: the file ends inside a record"),
    "continuation first": (_part(2, 4, b"abcd"), r"byte 0: part flag 2 where a record begins"),
    "new record inside a cut one": (_part(1, 0) + IMAGE, r"byte 8: part flag 0 inside a record cut in parts"),
    "record shorter than its header": (_part(0, 4, b"abcd"), r"a 4-byte record is shorter than its IRHeader"),
    "header labels past the end": (
        frame(struct.pack("<IfQQ", 2**32 - 1, 0.0, 0, 0)),
        r"declares 4294967295 labels past the record's end",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_RECORDS))
def test_hostile_recordio_files_are_one_clear_error(tmp_path: Path, case: str) -> None:
    """Damaged and crafted ``.rec`` files: one line naming the file, the byte and the fix; a declared
    length is checked against the file before anything that size is read (tracemalloc's peak stays
    far below the 512 MiB one case claims)."""
    data, message = HOSTILE_RECORDS[case]
    path = tmp_path / "train.rec"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(SynthdbError, match=message) as refused:
            list(read_records(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = str(refused.value)
    assert text.startswith(f"{path} is not readable RecordIO") and "re-export it" in text and "\n" not in text
    assert peak < 1 << 20
    STATS["hostile_inputs"] += 1


HOSTILE_INDEXES = {
    "space for the tab": (b"0 0\n", r"line 1: b'0 0' is not 'key<TAB>offset'"),
    "a word": (b"0\t0\nkey\t0\n", r"line 2: b'key\\t0' is not"),
    "negative offset": (b"1\t-8\n", r"line 1: b'1\\t-8' is not"),
    "a thousand digits": (b"1\t" + b"9" * 1000 + b"\n", r"line 1: b'1\\t9999"),
    "not UTF-8": (b"\xff\xfe\t0\n", r"line 1: b'\\xff\\xfe\\t0' is not"),
    "key twice": (b"0\t0\n0\t0\n", r"line 2: key 0 is listed twice"),
    "offset past the .rec": (b"0\t0\n1\t4096\n", r"line 2: offset 4096 is past the end of the \d+-byte"),
}


@pytest.mark.parametrize("case", list(HOSTILE_INDEXES))
def test_hostile_recordio_indexes_are_one_clear_error(tmp_path: Path, case: str) -> None:
    data, message = HOSTILE_INDEXES[case]
    (tmp_path / "train.rec").write_bytes(IMAGE)
    (tmp_path / "train.idx").write_bytes(data)
    with pytest.raises(SynthdbError, match=message) as refused:
        RecordReader(tmp_path / "train.rec", tmp_path / "train.idx")
    text = str(refused.value)
    assert text.startswith(str(tmp_path / "train.idx")) and "or read the .rec without" in text
    assert "\n" not in text
    STATS["hostile_inputs"] += 1


def test_recordio_index_pointing_inside_a_record_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "train.rec").write_bytes(IMAGE)
    (tmp_path / "train.idx").write_bytes(b"\n0\t0\n7\t12\n")  # blank lines are allowed, as in mxnet
    with RecordReader(tmp_path / "train.rec", tmp_path / "train.idx") as reader:
        assert reader[0].label == 3.0 and reader[0].data[:2] == b"\xff\xd8"
        with pytest.raises(SynthdbError, match=r"at byte 12 \(index key 7\): no record starts there"):
            reader[7]
    with pytest.raises(SynthdbError, match=r"cannot read RecordIO index .*missing\.idx: No such file"):
        RecordReader(tmp_path / "train.rec", tmp_path / "missing.idx")
    with pytest.raises(SynthdbError, match=r"cannot read RecordIO file .*missing\.rec: No such file"):
        RecordReader(tmp_path / "missing.rec")
    STATS["hostile_inputs"] += 3
