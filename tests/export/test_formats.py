"""Exports, each read back by a reader written here from the format's description (not by synthdb), except
RecordIO: synthdb's reader, checked against bytes built by hand from the format's description.

Test images encode who they are: the left half is a solid colour per identity, the right half a grey
level per sample, so a decoded image (even a JPEG) tells its identity and sample apart.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import struct
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from synthdb.catalog.schema import GroupMember, Protocol, ProtocolGroup, Run, Sample, VerificationPair
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.export.api import export
from synthdb.export.recordio import Record, RecordReader, frame, read_records
from synthdb.export.selection import check_where
from synthdb.sources.registry import import_named
from tests.conftest import CliRun
from tests.sources.test_importer import faces_as_imagefolder

GREYS = 6


def identity_colour(k: int) -> tuple[int, int, int]:
    return (40 * (k % 6) + 20, 40 * ((k // 6) % 6) + 20, 40 * (k // 36) + 20)


def face_image(k: int, j: int, size: int = 32) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[:, : size // 2] = identity_colour(k)
    img[:, size // 2 :] = 20 + 40 * (j % GREYS)
    return img


def make_tree(root: Path, identities: int, per_identity: int, size: int = 32) -> Path:
    """``root/id<k>/img_<j>.png`` with coded images; returns root."""
    for k in range(identities):
        (root / f"id{k:03d}").mkdir(parents=True)
        for j in range(per_identity):
            Image.fromarray(face_image(k, j, size)).save(root / f"id{k:03d}" / f"img_{j}.png")
    return root


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def who(data: bytes) -> tuple[int, int]:
    """(identity k, sample grey index j) read back from a decoded image's two halves."""
    img = decode(data)
    h, w = img.shape[:2]
    left = img[h // 4 : 3 * h // 4, w // 8 : 3 * w // 8].reshape(-1, 3).mean(0)
    right = img[h // 4 : 3 * h // 4, 5 * w // 8 : 7 * w // 8].reshape(-1, 3).mean(0)
    palette = np.array([identity_colour(k) for k in range(216)])
    k = int(np.argmin(np.abs(palette - left).sum(1)))
    assert np.abs(palette[k] - left).max() < 8, (left, palette[k])
    j = int(round((right.mean() - 20) / 40))
    assert abs(right.mean() - (20 + 40 * j)) < 8 and np.ptp(right) < 8
    return k, j


@pytest.fixture
def coded(sqlite_ctx: Context, tmp_path: Path) -> Context:
    """A dataset 'coded': 5 identities x 4 images (the last identity has 1), 32x32 PNGs."""
    root = make_tree(tmp_path / "tree", 4, 4)
    (root / "id004").mkdir()
    Image.fromarray(face_image(4, 0)).save(root / "id004" / "img_0.png")
    import_named(sqlite_ctx, "imagefolder", root, name="coded")
    return sqlite_ctx


EXPECTED = [(k, j) for k in range(4) for j in range(4)] + [(4, 0)]


# ------------------------------------------------------------------------------------------ RecordIO


def read_recordio(folder: Path) -> dict[str, object]:
    """What insightface's MXFaceDataset sees, plus the legacy class-range records."""
    with RecordReader(folder / "train.rec", folder / "train.idx") as reader:
        indexed = sorted(reader.index.values())
        assert [r.offset for r in read_records(folder / "train.rec")] == indexed  # nothing unindexed
        header = reader[0]
        assert isinstance(header.label, tuple) and len(header.label) == 2
        first_class_record, end = (int(x) for x in header.label)
        images = []
        for idx in range(1, first_class_record):  # MXFaceDataset: imgidx = range(1, header.label[0])
            record = reader[idx]
            assert isinstance(record.label, float) and record.id == idx and record.data[:2] == b"\xff\xd8"
            images.append((int(record.label), record.data))
        ranges = [reader[i].label for i in range(first_class_record, end)]
        assert sorted(reader.index) == list(range(end))
    return {"images": images, "ranges": ranges}


def test_frame_splits_payloads_at_aligned_magic_words(tmp_path: Path) -> None:
    magic = struct.pack("<I", 0xCED7230A)
    payload = b"abcd" + magic + b"efg" + magic + b"hijklmn" + magic
    framed = frame(payload)
    assert len(framed) % 4 == 0
    (tmp_path / "f.rec").write_bytes(framed)
    with RecordReader(tmp_path / "f.rec") as reader:
        assert reader.payload_at(0) == (payload, len(framed))
    assert struct.unpack_from("<I", framed, 4)[0] >> 29 == 1  # cut at the aligned magic at offset 4
    plain = frame(b"xyz")
    assert plain == magic + struct.pack("<I", 3) + b"xyz\0"


def test_recordio_reads_back_as_insightface_does(coded: Context, tmp_path: Path) -> None:
    report = export(coded, "coded", "recordio", tmp_path / "rec", size=112, workers=2)
    out = read_recordio(tmp_path / "rec")
    classes = list(csv.DictReader((tmp_path / "rec" / "classes.csv").open()))
    assert [c["identity"] for c in classes] == [f"id{k:03d}" for k in range(5)]
    assert [int(c["images"]) for c in classes] == [4, 4, 4, 4, 1]
    seen = []
    for label, jpeg in out["images"]:
        assert Image.open(io.BytesIO(jpeg)).size == (112, 112)  # default --size for insightface
        k, j = who(jpeg)
        assert classes[label]["identity"] == f"id{k:03d}"
        seen.append((k, j))
    assert seen == EXPECTED
    starts = [1, 5, 9, 13, 17, 18]  # class c's image records are [starts[c], starts[c + 1])
    assert out["ranges"] == [(float(starts[c]), float(starts[c + 1])) for c in range(5)]
    assert (tmp_path / "rec" / "property").read_text() == "5,112,112\n17\n"
    meta = pickle.loads((tmp_path / "rec" / "train.meta").read_bytes())  # written one entry at a time
    assert meta == [{"image_index": i + 1, "image_classes": [k]} for i, (k, _) in enumerate(EXPECTED)]
    manifest = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert manifest == report.manifest and manifest["counts"]["selected"] == 17
    assert set(manifest["files"]) == {"train.rec", "train.idx", "property", "train.meta", "classes.csv"}
    rec_bytes = (tmp_path / "rec" / "train.rec").read_bytes()
    import hashlib

    assert manifest["files"]["train.rec"]["sha256"] == hashlib.sha256(rec_bytes).hexdigest()
    with coded.catalog.session() as session:
        run = session.get(Run, report.run_id)
        import_run = session.scalars(sa.select(Sample.run_id).limit(1)).one()
        assert run.kind == "export" and run.status == "succeeded" and run.params["format"] == "recordio"
        assert run.summary["output"]["images"] == 17
    assert manifest["source_runs"] == [import_run] and manifest["export_runs"] == [report.run_id]
    assert manifest["params"]["size"] == 112 and manifest["synthdb_version"]
    again = export(coded, "coded", "recordio", tmp_path / "rec", size=112)
    assert again.run_id is None and "complete" in again.note


def test_recordio_reader_reads_records_built_by_hand(tmp_path: Path) -> None:
    """The reader against the format's definition, not against our writer: a header record with two
    labels, then an image record cut in two at the magic word its data holds at an aligned offset."""
    magic = struct.pack("<I", 0xCED7230A)
    header = struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", 2.0, 3.0)
    data = b"\xff\xd8ab" + magic + b"tail!"
    image = struct.pack("<IfQQ", 0, 7.0, 1, 5) + data  # the magic sits at byte 28 of this payload
    rec = b"".join(
        [
            magic + struct.pack("<I", len(header)) + header,
            magic + struct.pack("<I", 1 << 29 | 28) + image[:28],
            magic + struct.pack("<I", 3 << 29 | 5) + image[32:] + b"\0\0\0",
        ]
    )
    assert rec[40:] == frame(image)  # and the writer frames it the same way
    (tmp_path / "t.rec").write_bytes(rec)
    (tmp_path / "t.idx").write_bytes(b"1\t40\n0\t0\n")
    want = [Record(1, 40, 7.0, 1, 5, data), Record(0, 0, (2.0, 3.0), 0, 0, b"")]
    assert list(read_records(tmp_path / "t.rec", tmp_path / "t.idx")) == want  # in the index's order
    assert list(read_records(tmp_path / "t.rec")) == [r._replace(key=None) for r in want[::-1]]
    with RecordReader(tmp_path / "t.rec", tmp_path / "t.idx") as reader:
        assert reader[1].data == data and reader.index == {1: 40, 0: 0}
        with pytest.raises(SynthdbError, match=r"t\.rec: its index has no record 2"):
            reader[2]


def test_recordio_cli_export_reads_back_record_for_record(
    coded: Context, tmp_path: Path, synthdb_cli: CliRun
) -> None:
    """Round trip: ``synthdb export --format recordio``, every record read back; the images' labels and
    JPEG bytes equal those of the same selection exported as WebDataset and read by ``tarfile``."""

    ws = ["-w", str(coded.ws.root)]
    for fmt, out in (("recordio", "r"), ("webdataset", "w")):
        done = synthdb_cli(*ws, "export", "coded", str(tmp_path / out), "--format", fmt, "--size", "64")
        assert done.exit_code == 0, done.output
    tars = [sample for shard in read_shards(tmp_path / "w", "coded") for sample in shard.values()]
    records = list(read_records(tmp_path / "r" / "train.rec", tmp_path / "r" / "train.idx"))
    assert [r._replace(key=None) for r in records] == list(read_records(tmp_path / "r" / "train.rec"))
    assert [r.key for r in records] == list(range(1 + 17 + 5))
    header, images, ranges = records[0], records[1:18], records[18:]
    assert header.label == (18.0, 23.0)
    assert [(int(r.label), r.data) for r in images] == [(int(t["cls"]), t["jpg"]) for t in tars]
    assert [r.id for r in images] == list(range(1, 18)) and all(r.label == int(r.label) for r in images)
    starts = [1, 5, 9, 13, 17, 18]
    assert [r.label for r in ranges] == [(float(starts[c]), float(starts[c + 1])) for c in range(5)]


# ---------------------------------------------------------------------------------------- WebDataset


def read_shards(folder: Path, prefix: str) -> list[dict[str, dict[str, bytes]]]:
    """Each shard as {key: {ext: bytes}}, keys in tar order; every shard a well-formed tar."""
    shards = []
    for path in sorted(folder.glob(f"{prefix}-*.tar")):
        assert path.stat().st_size % 10240 == 0
        samples: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tar:
            for info in tar:
                key, ext = info.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(info).read()
        shards.append(samples)
    return shards


def test_tar_members_match_the_standard_library() -> None:
    from synthdb.export.webdataset import member

    for name, data in (("000000001.jpg", b"x" * 700), ("k.json", b""), ("a" * 100, b"y" * 512)):
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uname, info.gname = len(data), 0o444, "", ""
        want = info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)
        assert member(name, data) == want


def test_webdataset_shards_and_samples(coded: Context, tmp_path: Path) -> None:
    export(coded, "coded", "webdataset", tmp_path / "wds", shard_max_count=5, workers=1)
    shards = read_shards(tmp_path / "wds", "coded")
    assert [len(s) for s in shards] == [5, 5, 5, 2]
    names = [f"{shard:06d}" for shard in range(4)]
    assert sorted(p.name for p in (tmp_path / "wds").glob("*.tar")) == [f"coded-{n}.tar" for n in names]
    samples = [(key, s) for shard in shards for key, s in shard.items()]
    assert [key for key, _ in samples] == [f"{i:09d}" for i in range(17)]
    for (_, files), (k, j) in zip(samples, EXPECTED, strict=True):
        assert set(files) == {"jpg", "cls", "json"}
        facts = json.loads(files["json"])
        assert who(files["jpg"]) == (k, j) and Image.open(io.BytesIO(files["jpg"])).size == (32, 32)
        assert int(files["cls"]) == k == facts["class"]
        assert facts["identity"] == f"id{k:03d}" and facts["key"] == f"id{k:03d}/img_{j}.png"
    by_size = tmp_path / "wds-size"
    one = len(b"".join(f for _, files in samples[:2] for f in files.values())) + 6 * 512 + 2 * 512
    export(coded, "coded", "webdataset", by_size, shard_max_bytes=one)
    assert all(len(s) <= 2 for s in read_shards(by_size, "coded"))


# --------------------------------------------------------------------------------------- ImageFolder


def test_imagefolder_copies_files_and_resizes(coded: Context, tmp_path: Path) -> None:
    export(coded, "coded", "imagefolder", tmp_path / "copy")
    tree = tmp_path / "tree"
    files = sorted(p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*.png"))
    assert files == sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.png"))
    for rel in files:
        assert (tmp_path / "copy" / rel).read_bytes() == (tree / rel).read_bytes()
    export(coded, "coded", "imagefolder", tmp_path / "small", size=16, where="i.label = 'id002'")
    made = sorted((tmp_path / "small").rglob("*.png"))
    assert [p.relative_to(tmp_path / "small").as_posix() for p in made] == [
        f"id002/img_{j}.png" for j in range(4)
    ]
    for j, path in enumerate(made):
        expected = Image.fromarray(face_image(2, j)).resize((16, 16), Image.Resampling.BICUBIC)
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(expected))


def test_a_complete_export_again_leaves_no_scratch_folder(
    coded: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: running a complete export again left its selection spill folder in the output, which a
    folder reader (torchvision's ImageFolder) takes for one more, empty, class."""
    from synthdb.export import selection
    from synthdb.export.folder import SPILL_NAME

    monkeypatch.setattr(selection, "RUN_ROWS", 3)  # spill the selection to disk, as a large one does
    out = tmp_path / "copy"
    export(coded, "coded", "imagefolder", out)
    first = sorted(p.name for p in out.iterdir())
    again = export(coded, "coded", "imagefolder", out)
    assert again.run_id is None and "complete" in again.note
    assert sorted(p.name for p in out.iterdir()) == first and SPILL_NAME not in first


def test_crop_from_a_fixed_generator_preset(sqlite_ctx: Context, tmp_path: Path) -> None:
    import torch

    from synthdb.faces.align import fixed_crop

    make_tree(tmp_path / "gen", 2, 1, size=128)
    import_named(sqlite_ctx, "imagefolder", tmp_path / "gen", name="gen")
    export(sqlite_ctx, "gen", "imagefolder", tmp_path / "out", crop="iresnet_bob", source="ffhq128")
    got = np.asarray(Image.open(tmp_path / "out" / "id001" / "img_0.png"))
    image = torch.from_numpy(face_image(1, 0, 128)).permute(2, 0, 1)[None].float()
    want = fixed_crop(image, "ffhq128", "iresnet_bob")[0].round().clamp(0, 255).byte().permute(1, 2, 0)
    assert got.shape == (112, 112, 3) and np.array_equal(got, want.numpy())


def test_detector_crop_of_photos_skips_and_names_faceless_ones(
    sqlite_ctx: Context, faces_dir: Path, tmp_path: Path
) -> None:
    faces_as_imagefolder(faces_dir, tmp_path / "faces")
    import_named(sqlite_ctx, "imagefolder", tmp_path / "faces", name="faces")
    where = "s.key IN ('seb/seb_01.jpg', 'noface_01/noface_01.jpg', 'biden/biden_02.jpg')"
    report = export(sqlite_ctx, "faces", "webdataset", tmp_path / "out", where=where, crop="arcface")
    counts = report.manifest["counts"]
    assert counts["selected"] == 3 and counts["skipped_by_kind"] == {"no_face": 1}
    assert report.manifest["skipped"][0]["key"] == "noface_01/noface_01.jpg"
    assert report.manifest["params"]["source"] == "mtcnn"  # genuine photos: detector by default
    samples = read_shards(tmp_path / "out", "faces")[0]
    assert [json.loads(s["json"])["identity"] for s in samples.values()] == ["biden", "seb"]
    assert all(Image.open(io.BytesIO(s["jpg"])).size == (112, 112) for s in samples.values())
    classes = list(csv.DictReader((tmp_path / "out" / "classes.csv").open()))
    counts = [(c["class"], c["identity"], c["images"]) for c in classes]
    assert counts == [("0", "biden", "1"), ("1", "seb", "1")]  # the face-less identity gets no class
    assert [int(s["cls"]) for s in samples.values()] == [0, 1]
    assert report.manifest["counts"]["classes"] == 2 and report.manifest["counts"]["identities"] == 3
    assert report.manifest["output"]["identities_without_images"] == 1


# ----------------------------------------------------------------------------------------------- bob


def add_protocol(ctx: Context, dataset: str) -> None:
    """Protocol P: train = id000, dev enrol/probe id001-id002, eval enrol/probe id003."""
    with ctx.catalog.session() as session:
        rows = session.execute(
            sa.text(
                "SELECT s.id, s.key, s.dataset_id FROM sample s JOIN dataset d ON d.id = s.dataset_id "
                "WHERE d.name = :n"
            ),
            {"n": dataset},
        ).all()
        ids = {key: sid for sid, key, _ in rows}
        protocol = Protocol(dataset_id=rows[0].dataset_id, name="P")
        session.add(protocol)
        session.flush()
        groups = {}
        for name in ("train", "dev", "eval"):
            groups[name] = ProtocolGroup(protocol_id=protocol.id, name=name)
            session.add(groups[name])
        session.flush()
        members = [("train", None, f"id000/img_{j}.png") for j in range(4)]
        for k, group in ((1, "dev"), (2, "dev"), (3, "eval")):
            members.append((group, "enroll", f"id{k:03d}/img_0.png"))
            members += [(group, "probe", f"id{k:03d}/img_{j}.png") for j in (1, 2, 3)]
        for group, purpose, key in members:
            session.add(GroupMember(group_id=groups[group].id, sample_id=ids[key], purpose=purpose))
        for position, (a, b, same) in enumerate(
            [
                ("id001/img_0.png", "id001/img_1.png", True),
                ("id001/img_0.png", "id002/img_0.png", False),
                ("id003/img_2.png", "id003/img_3.png", True),
                ("id000/img_1.png", "id004/img_0.png", False),
            ]
        ):
            session.add(
                VerificationPair(
                    group_id=groups["dev"].id,
                    position=position,
                    first_sample_id=ids[a],
                    second_sample_id=ids[b],
                    genuine=same,
                )
            )


def read_bob(folder: Path) -> dict[str, list[dict[str, str]]]:
    return {p.relative_to(folder).as_posix(): list(csv.DictReader(p.open())) for p in folder.rglob("*.csv")}


# ------------------------------------------------------------------------------------------ pairs .bin


def test_pairs_bin_from_protocol_and_sampled(coded: Context, tmp_path: Path) -> None:
    add_protocol(coded, "coded")
    report = export(coded, "coded", "pairs-bin", tmp_path / "p", protocol="P", size=112)
    with open(tmp_path / "p" / "coded.bin", "rb") as fh:
        bins, issame = pickle.load(fh, encoding="bytes")
    assert issame == [True, False, True, False] and len(bins) == 8
    assert [who(b) for b in bins] == [(1, 0), (1, 1), (1, 0), (2, 0), (3, 2), (3, 3), (0, 1), (4, 0)]
    assert all(Image.open(io.BytesIO(b)).size == (112, 112) for b in bins)
    assert report.manifest["output"]["pairs"] == 4
    filtered = export(
        coded, "coded", "pairs-bin", tmp_path / "pf", protocol="P", where="i.label <> 'id004'", size=112
    )
    assert filtered.manifest["output"]["pairs_not_selected"] == 1

    sampled = export(coded, "coded", "pairs-bin", tmp_path / "s", pairs=40, seed=7, size=32)
    with open(tmp_path / "s" / "coded.bin", "rb") as fh:
        bins, issame = pickle.load(fh)
    assert len(issame) == 40 and sum(issame) == 20 and len(bins) == 80
    pairs = [(who(bins[2 * i]), who(bins[2 * i + 1])) for i in range(40)]
    assert all((a[0] == b[0]) == same and a != b for (a, b), same in zip(pairs, issame, strict=True))
    assert len({frozenset(p) for p in pairs}) == 40
    assert issame[:2] == [True, True] and issame[2:4] == [False, False]  # fold 1: genuine, then impostor
    again = export(coded, "coded", "pairs-bin", tmp_path / "s2", pairs=40, seed=7, size=32)
    assert again.manifest["files"] == sampled.manifest["files"]
    with coded.catalog.session() as session:
        assert session.get(Run, sampled.run_id).seed == 7
    with pytest.raises(SynthdbError, match="lower --pairs"):
        export(coded, "coded", "pairs-bin", tmp_path / "many", pairs=1000, size=112)


# -------------------------------------------------------------------------------------- synthetics-h5


# ------------------------------------------------------------------------------------- --where, folders


@pytest.mark.parametrize(
    "predicate",
    [
        "1=1; DROP TABLE sample",
        "true) OR (true",
        "s.role = 'genuine' -- and more",
        "s.role = 'genuine' /* comment */",
        "DELETE FROM sample",
        "true); COPY sample TO '/tmp/x.csv'; SELECT (1",
        "s.key = 'unterminated",
        "s.key = $$x$$",
        "",
    ],
)
def test_where_refuses_anything_but_a_read_only_predicate(predicate: str) -> None:
    with pytest.raises(SynthdbError, match="--where"):
        check_where(predicate)


def test_where_filters_on_both_catalogs(ctx: Context, tmp_path: Path) -> None:
    make_tree(tmp_path / "tree", 3, 2)
    import_named(ctx, "imagefolder", tmp_path / "tree", name="t")
    report = export(
        ctx,
        "t",
        "webdataset",
        tmp_path / "o",
        where="i.label IN ('id000', 'id002') AND s.key LIKE '%img_1%' AND s.key <> 'a;b--c'",
    )
    keys = [json.loads(s["json"])["key"] for s in read_shards(tmp_path / "o", "t")[0].values()]
    assert keys == ["id000/img_1.png", "id002/img_1.png"] and report.manifest["counts"]["classes"] == 2
    with pytest.raises(SynthdbError, match="--where"):
        export(ctx, "t", "webdataset", tmp_path / "bad", where="1=1; DELETE FROM sample")
    assert not (tmp_path / "bad").exists()


def test_output_folder_rules(coded: Context, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    with pytest.raises(SynthdbError, match="not empty and holds no synthdb export"):
        export(coded, "coded", "imagefolder", tmp_path / "busy")
    export(coded, "coded", "webdataset", tmp_path / "w")
    with pytest.raises(SynthdbError, match="other parameters"):
        export(coded, "coded", "webdataset", tmp_path / "w", quality=80)
    with pytest.raises(SynthdbError, match="holds no images: drop --crop"):
        export(coded, "coded", "synthetics-h5", tmp_path / "h", size=112)
    with pytest.raises(SynthdbError, match="unknown export format"):
        export(coded, "coded", "tfrecord", tmp_path / "t")
    with pytest.raises(SynthdbError, match="no dataset named 'nope'"):
        export(coded, "nope", "recordio", tmp_path / "n")


def test_cli_export_and_one_line_errors(coded: Context, tmp_path: Path, synthdb_cli: CliRun) -> None:
    ws = ["-w", str(coded.ws.root)]
    done = synthdb_cli(*ws, "export", "coded", str(tmp_path / "c"), "--format", "recordio", "--size", "64")
    assert done.exit_code == 0, done.output
    assert "exported 'coded' as recordio" in done.output and "17 images" in done.output
    assert (tmp_path / "c" / "property").read_text() == "5,64,64\n17\n"
    refused = synthdb_cli(
        *ws,
        "export",
        "coded",
        str(tmp_path / "d"),
        "--format",
        "webdataset",
        "--where",
        "1=1; DROP TABLE sample",
    )
    assert refused.exit_code == 1
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --where refused")


def test_identity_mapping_follows_natural_order(sqlite_ctx: Context, tmp_path: Path) -> None:
    root = tmp_path / "nat"
    for label in ("10", "9", "b", "a"):
        (root / label).mkdir(parents=True)
        for j in (10, 2):
            Image.fromarray(face_image(0, 0)).save(root / label / f"x{j}.png")
    import_named(sqlite_ctx, "imagefolder", root, name="nat")
    export(sqlite_ctx, "nat", "webdataset", tmp_path / "o")
    facts = [json.loads(s["json"]) for s in read_shards(tmp_path / "o", "nat")[0].values()]
    order = defaultdict(list)
    for f in facts:
        order[f["class"]].append(f["key"])
    assert [f["identity"] for f in facts[::2]] == ["9", "10", "a", "b"]
    assert order[0] == ["9/x2.png", "9/x10.png"]
