"""Hostile files and paths: links out of a dataset root, sparse and bomb images, crafted HDF5 and a store
that is not synthdb's. Every case ends in one line (a SynthdbError, or a problem named in an import's
or an export's summary); nothing outside the command's own outputs is written, deleted or read.

Bounds the cases check, each with a file just past the bound that costs nothing to make (sparse files,
crafted headers): an image is read only up to ``MAX_IMAGE_BYTES`` (256 MiB), decoded only when it
declares at most ``MAX_IMAGE_PIXELS`` and is not far larger than its pixels; metadata files up to
``METADATA_BYTES`` (1 GiB, FFHQ), ``PROTOCOL_BYTES`` (16 MiB, LFW), ``LINE_CHARS`` per CSV line (IJB-C);
an HDF5 dataset is read only once its metadata says it holds at most 64 KiB, in this file. HDF5 cases
whose failure would allocate gigabytes run in a subprocess under a 1 GiB address-space limit.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from synthdb.catalog.schema import Dataset, Sample
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.export.api import export
from synthdb.sources.csv_rows import LINE_CHARS
from synthdb.sources.lfw import PROTOCOL_BYTES
from synthdb.sources.listing import METADATA_BYTES
from synthdb.sources.registry import import_named
from synthdb.store.hdf5 import H5Sample, SampleCollection
from synthdb.untrusted import MAX_IMAGE_BYTES
from tests.conftest import CliRun
from tests.sources.test_databases import BUILDERS, build_collection, build_ffhq, build_ijbc, build_lfw, touch
from tests.stress.harness import STATS


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A safety net for cases that would block forever (a FIFO opened to read): fail after 60 s instead."""

    def fail(*_: object) -> None:
        raise TimeoutError("blocked for 60 s: a FIFO was opened")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _paths(ctx: Context, dataset: str) -> list[str]:
    """The sample paths of ``dataset``, sorted."""
    samples, datasets = Sample.__table__, Dataset.__table__
    with ctx.catalog.engine.connect() as conn:
        found = conn.execute(
            sa.select(samples.c.path)
            .join(datasets, datasets.c.id == samples.c.dataset_id)
            .where(datasets.c.name == dataset, samples.c.path.is_not(None))
        )
        return sorted(found.scalars())


def _snapshot(*folders: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime) of everything under ``folders``, links not followed: equal snapshots mean
    nothing there was written, deleted or replaced."""
    found = {}
    for folder in folders:
        for dirpath, dirs, files in os.walk(folder):
            for name in dirs + files:
                info = os.lstat(os.path.join(dirpath, name))
                found[os.path.join(dirpath, name)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def _inside(root: Path, paths: list[str]) -> bool:
    real = os.path.realpath(root)
    return all(os.path.realpath(os.path.join(real, p)).startswith(real + os.sep) for p in paths)


def _png(color: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def _one_line(exc: pytest.ExceptionInfo[SynthdbError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# ------------------------------------------------------------------------------------- importers: links


def _build(source: str, root: Path) -> None:
    """The source's test tree, with at least two samples (UTKFace's has one)."""
    BUILDERS[source](root)
    if source == "utkface":
        touch(root / "UTKFace" / "30_1_0_20170104023102423.jpg.chip.jpg")


def _link_file_out(root: Path, rel: str, outside: Path, relative: bool) -> None:
    """Replace ``root/rel`` by a symlink to a file outside the root (absolute, or ``../..``)."""
    secret = outside / "secret.jpg"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(b"SECRET")
    (root / rel).unlink()
    target = os.path.relpath(secret, (root / rel).parent) if relative else str(secret)
    os.symlink(target, root / rel)


def _link_folder_out(root: Path, rel: str, outside: Path, relative: bool) -> None:
    """Move the folder of ``root/rel`` outside the root and leave a symlink to it in its place."""
    folder = (root / rel).parent
    moved = outside / "moved"
    shutil.move(folder, moved)
    os.symlink(os.path.relpath(moved, folder.parent) if relative else str(moved), folder)


ESCAPES: dict[str, Callable[[Path, str, Path], None]] = {
    "file link, absolute": lambda root, rel, out: _link_file_out(root, rel, out, relative=False),
    "file link, ../..": lambda root, rel, out: _link_file_out(root, rel, out, relative=True),
    "folder link, absolute": lambda root, rel, out: _link_folder_out(root, rel, out, relative=False),
    "folder link, ../..": lambda root, rel, out: _link_folder_out(root, rel, out, relative=True),
}


@pytest.mark.parametrize("attack", list(ESCAPES))
@pytest.mark.parametrize("source", sorted(BUILDERS))
def test_links_out_of_the_root_are_named_and_never_imported(
    sqlite_ctx: Context, tmp_path: Path, source: str, attack: str
) -> None:
    """Regression: a file symlink to /etc/passwd was imported (and then exported). Every importer, file
    and folder links, absolute and relative: the link is counted as ``escapes_root`` and named, and no
    imported path resolves outside the root."""
    root = tmp_path / "root"
    _build(source, root)
    clean = _paths(sqlite_ctx, import_named(sqlite_ctx, source, root, name="clean").dataset)
    rel = clean[0]
    ESCAPES[attack](root, rel, tmp_path / "outside")
    before = _snapshot(root, tmp_path / "outside")
    report = import_named(sqlite_ctx, source, root, name="hostile")
    assert _snapshot(root, tmp_path / "outside") == before
    hostile = _paths(sqlite_ctx, "hostile")
    named = report.problems.get("escapes_root", [])
    if attack.startswith("file"):
        assert rel in named and rel not in hostile
        assert sorted(set(hostile) | {rel}) == sorted(set(clean))
    else:
        folder = rel.rsplit("/", 1)[0] + "/"
        assert named and all(p.startswith(folder) for p in named)
        assert not [p for p in hostile if p.startswith(folder)]
    assert _inside(root, hostile)
    STATS["hostile_inputs"] += 1


def _link_inside(root: Path, rel: str, other: str) -> None:
    (root / rel).unlink()
    os.symlink(os.path.relpath(root / other, (root / rel).parent), root / rel)


def _hard_link(root: Path, rel: str, other: str) -> None:
    (root / rel).unlink()
    os.link(root / other, root / rel)


INSIDE: dict[str, Callable[[Path, str, str], None]] = {
    "symlink to a file inside": _link_inside,
    "hard link": _hard_link,
}


@pytest.mark.parametrize("link", list(INSIDE))
@pytest.mark.parametrize("source", sorted(BUILDERS))
def test_links_that_stay_inside_the_root_are_imported(
    sqlite_ctx: Context, tmp_path: Path, source: str, link: str
) -> None:
    root = tmp_path / "root"
    _build(source, root)
    first = import_named(sqlite_ctx, source, root, name="clean")
    clean = _paths(sqlite_ctx, "clean")
    INSIDE[link](root, clean[0], clean[-1])
    report = import_named(sqlite_ctx, source, root, name="linked")
    assert _paths(sqlite_ctx, "linked") == clean and report.problems == first.problems
    STATS["hostile_inputs"] += 1


@pytest.mark.parametrize("source", sorted(BUILDERS))
def test_a_symlinked_root_is_the_root_the_user_named(
    sqlite_ctx: Context, tmp_path: Path, source: str
) -> None:
    _build(source, tmp_path / "data" / "root")
    os.symlink(tmp_path / "data" / "root", tmp_path / "alias")
    first = import_named(sqlite_ctx, source, tmp_path / "data" / "root", name="a")
    report = import_named(sqlite_ctx, source, tmp_path / "alias", name="b")
    assert _paths(sqlite_ctx, "b") == _paths(sqlite_ctx, "a") and report.problems == first.problems
    STATS["hostile_inputs"] += 1


def test_folder_links_inside_the_root_are_named_not_followed(sqlite_ctx: Context, tmp_path: Path) -> None:
    root = tmp_path / "root"
    BUILDERS["imagefolder"](root)
    os.symlink("id0", root / "alias")  # the same identity twice, under another name
    os.symlink(root, root / "id1" / "loop")  # a loop
    report = import_named(sqlite_ctx, "imagefolder", root)
    assert report.problems == {"linked_folder": ["alias/"]} and report.added == 6
    STATS["hostile_inputs"] += 1


@pytest.mark.parametrize("where", ["image file", "image folder", "images folder"])
def test_samples_images_linked_out_of_the_collection_folder(
    sqlite_ctx: Context, tmp_path: Path, where: str
) -> None:
    """The images beside a samples.h5 follow the same rule, one folder level at a time."""
    build_collection(tmp_path / "demo")
    images = tmp_path / "demo" / "images_arcface_112x112"
    outside = tmp_path / "outside"
    if where == "image file":
        _link_file_out(tmp_path / "demo", "images_arcface_112x112/00000/reference.png", outside, False)
    else:
        folder = images / "00000" if where == "image folder" else images
        shutil.move(folder, outside)
        os.symlink(outside, folder)
    report = import_named(sqlite_ctx, "samples", tmp_path / "demo" / "samples.h5")
    named = report.problems["escapes_root"]
    assert "images_arcface_112x112/00000/reference.png" in named
    assert len(named) == {"image file": 1, "image folder": 3, "images folder": 10}[where]  # 1 is missing
    assert _inside(tmp_path / "demo", _paths(sqlite_ctx, "demo"))
    STATS["hostile_inputs"] += 1


# ------------------------------------------------------------------------------- importers: metadata


@pytest.mark.parametrize(
    "file_path",
    [
        "/etc/passwd",
        "../x/00000/00001.png",
        "images1024x1024/../../x.png",
        "images1024x1024/00000/../../../x",
    ],
)
def test_ffhq_json_paths_out_of_the_root_are_refused(
    sqlite_ctx: Context, tmp_path: Path, file_path: str
) -> None:
    root = tmp_path / "data" / "ffhq"
    meta = build_ffhq(root)
    meta["1"]["image"]["file_path"] = file_path
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(meta))
    report = import_named(sqlite_ctx, "ffhq", root)
    assert report.problems == {"escapes_root": [file_path]} and report.added == 4
    STATS["hostile_inputs"] += 1


def test_metadata_files_linked_out_of_the_root_are_refused_unread(
    sqlite_ctx: Context, tmp_path: Path
) -> None:
    """A protocol file that is a symlink to another file is refused before it is read: its lines are never
    parsed (nor quoted in an error, as /etc/passwd lines would be)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    ffhq = tmp_path / "ffhq"
    build_ffhq(ffhq)
    shutil.move(ffhq / "ffhq-dataset-v2.json", outside / "ffhq.json")  # a valid JSON, but elsewhere
    os.symlink(outside / "ffhq.json", ffhq / "ffhq-dataset-v2.json")
    lfw = tmp_path / "lfw"
    build_lfw(lfw)
    (lfw / "pairs.txt").unlink()
    os.symlink(outside / "passwd", lfw / "pairs.txt")
    ijbc = build_ijbc(tmp_path / "ijbc")
    verif = ijbc / "protocols" / "test1" / "verif_templates.csv"
    shutil.move(verif, outside / "verif.csv")
    os.symlink("../../../../../outside/verif.csv", verif)
    for source, root, name in (("ffhq", ffhq, "ffhq-dataset-v2.json"), ("lfw", lfw, "pairs.txt"),
                               ("ijbc", tmp_path / "ijbc", "verif_templates.csv")):  # fmt: skip
        with pytest.raises(
            SynthdbError, match=rf"{name} leads outside .*a symlink points elsewhere"
        ) as refused:
            import_named(sqlite_ctx, source, root)
        assert "root:x" not in _one_line(refused)
        STATS["hostile_inputs"] += 1
    assert not _paths(sqlite_ctx, "ffhq") and not _paths(sqlite_ctx, "lfw") and not _paths(sqlite_ctx, "ijbc")


def test_image_folders_linked_out_of_the_root_are_refused(sqlite_ctx: Context, tmp_path: Path) -> None:
    """FFHQ and LFW pick their image folder by name before scanning: a link out is refused up front."""
    for source, build, folder in (("ffhq", build_ffhq, "images1024x1024"), ("lfw", build_lfw, "lfw")):
        root = tmp_path / source
        build(root)
        shutil.move(root / folder, tmp_path / f"{source}-images")
        os.symlink(tmp_path / f"{source}-images", root / folder)
        with pytest.raises(SynthdbError, match=rf"{folder} leads outside .*\(a symlink\)") as refused:
            import_named(sqlite_ctx, source, root)
        _one_line(refused)
        STATS["hostile_inputs"] += 1


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file holding ``head``, then holes up to ``size`` bytes: it costs no disk and no time to make."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(head)
        fh.truncate(max(size, len(head)))
    return path


def test_oversized_metadata_files_are_refused_before_reading(sqlite_ctx: Context, tmp_path: Path) -> None:
    """Sparse files just past each bound: refused from their size, or their first line, not read whole."""
    _sparse(tmp_path / "ffhq" / "ffhq-dataset-v2.json", METADATA_BYTES + 1, b'{"0": {}')
    with pytest.raises(SynthdbError, match=rf"holds {METADATA_BYTES + 1} bytes, more than the"):
        import_named(sqlite_ctx, "ffhq", tmp_path / "ffhq")
    build_lfw(tmp_path / "lfw")
    _sparse(tmp_path / "lfw" / "people.txt", PROTOCOL_BYTES + 1, b"10\n")
    with pytest.raises(SynthdbError, match=rf"people.txt holds {PROTOCOL_BYTES + 1} bytes"):
        import_named(sqlite_ctx, "lfw", tmp_path / "lfw")
    ijbc = build_ijbc(tmp_path / "ijbc")
    _sparse(ijbc / "protocols" / "test1" / "match.csv", 64 << 20, b"ENROLL_TEMPLATE_ID,VERIF_TEMPLATE_ID\n1,")
    with pytest.raises(SynthdbError, match=rf"match.csv: a line is longer than {LINE_CHARS} characters"):
        import_named(sqlite_ctx, "ijbc", tmp_path / "ijbc")
    STATS["hostile_inputs"] += 3


def test_protocol_names_with_dotdot_only_ever_match_keys(sqlite_ctx: Context, tmp_path: Path) -> None:
    """LFW pair and people lines name people, never files: '..' in them matches no sample and opens
    nothing; IJB-C file names are joined under images/, so an absolute one stays inside the root."""
    lfw = tmp_path / "lfw"
    build_lfw(lfw)
    (lfw / "pairsDevTest.txt").write_text("1\n../../etc\t1\t2\n/etc/passwd\t1\tZico\t1\n")
    report = import_named(sqlite_ctx, "lfw", lfw)
    assert report.problem_counts == {"pair_without_sample": 3}  # two sides of the first, one of the second
    assert report.added == 10 and _inside(lfw, _paths(sqlite_ctx, "lfw"))
    ijbc = build_ijbc(tmp_path / "ijbc")
    enroll = ijbc / "protocols" / "test1" / "enroll_templates.csv"
    enroll.write_text(
        enroll.read_text() + "3,12,/etc/passwd,1,2,3,4\n4,13,img/../../../../../../etc/x,1,2,3,4\n"
    )
    report = import_named(sqlite_ctx, "ijbc", tmp_path / "ijbc")
    assert report.problems == {"missing": ["IJB/IJB-C/images/etc/passwd"],
                               "escapes_root": ["IJB/IJB-C/images/img/../../../../../../etc/x"]}  # fmt: skip
    STATS["hostile_inputs"] += 2


# ----------------------------------------------------------------------------- images: size and pixels


def _png_header(width: int, height: int) -> bytes:
    """A 1-bit grey PNG that declares ``width`` x ``height`` pixels: a few dozen bytes, a bomb to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP header that declares ``width`` x ``height`` pixels and holds none of them."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def _jpeg(size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


HOSTILE_IMAGES: dict[str, Callable[[Path], Path]] = {
    # past PIL's own error threshold (2 x 89.5 Mpx): PIL raises DecompressionBombError
    "PNG bomb, 30000 x 30000": lambda d: _sparse(d / "bomb.png", 0, _png_header(30_000, 30_000)),
    # between PIL's warning and error thresholds: PIL would decode 300 MB of pixels, synthdb refuses
    "PNG bomb, 10000 x 10000": lambda d: _sparse(d / "bomb.png", 0, _png_header(10_000, 10_000)),
    "BMP bomb, 20000 x 20000": lambda d: _sparse(d / "bomb.bmp", 0, _bmp_header(20_000, 20_000)),
    "sparse .jpg past the byte cap": lambda d: _sparse(d / "big.jpg", MAX_IMAGE_BYTES + 1, _jpeg()),
    "8x8 JPEG with 20 MB of holes": lambda d: _sparse(d / "holes.jpg", 20 << 20, _jpeg()),
}


@pytest.mark.parametrize("case", list(HOSTILE_IMAGES))
def test_verify_images_refuses_bombs_and_sparse_files_unread(
    sqlite_ctx: Context, tmp_path: Path, case: str
) -> None:
    root = tmp_path / "tree"
    touch(root / "ok" / "0.png", _png((1, 2, 3)))
    bad = HOSTILE_IMAGES[case](root / "bad")
    report = import_named(sqlite_ctx, "imagefolder", root, verify_images=True)
    assert report.problems == {"too_large": [f"bad/{bad.name}"]} and report.added == 1
    STATS["hostile_inputs"] += 1


# -------------------------------------------------------------------------------------------- exports


@pytest.fixture
def faces(sqlite_ctx: Context, tmp_path: Path) -> tuple[Context, Path]:
    """An LFW-layout dataset of 6 real 8x8 images (3 people), with a view1 protocol for bob, imported."""
    root = tmp_path / "lfw"
    colours = {"Ann": (200, 0, 0), "Bob": (0, 200, 0), "Cid": (0, 0, 200)}
    for name, colour in colours.items():
        for n in (1, 2):
            touch(root / name / f"{name}_{n:04d}.jpg", _jpeg() if n == 1 else _png(colour))
    (root / "peopleDevTrain.txt").write_text("3\nAnn\t2\nBob\t2\nCid\t2\n")
    assert import_named(sqlite_ctx, "lfw", root, name="faces").added == 6
    return sqlite_ctx, root


EXPORTS = {
    "imagefolder": {},
    "recordio": {"size": 16},
    "webdataset": {},
    "bob": {"protocol": "view1", "size": 16},
}


def _fifo(path: Path) -> None:
    """Replace ``path`` by a named pipe: opening it to read would wait for a writer forever."""
    path.unlink()
    os.mkfifo(path)


def _file_linked_out(root: Path, out: Path) -> None:
    (root / "Ann" / "Ann_0002.jpg").unlink()
    os.symlink(out / "secret.png", root / "Ann" / "Ann_0002.jpg")


def _folder_linked_out(root: Path, out: Path) -> None:
    shutil.move(root / "Bob", out / "Bob")
    os.symlink(out / "Bob", root / "Bob")


TREE_CHANGES: dict[str, tuple[Callable[[Path, Path], object], str, int]] = {
    "file replaced by a symlink out": (_file_linked_out, "escapes_root", 1),
    "folder replaced by a symlink out": (_folder_linked_out, "escapes_root", 2),
    "file replaced by a 2 GB sparse file": (
        lambda root, _: _sparse(root / "Cid" / "Cid_0001.jpg", 2 << 30, _jpeg()), "too_large", 1),
    "file replaced by a PNG bomb": (
        lambda root, _: _sparse(root / "Cid" / "Cid_0002.jpg", 0, _png_header(30_000, 30_000)),
        "too_large", 1),
    "file replaced by a FIFO": (lambda root, _: _fifo(root / "Bob" / "Bob_0001.jpg"), "unreadable", 1),
    "file replaced by /etc/passwd-like text": (
        lambda root, _: (root / "Ann" / "Ann_0001.jpg").write_text("root:x:0:0:root:/root:/bin/bash\n"),
        "unreadable", 1),
}  # fmt: skip


@pytest.mark.parametrize("change", list(TREE_CHANGES))
@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_exports_recheck_the_tree_at_export_time(
    faces: tuple[Context, Path], tmp_path: Path, fmt: str, change: str, no_hang: None
) -> None:
    """Regression: an ImageFolder export copied /etc/passwd (a file replaced by a symlink after import) and
    turned a 2 GB sparse .jpg into 2.1 GB of disk. Each format that reads images re-checks every file: the
    sample is skipped under its kind, no byte of the outside file reaches the output, and the output stays
    small."""
    ctx, root = faces
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = _png((255, 0, 255)) + b"SECRET-MARKER"
    (outside / "secret.png").write_bytes(secret)
    apply, kind, skipped = TREE_CHANGES[change]
    apply(root, outside)
    before = _snapshot(root, outside)
    out = tmp_path / "out"
    report = export(ctx, "faces", fmt, out, **EXPORTS[fmt], quiet=True)
    assert _snapshot(root, outside) == before  # the export wrote its own folder only
    assert report.manifest["counts"]["skipped_by_kind"] == {kind: skipped}
    written = [p for p in out.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in written) < 1 << 20
    assert not any(b"SECRET-MARKER" in p.read_bytes() or b"root:x:0:0" in p.read_bytes() for p in written)
    STATS["hostile_inputs"] += 1


@pytest.mark.parametrize("change", list(TREE_CHANGES))
def test_embed_rechecks_the_tree_too(
    faces: tuple[Context, Path], tmp_path: Path, change: str, no_hang: None
) -> None:
    """The same tree changes met by ``synthdb embed``: each file is recorded as a sample issue of its kind
    and never decoded, and nothing outside the workspace changes."""
    from synthdb.embed_dataset import embed_dataset

    ctx, root = faces
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png((255, 0, 255)) + b"SECRET-MARKER")
    apply, kind, skipped = TREE_CHANGES[change]
    apply(root, outside)
    before = _snapshot(root, outside)
    report = embed_dataset(ctx, "faces", "dlib-resnet", "none", workers=0, quiet=True)
    assert _snapshot(root, outside) == before
    assert report.issues == {kind: skipped} and report.embedded == 6 - skipped
    STATS["hostile_inputs"] += 1


def test_an_export_follows_links_that_stay_inside_the_root(
    faces: tuple[Context, Path], tmp_path: Path
) -> None:
    ctx, root = faces
    (root / "Ann" / "Ann_0002.jpg").unlink()
    os.symlink("../Bob/Bob_0002.jpg", root / "Ann" / "Ann_0002.jpg")
    report = export(ctx, "faces", "imagefolder", tmp_path / "out", quiet=True)
    assert report.manifest["counts"]["skipped"] == 0
    copied = next((tmp_path / "out").glob("Ann/*_0002.jpg")).read_bytes()
    assert copied == (root / "Bob" / "Bob_0002.jpg").read_bytes()
    STATS["hostile_inputs"] += 1


# ------------------------------------------------------------------------------------------ HDF5 files


def _collection(path: Path) -> Path:
    """A valid one-sample collection, to be made hostile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with SampleCollection.create(path) as collection:
        collection.add(0, "reference", H5Sample(w_latent=np.ones(512), network_type="stylegan2-256"))
    return path


def _other_file(group: h5py.Group) -> str:
    other = Path(group.file.filename).with_name("other.h5")
    with h5py.File(other, "w") as f:
        f["x"] = np.full((1, 512), 7.0, "f4")
    return str(other)


def _external_storage(group: h5py.Group, target: str) -> None:
    del group["w_latent"]
    group.create_dataset("w_latent", shape=(1, 512), dtype="f4", external=[(target, 0, 2048)])


def _virtual(group: h5py.Group) -> None:
    layout = h5py.VirtualLayout(shape=(1, 512), dtype="f4")
    layout[:] = h5py.VirtualSource(_other_file(group), "x", shape=(1, 512))
    del group["w_latent"]
    group.create_virtual_dataset("w_latent", layout)


def _replace(group: h5py.Group, name: str = "w_latent", **kwargs: object) -> h5py.Dataset:
    del group["w_latent"]
    return group.create_dataset(name, **kwargs)


def _deflated_zeros(mib: int) -> bytes:
    """A zlib stream of ``mib`` MiB of zeros, made at once at any size: after a full flush every MiB of
    zeros compresses to the same block, so one block is repeated and the Adler-32 computed."""
    zeros = b"\0" * (1 << 20)
    deflate = zlib.compressobj(9)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()[:-4]  # the final empty block; its Adler-32 is for two MiB only
    adler = ((mib << 20) % 65521) << 16 | 1  # of n zero bytes: a = 1, b = n mod 65521
    return first + block * (mib - 1) + end + struct.pack(">I", adler)


def _gzip_bomb(group: h5py.Group, mib: int = 64) -> None:
    """A (1, 512) dataset whose one gzip chunk inflates to ``mib`` MiB (HDF5 inflates it whatever its
    shape says)."""
    ds = _replace(group, shape=(1, 512), dtype="f4", chunks=(1, 512), compression="gzip")
    ds.id.write_direct_chunk((0, 0), _deflated_zeros(mib))


def _external_link(group: h5py.Group) -> None:
    del group["w_latent"]
    group["w_latent"] = h5py.ExternalLink(_other_file(group), "/x")


def _soft_alias(group: h5py.Group) -> None:
    group.create_dataset("spare", data=np.ones((1, 512), "f4"))
    del group["w_latent"]
    group["w_latent"] = h5py.SoftLink(f"{group.name}/spare")


HOSTILE_H5: dict[str, tuple[Callable[[h5py.Group], object], str]] = {
    "external storage: /etc/passwd": (
        lambda g: _external_storage(g, "/etc/passwd"), r"w_latent keeps its data in an external file"),
    "external storage: a file of floats": (
        lambda g: _external_storage(g, _other_file(g)), r"w_latent keeps its data in an external file"),
    "external link": (_external_link, r"w_latent is an external link"),
    "soft link to another dataset": (_soft_alias, r"w_latent is a soft link"),
    "soft link as an identity": (
        lambda g: g.file.__setitem__("00001", h5py.SoftLink("/00000")), r":/00001 is a soft link"),
    "virtual dataset": (_virtual, r"w_latent is a virtual dataset"),
    "declared (1, 2^20, 512) float64": (
        lambda g: _replace(g, "w_plus_latent", shape=(1, 1 << 20, 512), dtype="f8"),
        r"w_plus_latent has shape \(1048576, 512\), expected \(num_ws, 512\) with 1 <= num_ws <= 32"),
    "declared (1, 2^28) embedding": (
        lambda g: _replace(g, "embedding", shape=(1, 1 << 28), dtype="f4"),
        r"embedding has shape \(268435456,\), expected \(D,\) with 1 <= D <= 4096"),
    "gzip bomb": (_gzip_bomb, r"has a chunk stored in \d+ bytes that holds 2048 \(a compression bomb\)"),
    "chunks larger than the shape": (
        lambda g: _replace(g, shape=(1, 512), maxshape=(None, None), dtype="f4", chunks=(1, 1 << 20),
                           compression="gzip"), r"has chunks \(1, 1048576\) larger than its shape"),
    "lzf filter": (
        lambda g: _replace(g, data=np.ones((1, 512), "f4"), compression="lzf"),
        r"uses HDF5 filter 32000, not one of gzip, shuffle, fletcher32"),
    "vlen floats": (
        lambda g: _replace(g, shape=(1, 512), dtype=h5py.vlen_dtype("f4")), r"is not a numeric dataset"),
    "compound dtype": (
        lambda g: _replace(g, shape=(1, 512), dtype=np.dtype([("a", "f4"), ("b", "f4")])),
        r"is not a numeric dataset"),
    "strings": (lambda g: _replace(g, data=np.array([["x"] * 512], "S1")), r"is not a numeric dataset"),
    "array attribute": (
        lambda g: g.attrs.__setitem__("network_type", np.array(["x"] * 1000, dtype=h5py.string_dtype())),
        r"attribute 'network_type' is not a single value"),
    "100,000-character attribute": (
        lambda g: g.attrs.__setitem__("network_type", "x" * 100_000),
        r"attribute 'network_type' is 100000 characters long"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE_H5))
def test_crafted_hdf5_is_refused_before_its_data_is_read(
    sqlite_ctx: Context, tmp_path: Path, case: str
) -> None:
    """Regression: external raw storage pointing at /etc/passwd came back as a latent, and a 12 KB file
    declaring a (1, 2^20, 512) dataset allocated 4.3 GB. Links, storage, shapes, dtypes, filters and
    attributes are checked from metadata first: one line naming the dataset, no sample imported."""
    path = _collection(tmp_path / "demo" / "samples.h5")
    craft, message = HOSTILE_H5[case]
    with h5py.File(path, "a") as f:
        craft(f["00000/reference"])
    assert path.stat().st_size < 1 << 20  # the attacks are small files
    with pytest.raises(SynthdbError, match=message) as refused:
        import_named(sqlite_ctx, "samples", path)
    assert _one_line(refused).startswith(str(path)) and "regenerate it" in str(refused.value)
    assert _paths(sqlite_ctx, "demo") == [] and not list(sqlite_ctx.store.shards.rglob("*.parquet"))
    STATS["hostile_inputs"] += 1


BOUNDED_READ = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: the bombs claim 4.3 GB and more
    from synthdb.errors import SynthdbError
    from synthdb.store.hdf5 import SampleCollection
    try:
        with SampleCollection.open(sys.argv[1]) as collection:
            print(len(list(collection.iter_samples())))
    except SynthdbError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    """
)


@pytest.mark.parametrize("case", ["declared (1, 2^20, 512) float64", "gzip bomb"])
def test_hdf5_bombs_fail_in_one_line_within_a_memory_limit(tmp_path: Path, case: str) -> None:
    path = _collection(tmp_path / "samples.h5")
    with h5py.File(path, "a") as f:
        HOSTILE_H5[case][0](f["00000/reference"])
    if case == "gzip bomb":  # a bigger bomb than the import test's: 2 GiB inflated, past the limit
        with h5py.File(path, "a") as f:
            f["00000/reference/w_latent"].id.write_direct_chunk((0, 0), _deflated_zeros(2048))
    proc = subprocess.run([sys.executable, "-c", BOUNDED_READ, str(path)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(str(path))
    STATS["hostile_inputs"] += 1


HARMLESS_H5: dict[str, Callable[[h5py.Group], object]] = {
    "200 nested groups in a sample": lambda g: g.create_group("/".join(["n"] * 200)),
    "a hard link to the root (a cycle)": lambda g: g.__setitem__("loop", g.file["/"]),
    "10,000 attributes on the root": lambda g: [g.file.attrs.__setitem__(f"a{i}", i) for i in range(10_000)],
    "gzip and shuffle, honestly": lambda g: _replace(
        g, data=np.ones((1, 512), "f4"), compression="gzip", shuffle=True, fletcher32=True
    ),
}


@pytest.mark.parametrize("case", list(HARMLESS_H5))
def test_harmless_hdf5_oddities_still_import(sqlite_ctx: Context, tmp_path: Path, case: str) -> None:
    """What the layout never reads (deep groups, cycles, attributes) costs nothing; standard filters work."""
    path = _collection(tmp_path / "demo" / "samples.h5")
    with h5py.File(path, "a") as f:
        HARMLESS_H5[case](f["00000/reference"])
    assert import_named(sqlite_ctx, "samples", path).added == 1
    STATS["hostile_inputs"] += 1


# ----------------------------------------------------------------------------------------- the store

HEX = "0123456789abcdef" * 2


def _plant(files: dict[Path, bytes]) -> dict[Path, bytes]:
    """Write ``files`` with an old mtime (so ``gc --min-age`` would not protect them); return them."""
    for path, data in files.items():
        touch(path, data)
        os.utime(path, (0, 0))
    return files


def _victim(folder: Path) -> dict[Path, bytes]:
    """A folder synthdb never wrote, holding files named like a store's among the user's own."""
    return _plant(
        {
            folder / "notes.txt": b"the user's notes",
            folder / "staging" / f"{HEX}.parquet": b"named like a staged file",
            folder / "shards" / "1" / "embedding" / f"{HEX}.parquet": b"named like a shard",
            folder / "indexes" / f"{HEX}.faiss": b"named like an index",
        }
    )


def _untouched(files: dict[Path, bytes]) -> bool:
    return all(path.read_bytes() == data for path, data in files.items())


def _set_store(ctx: Context, store: str) -> None:
    config = ctx.ws.config_path
    config.write_text(
        "".join(f'store = "{store}"\n' if line.startswith("store =") else line for line in config.open())
    )


POINTED_ELSEWHERE = {
    "store = '../victim'": lambda ctx, victim: (_set_store(ctx, "../victim"), {})[1],
    "store = '/abs/victim'": lambda ctx, victim: (_set_store(ctx, str(victim)), {})[1],
    "SYNTHDB_STORE=victim": lambda ctx, victim: {"SYNTHDB_STORE": str(victim)},
}


@pytest.mark.parametrize("how", list(POINTED_ELSEWHERE))
def test_gc_and_fsck_refuse_a_folder_that_is_not_a_store(
    sqlite_ctx: Context, tmp_path: Path, how: str, synthdb_cli: CliRun
) -> None:
    """Regression: with ``store = "../victim"`` in synthdb.toml, ``synthdb gc`` deleted files synthdb never
    wrote. A folder without the marker is neither checked nor cleaned: one line, every file kept."""
    victim = tmp_path / "victim"
    files = _victim(victim)
    env = POINTED_ELSEWHERE[how](sqlite_ctx, victim)
    ws = str(sqlite_ctx.ws.root)
    for command in (["gc", "--min-age", "0"], ["fsck"]):
        output = synthdb_cli(*command, ws=ws, env=env, code=1).output
        assert output.count("\n") == 1 and "carries no .synthdb-store marker" in output
        assert "synthdb store adopt" in output
    output = synthdb_cli("store", "adopt", ws=ws, env=env, code=1).output  # what the message suggests
    assert "holds notes.txt, which no synthdb store holds: not adopting it" in output
    assert _untouched(files) and not (victim / ".synthdb-store").exists()
    STATS["hostile_inputs"] += 1


def test_another_workspaces_store_is_refused(tmp_path: Path) -> None:
    from synthdb.admin import init_workspace
    from synthdb.store import fsck

    first = init_workspace(tmp_path / "a", models_dir=str(tmp_path / "models"))
    second = init_workspace(tmp_path / "b", models_dir=str(tmp_path / "models"))
    orphan = _plant({first.store.root / "staging" / f"{HEX}.parquet": b"a's writer may still need it"})
    _set_store(second, str(first.store.root))
    with Context.open(tmp_path / "b") as pointed, pytest.raises(SynthdbError) as refused:
        fsck.gc(pointed.catalog, pointed.store, min_age=0)
    assert f"is marked as store '{first.ws.store_id}' but this workspace's store_id is" in _one_line(refused)
    assert _untouched(orphan)
    (second.store.root / ".synthdb-store").unlink()
    os.symlink(first.store.root / ".synthdb-store", second.store.root / ".synthdb-store")  # a borrowed marker
    with pytest.raises(SynthdbError, match="carries no .synthdb-store marker"):
        fsck.fsck(second.catalog, second.store)
    first.close()
    second.close()
    STATS["hostile_inputs"] += 2


def test_a_second_workspace_on_a_shared_store_joins_its_marker(tmp_path: Path) -> None:
    """Teams share a store: ``init --store`` naming a marked store records that store's id, and both
    workspaces may check and clean it."""
    from synthdb.admin import init_workspace
    from synthdb.store import fsck

    first = init_workspace(tmp_path / "a", store=str(tmp_path / "shared"), models_dir=str(tmp_path / "m"))
    second = init_workspace(tmp_path / "b", store=str(tmp_path / "shared"), models_dir=str(tmp_path / "m"))
    assert (
        first.ws.store_id == second.ws.store_id
        and f'store_id = "{first.ws.store_id}"' in (tmp_path / "b" / "synthdb.toml").read_text()
    )
    staged = _plant({tmp_path / "shared" / "staging" / f"{HEX}.parquet": b"left by a crash"})
    assert (
        fsck.gc(second.catalog, second.store, min_age=0).removed_files == [f"staging/{HEX}.parquet"]
        and not list(staged)[0].exists()
    )
    assert fsck.fsck(first.catalog, first.store).clean
    first.close()
    second.close()
    STATS["hostile_inputs"] += 1


def test_a_workspace_made_before_markers_adopts_its_store(sqlite_ctx: Context, synthdb_cli: CliRun) -> None:
    """Old workspaces are never marked behind the user's back (a crafted catalog could then re-enable the
    attack); fsck says what to run, and ``synthdb store adopt`` makes them work again."""
    ws = sqlite_ctx.ws
    (ws.store / ".synthdb-store").unlink()
    ws.config_path.write_text(
        "".join(line for line in ws.config_path.open() if not line.startswith("store_id"))
    )
    output = synthdb_cli("fsck", ws=str(ws.root), code=1).output
    assert "carries no .synthdb-store marker" in output and "synthdb store adopt" in output
    output = synthdb_cli("store", "adopt", ws=str(ws.root), code=0).output
    assert "is this workspace's store" in output
    output = synthdb_cli("fsck", ws=str(ws.root), code=0).output
    assert output.startswith("clean: ")
    STATS["hostile_inputs"] += 1


def test_inside_the_store_gc_deletes_only_what_synthdb_writes(sqlite_ctx: Context, tmp_path: Path) -> None:
    """Links, folder links and other names inside a marked store are named ``foreign`` and left alone;
    nothing is followed. Only the staged file synthdb would have written is removed."""
    from synthdb.store import fsck

    store = sqlite_ctx.store.root
    victim = _victim(tmp_path / "victim")
    staged = _plant({store / "staging" / f"{HEX}.parquet": b"a crashed writer's file"})
    own = _plant({store / "staging" / "notes.txt": b"someone's notes"})
    os.symlink(tmp_path / "victim" / "shards" / "1" / "embedding" / f"{HEX}.parquet",
               store / "shards" / f"{HEX}.parquet")  # fmt: skip
    (store / "shards" / "3" / "latent").mkdir(parents=True)
    index = tmp_path / "victim" / "indexes" / f"{HEX}.faiss"
    os.symlink(index, store / "shards" / "3" / "latent" / f"{HEX}.parquet")  # a shard's name, a link
    os.symlink(tmp_path / "victim" / "shards" / "1", store / "shards" / "9")
    shutil.rmtree(store / "indexes")
    os.symlink(tmp_path / "victim" / "indexes", store / "indexes")
    report = fsck.fsck(sqlite_ctx.catalog, sqlite_ctx.store)
    link_names = [f"shards/3/latent/{HEX}.parquet", "shards/9", f"shards/{HEX}.parquet"]
    assert report.foreign == sorted(["indexes", *link_names, "staging/notes.txt"])
    assert report.staged == [f"staging/{HEX}.parquet"] and not report.orphans
    removed = fsck.gc(sqlite_ctx.catalog, sqlite_ctx.store, min_age=0).removed_files
    assert removed == [f"staging/{HEX}.parquet"]
    assert not list(staged)[0].exists() and _untouched(own) and _untouched(victim)
    STATS["hostile_inputs"] += 5


def test_catalog_rows_naming_other_paths_are_never_followed(sqlite_ctx: Context, tmp_path: Path) -> None:
    """A crafted catalog: a committed row whose path leads out of the store is corrupt without being read
    (an identical copy outside would otherwise pass as clean), a committed shard replaced by a link to such
    a copy too, and gc deletes a retired row naming an outside file but not the file."""
    from synthdb.catalog.datasets import create_dataset
    from synthdb.catalog.schema import Shard
    from synthdb.store import fsck
    from synthdb.store.commit import NewSamples, ShardSpec, commit

    ctx = sqlite_ctx
    ds = create_dataset(ctx.catalog, "d", "synthetic", "generated")
    for i in range(3):
        commit(ctx.catalog, ctx.store, dataset_id=ds,
               samples=NewSamples(keys=[f"k{i}"], role="reference", identity_labels=["x"]),
               shards=[ShardSpec("embedding", "m", {"embedding": np.full((1, 4), float(i))})])  # fmt: skip
    with ctx.catalog.engine.connect() as conn:
        paths = conn.execute(sa.select(Shard.path).order_by(Shard.id)).scalars().all()
    outside = tmp_path / "outside"
    outside.mkdir()
    copies = [
        shutil.copyfile(ctx.store.abspath(p), outside / f"copy{i}.parquet") for i, p in enumerate(paths)
    ]
    victim = _plant({outside / "victim.parquet": b"not synthdb's"})
    escaping = os.path.relpath(copies[0], ctx.store.root)
    ctx.store.abspath(paths[1]).unlink()
    os.symlink(copies[1], ctx.store.abspath(paths[1]))
    table = Shard.__table__
    with ctx.catalog.begin() as conn:
        conn.execute(sa.update(table).where(table.c.path == paths[0]).values(path=escaping))
        conn.execute(
            sa.update(table)
            .where(table.c.path == paths[2])
            .values(path=os.path.relpath(outside / "victim.parquet", ctx.store.root), state="retired")
        )
    report = fsck.fsck(ctx.catalog, ctx.store)
    assert sorted(report.corrupt) == sorted([escaping, paths[1]]) and report.foreign == [paths[1]]
    assert report.orphans == sorted([paths[0], paths[2]])  # the real files the rows no longer name
    assert fsck.gc(ctx.catalog, ctx.store, min_age=0).removed_rows == 1 and _untouched(victim)
    assert all(Path(c).exists() for c in copies)
    STATS["hostile_inputs"] += 3


# ------------------------------------------------------------------------------------------ the models


@pytest.mark.parametrize("kind", ["embedder weights", "generator pickle"])
def test_weights_linked_to_a_text_file_are_one_line(tmp_path: Path, kind: str) -> None:
    """A models folder may hold a symlink named like a weights file that leads to /etc/passwd: the user's
    configuration says to read it, so it is read, and refused in one line as not being weights."""
    from synthdb.nets.cards import build_embedder
    from synthdb.nets.pickles import read_network_pickle

    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    name = "iresnet50-7f187506.pth" if kind == "embedder weights" else "stylegan2-ffhq-256.pkl"
    os.symlink(tmp_path / "passwd", tmp_path / name)
    with pytest.raises(SynthdbError, match=rf"{name} is not a") as refused:
        if kind == "embedder weights":
            build_embedder("iresnet50", tmp_path / name)
        else:
            read_network_pickle(tmp_path / name)
    _one_line(refused)
    STATS["hostile_inputs"] += 1


def test_fifos_are_refused_without_waiting_on_them(
    sqlite_ctx: Context, tmp_path: Path, no_hang: None
) -> None:
    """A named pipe where a metadata file, an image or the store marker should be: refused at once, in one
    line, never opened to read (which would block until some writer came)."""
    from synthdb.store import fsck

    ffhq, lfw = tmp_path / "ffhq", tmp_path / "lfw"
    build_ffhq(ffhq)
    build_lfw(lfw)
    ijbc = build_ijbc(tmp_path / "ijbc")
    pipes = {"ffhq": ffhq / "ffhq-dataset-v2.json", "lfw": lfw / "people.txt"}
    pipes["ijbc"] = ijbc / "protocols" / "test1" / "enroll_templates.csv"  # IJB-C looks for a file: missing
    for source, fifo in pipes.items():
        root = tmp_path / source
        _fifo(fifo)
        with pytest.raises(
            SynthdbError, match=r"is not a regular file|enroll_templates.csv is missing"
        ) as refused:
            import_named(sqlite_ctx, source, root)
        _one_line(refused)
    tree = tmp_path / "tree"
    touch(tree / "a" / "0.png", _png((1, 2, 3)))
    touch(tree / "a" / "1.png", _png((1, 2, 3)))
    _fifo(tree / "a" / "1.png")
    report = import_named(sqlite_ctx, "imagefolder", tree, verify_images=True)
    assert report.added == 1 and not report.problems  # not a file: not a sample
    marker = sqlite_ctx.store.root / ".synthdb-store"
    _fifo(marker)
    with pytest.raises(SynthdbError, match="carries no .synthdb-store marker"):
        fsck.gc(sqlite_ctx.catalog, sqlite_ctx.store, min_age=0)
    STATS["hostile_inputs"] += 5
