"""The genuine-database importers (and samples.h5) on small trees that follow each real layout exactly.

Every tree uses the upstream file names, JSON keys and CSV headers; image files are empty unless a
test decodes them (imports stat files, they do not read them). Catalog tests run on SQLite and
PostgreSQL through the ``ctx`` fixture.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from synthdb.admin import init_workspace
from synthdb.analysis.query import query
from synthdb.catalog.schema import (
    Dataset,
    GroupMember,
    Identity,
    ProtocolGroup,
    Run,
    Sample,
    Shard,
    VerificationPair,
)
from synthdb.catalog.schema import Protocol as ProtocolRow
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.sources import samples as samples_source
from synthdb.sources.multipie import SUBJECT_GROUPS, parse_path
from synthdb.sources.registry import import_named
from synthdb.store import parquet
from synthdb.store.hdf5 import BFM_DIMS, H5Sample, SampleCollection

COUNTED = (Dataset, Identity, Sample, ProtocolRow, ProtocolGroup, GroupMember, VerificationPair, Shard)


def touch(path: Path, data: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def counts(ctx: Context) -> dict[str, int]:
    with ctx.catalog.engine.connect() as conn:
        return {
            t.__tablename__: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in COUNTED
        }


def rows(ctx: Context, sql: str) -> list[dict[str, Any]]:
    return query(ctx, sql).to_pylist()


def members(ctx: Context, protocol: str) -> list[dict[str, Any]]:
    """(group, purpose, key, attributes) of every member of a protocol, straight from the catalog."""
    sample, member = Sample.__table__, GroupMember.__table__
    group, proto = ProtocolGroup.__table__, ProtocolRow.__table__
    with ctx.catalog.engine.connect() as conn:
        found = conn.execute(
            sa.select(group.c.name, member.c.purpose, sample.c.key, sample.c.attributes)
            .join(member, member.c.group_id == group.c.id)
            .join(sample, sample.c.id == member.c.sample_id)
            .join(proto, proto.c.id == group.c.protocol_id)
            .where(proto.c.name == protocol)
            .order_by(sample.c.key)
        )
        return [dict(zip(("group", "purpose", "key", "attributes"), r, strict=True)) for r in found]


def pairs(ctx: Context, protocol: str) -> list[dict[str, Any]]:
    pair, group, proto, sample = (
        VerificationPair.__table__,
        ProtocolGroup.__table__,
        ProtocolRow.__table__,
        Sample.__table__,
    )
    first, second = sample.alias("a"), sample.alias("b")
    with ctx.catalog.engine.connect() as conn:
        found = conn.execute(
            sa.select(
                group.c.name,
                pair.c.position,
                first.c.key,
                second.c.key,
                pair.c.first_template,
                pair.c.second_template,
                pair.c.genuine,
            )
            .join(group, group.c.id == pair.c.group_id)
            .join(proto, proto.c.id == group.c.protocol_id)
            .outerjoin(first, first.c.id == pair.c.first_sample_id)
            .outerjoin(second, second.c.id == pair.c.second_sample_id)
            .where(proto.c.name == protocol)
            .order_by(group.c.name, pair.c.position)
        )
        names = ("group", "position", "first", "second", "first_template", "second_template", "genuine")
        return [dict(zip(names, r, strict=True)) for r in found]


# ------------------------------------------------------------------------------------------------- FFHQ


def ffhq_entry(index: int, path: str | None = None) -> dict[str, Any]:
    """One entry of ffhq-dataset-v2.json, with the upstream keys (values shortened)."""
    folder = f"{index // 1000 * 1000:05d}"
    landmarks = [[100.0 + i, 400.0 + 2 * i] for i in range(68)]
    return {
        "category": "training" if index < 60000 else "validation",
        "metadata": {
            "photo_url": f"https://www.flickr.com/photos/someone/{index}/",
            "photo_title": "a photo",
            "author": "someone",
            "country": "Finland",
            "license": "Attribution License",
            "license_url": "https://creativecommons.org/licenses/by/2.0/",
            "date_uploaded": "2010-05-01",
            "date_crawled": "2018-10-10",
        },
        "image": {
            "file_url": "https://drive.google.com/uc?id=x",
            "file_path": path or f"images1024x1024/{folder}/{index:05d}.png",
            "file_size": 1488194,
            "file_md5": f"{index:032x}",
            "pixel_size": [1024, 1024],
            "pixel_md5": f"{index + 1:032x}",
            "face_landmarks": landmarks,
        },
        "thumbnail": {
            "file_url": "https://drive.google.com/uc?id=y",
            "file_path": f"thumbnails128x128/{folder}/{index:05d}.png",
            "file_size": 29050,
            "file_md5": f"{index + 2:032x}",
            "pixel_size": [128, 128],
            "pixel_md5": f"{index + 3:032x}",
        },
        "in_the_wild": {
            "file_url": "https://drive.google.com/uc?id=z",
            "file_path": f"in-the-wild-images/{folder}/{index:05d}.png",
            "file_size": 3991569,
            "file_md5": f"{index + 4:032x}",
            "pixel_size": [2016, 1512],
            "pixel_md5": f"{index + 5:032x}",
            "face_rect": [667, 410, 1438, 1181],
            "face_landmarks": [[700.0 + i, 800.0 + i] for i in range(68)],
            "face_quad": [[500.1, 200.2], [500.3, 1300.4], [1600.5, 1300.6], [1600.7, 200.8]],
        },
    }


FFHQ_INDICES = (0, 1, 1000, 60000, 69999)


def build_ffhq(
    root: Path, two_digit: bool = False, folders: tuple[str, ...] = ("images1024x1024",), data: bytes = b""
) -> dict[str, Any]:
    """An FFHQ root with the JSON and the files of ``folders``, in the 5-digit or 2-digit layout."""
    meta = {str(i): ffhq_entry(i) for i in FFHQ_INDICES}
    root.mkdir(parents=True)
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(meta))
    for index in FFHQ_INDICES:
        sub = f"{index // 1000:02d}" if two_digit else f"{index // 1000 * 1000:05d}"
        for folder in folders:
            suffix = ".jpg" if folder == "images256x256" else ".png"
            touch(root / folder / sub / f"{index:05d}{suffix}", data)
    return meta


@pytest.mark.parametrize("two_digit", [False, True], ids=["5-digit", "2-digit"])
def test_ffhq_layouts_resolutions_and_protocol(ctx: Context, tmp_path: Path, two_digit: bool) -> None:
    build_ffhq(tmp_path / "ffhq", two_digit, ("images1024x1024", "thumbnails128x128", "images256x256"))
    report = import_named(ctx, "ffhq", tmp_path / "ffhq")
    assert (report.added, report.problem_counts) == (15, {})  # 5 images x 3 folders; no in-the-wild folder
    with ctx.catalog.session() as session:
        by_key = {s.key: s for s in session.scalars(sa.select(Sample))}
        labels = dict(session.execute(sa.select(Identity.id, Identity.label)).all())
    sample = by_key["images1024x1024_01_01000"]
    sub = "01" if two_digit else "01000"
    assert sample.path == f"images1024x1024/{sub}/01000.png" and labels[sample.identity_id] == "01000"
    assert sample.label == "images1024x1024" and sample.attributes["metadata"]["author"] == "someone"
    assert sample.attributes["face_landmarks"][0] == [100.0, 400.0] and sample.attributes["index"] == 1000
    resized = by_key["images256x256_01_01000"]
    assert resized.path == f"images256x256/{sub}/01000.jpg" and resized.identity_id == sample.identity_id
    assert resized.attributes["face_landmarks"][1] == [25.25, 100.5]  # (101, 402) scaled by 256/1024
    thumb = by_key["thumbnails128x128_69_69999"]
    assert thumb.attributes["pixel_size"] == [128, 128] and thumb.attributes["face_landmarks"][0] == [
        12.5,
        50.0,
    ]
    assert len(set(labels.values())) == 5
    groups = Counter((m["group"], m["purpose"]) for m in members(ctx, "ffhq"))
    assert groups == {("training", "train"): 9, ("validation", None): 6}


def test_ffhq_in_the_wild_keeps_its_box_and_landmarks(sqlite_ctx: Context, tmp_path: Path) -> None:
    build_ffhq(tmp_path / "ffhq", folders=("in-the-wild-images",))
    assert import_named(sqlite_ctx, "ffhq", tmp_path / "ffhq").added == 5
    with sqlite_ctx.catalog.session() as session:
        wild = session.scalars(sa.select(Sample).where(Sample.key == "in-the-wild-images_00_00001")).one()
    assert wild.path == "in-the-wild-images/00000/00001.png"
    assert wild.attributes["face_rect"] == [667, 410, 1438, 1181] and len(wild.attributes["face_quad"]) == 4
    assert wild.attributes["face_landmarks"][0] == [700.0, 800.0] and wild.attributes["pixel_size"] == [
        2016,
        1512,
    ]


def test_three_corrupt_and_two_missing_files_are_named_and_the_rest_imported(
    ctx: Context, tmp_path: Path
) -> None:
    root = tmp_path / "ffhq"
    meta = build_ffhq(root, data=png_bytes())
    for index in range(2, 9):  # 7 more entries: 12 listed in all
        meta[str(index)] = ffhq_entry(index)
        touch(root / "images1024x1024" / "00000" / f"{index:05d}.png", png_bytes())
    ordered = dict(sorted(meta.items(), key=lambda item: int(item[0])))  # index order, as upstream
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(ordered))
    corrupt = ["00000/00002.png", "00000/00003.png", "01000/01000.png"]
    missing = ["00000/00004.png", "60000/60000.png"]
    for rel in corrupt:
        (root / "images1024x1024" / rel).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for rel in missing:
        (root / "images1024x1024" / rel).unlink()
    report = import_named(ctx, "ffhq", root, verify_images=True)
    assert (report.added, report.scanned) == (7, 12)
    assert report.problem_counts == {"unreadable": 3, "missing": 2}
    assert [p.split(" ")[0] for p in report.problems["unreadable"]] == [
        f"images1024x1024/{r}" for r in corrupt
    ]
    assert report.problems["missing"] == [f"images1024x1024/{r}" for r in missing]
    with ctx.catalog.session() as session:
        assert session.get(Run, report.run_id).summary["problems"]["missing"] == report.problems["missing"]


def test_metadata_paths_escaping_the_root_are_refused(ctx: Context, tmp_path: Path) -> None:
    root = tmp_path / "data" / "ffhq"
    meta = build_ffhq(root)
    meta["1"]["image"]["file_path"] = "../../x"
    touch(tmp_path / "x")  # the target exists: the path is refused for where it points, not for being absent
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(meta))
    report = import_named(ctx, "ffhq", root)
    assert report.added == 4 and report.problems == {"escapes_root": ["../../x"]}
    with ctx.catalog.engine.connect() as conn:
        paths = conn.execute(sa.select(Sample.__table__.c.path)).scalars().all()
    assert all(".." not in p for p in paths)


def test_ffhq_without_its_json_fails_before_writing(sqlite_ctx: Context, tmp_path: Path) -> None:
    (tmp_path / "ffhq" / "images1024x1024" / "00000").mkdir(parents=True)
    with pytest.raises(SynthdbError, match="ffhq-dataset-v2.json is missing: put"):
        import_named(sqlite_ctx, "ffhq", tmp_path / "ffhq")
    (tmp_path / "ffhq" / "ffhq-dataset-v2.json").write_text("{not json")
    with pytest.raises(SynthdbError, match="is not readable JSON"):
        import_named(sqlite_ctx, "ffhq", tmp_path / "ffhq")
    assert counts(sqlite_ctx)["dataset"] == 0


# --------------------------------------------------------------------------------------------- MultiPIE

CAMERAS = (
    "11_0",
    "12_0",
    "09_0",
    "08_0",
    "13_0",
    "14_0",
    "05_1",
    "05_0",
    "04_1",
    "19_0",
    "20_0",
    "01_0",
    "24_0",
)
CAMERAS += ("08_1", "19_1")
RECORDINGS = {1: (1, 2), 2: (1, 2, 3), 3: (1, 2, 3), 4: (1, 2, 3)}


def multipie_path(subject: int, session: int, recording: int, camera: str, shot: int) -> str:
    return (
        f"session{session:02d}/multiview/{subject:03d}/{recording:02d}/{camera}/"
        f"{subject:03d}_{session:02d}_{recording:02d}_{camera.replace('_', '')}_{shot:02d}.png"
    )


def build_multipie(
    root: Path, attendance: dict[int, tuple[int, ...]], cameras: tuple[str, ...], shots: range
) -> int:
    count = 0
    for subject, sessions in attendance.items():
        for session in sessions:
            for recording in RECORDINGS[session]:
                for camera in cameras:
                    for shot in shots:
                        touch(root / multipie_path(subject, session, recording, camera, shot))
                        count += 1
    return count


# dev subjects 2 (all sessions) and 4 (sessions 1-2), eval 3 (sessions 1, 3), train 1 (sessions 1, 3)
ATTENDANCE = {1: (1, 3), 2: (1, 2, 3, 4), 3: (1, 3), 4: (1, 2)}
EXPRESSIONS_PER_IMAGE_IN_E_LIT_DEV = {
    "neutral": 7,  # subject 2: 01/01 02/01 03/01 04/01 04/02; subject 4: 01/01 02/01
    "surprise": 2,
    "squint": 2,
    "smile": 1,  # 03/02 of subject 2; 01/02 (session 1, not the enrolment recording) is in no group
    "disgust": 1,
    "scream": 1,
}


def test_multipie_attributes_protocols_and_expression_query(ctx: Context, tmp_path: Path) -> None:
    total = build_multipie(tmp_path / "mpie", ATTENDANCE, ("05_1", "08_0", "11_0"), range(0, 20, 7))
    (tmp_path / "mpie" / "session01" / "multiview" / "001" / "01" / "05_1" / "Thumbs.db").write_bytes(b"x")
    report = import_named(ctx, "multipie", tmp_path / "mpie")
    assert report.added == total == 26 * 3 * 3 and not report.problem_counts
    with ctx.catalog.session() as session:
        sample = session.scalars(
            sa.select(Sample).where(Sample.key == "session03_multiview_001_02_05_1_001_03_02_051_07")
        ).one()
        identities = session.scalars(sa.select(Identity.label).order_by(Identity.label)).all()
    assert sample.path == "session03/multiview/001/02/05_1/001_03_02_051_07.png"
    assert sample.attributes == {
        "subject": 1,
        "session": 3,
        "recording": 2,
        "camera": "05_1",
        "shot": 7,
        "expression": "smile",
    }
    assert identities == ["001", "002", "003", "004"]

    e_lit = members(ctx, "E_lit")
    dev = [m for m in e_lit if m["group"] == "dev"]
    enroll = [m for m in dev if m["purpose"] == "enroll"]
    assert sorted(m["attributes"]["subject"] for m in enroll) == [2, 4]  # one enrolment image per subject
    assert all((m["attributes"]["session"], m["attributes"]["recording"]) == (1, 1) for m in enroll)
    probes = [m["attributes"] for m in dev if m["purpose"] == "probe"]
    assert len(probes) == 9 + 3 and {p["session"] for p in probes} == {2, 3, 4}
    assert all((a["camera"], a["shot"]) == ("05_1", 7) for a in (m["attributes"] for m in e_lit))
    assert Counter(m["purpose"] for m in e_lit if m["group"] == "train") == {"train": 5}  # subject 1: 2 + 3
    assert Counter(m["purpose"] for m in e_lit if m["group"] == "eval") == {"enroll": 1, "probe": 3}

    p_center = Counter(
        (m["group"], m["purpose"], m["attributes"]["camera"]) for m in members(ctx, "P_center_lit")
    )
    assert p_center[("dev", "enroll", "05_1")] == 2 and p_center[("dev", "enroll", "08_0")] == 0
    assert p_center[("dev", "probe", "08_0")] == 5 and not any(k[2] == "11_0" for k in p_center)
    u = Counter((m["group"], m["purpose"], m["attributes"]["shot"]) for m in members(ctx, "U"))
    assert u == {
        ("train", "train", 0): 2,
        ("train", "train", 7): 2,
        ("train", "train", 14): 2,
        ("dev", "enroll", 0): 2,
        **{("dev", "probe", shot): 5 for shot in (0, 7, 14)},
        ("eval", "enroll", 0): 1,
        **{("eval", "probe", shot): 1 for shot in (0, 7, 14)},
    }

    per_expression = rows(
        ctx,
        """
        SELECT json_extract_string(s.attributes, '$.expression') AS expression, count(*) AS images
        FROM catalog.sample s
        JOIN catalog.group_member m ON m.sample_id = s.id
        JOIN catalog.protocol_group g ON g.id = m.group_id
        JOIN catalog.protocol p ON p.id = g.protocol_id
        JOIN catalog.dataset d ON d.id = p.dataset_id
        WHERE d.name = 'multipie' AND p.name = 'E_lit' AND g.name = 'dev'
        GROUP BY 1 ORDER BY 1
        """,
    )
    assert {r["expression"]: r["images"] for r in per_expression} == EXPRESSIONS_PER_IMAGE_IN_E_LIT_DEV


def test_multipie_tree_with_some_sessions_imports_what_it_has(sqlite_ctx: Context, tmp_path: Path) -> None:
    total = build_multipie(tmp_path / "mpie", {2: (2,), 241: (2,)}, ("05_1",), range(7, 8))
    report = import_named(sqlite_ctx, "multipie", tmp_path / "mpie")
    assert report.added == total == 6
    assert Counter((m["group"], m["purpose"]) for m in members(sqlite_ctx, "E_lit")) == {("dev", "probe"): 6}
    with pytest.raises(SynthdbError, match="no session01..04/multiview folders"):
        import_named(sqlite_ctx, "multipie", tmp_path, name="elsewhere")


@pytest.mark.slow
def test_multipie_rules_reproduce_the_reference_counts_on_a_full_size_tree() -> None:
    """Every multiview path of the full database: 337 subjects, 15 cameras, 20 shots.

    Dev and eval subjects attend all four sessions; the 208 train subjects attend 120, 74, 101 and 110
    times sessions 1-4 (the real attendance is 249 / 203 / 230 / 239 with the 129 dev/eval subjects).
    """
    train = sorted(s for s, g in SUBJECT_GROUPS.items() if g == "train")
    attendance: dict[int, set[int]] = {
        s: ({1, 2, 3, 4} if g != "train" else set()) for s, g in SUBJECT_GROUPS.items()
    }
    start = 0
    for session, attendees in ((1, 120), (2, 74), (3, 101), (4, 110)):
        for k in range(attendees):
            attendance[train[(start + k) % len(train)]].add(session)
        start = (start + attendees) % len(train)
    assert all(attendance.values()) and len(attendance) == 337
    found: Counter[tuple[str, str, str]] = Counter()
    paths = 0
    for subject, sessions in attendance.items():
        for session in sorted(sessions):
            for recording in RECORDINGS[session]:
                for camera in CAMERAS:
                    for shot in range(20):
                        entry = parse_path(multipie_path(subject, session, recording, camera, shot))
                        assert entry is not None
                        found.update(entry.groups)
                        paths += 1
    assert paths == 754_200
    assert {k: v for k, v in found.items() if k[0] != "U"} == {
        ("E_lit", "train", "train"): 1095,
        ("E_lit", "dev", "enroll"): 64,
        ("E_lit", "dev", "probe"): 576,
        ("E_lit", "eval", "enroll"): 65,
        ("E_lit", "eval", "probe"): 585,
        ("P_center_lit", "train", "train"): 3605,
        ("P_center_lit", "dev", "enroll"): 64,
        ("P_center_lit", "dev", "probe"): 1792,
        ("P_center_lit", "eval", "enroll"): 65,
        ("P_center_lit", "eval", "probe"): 1820,
    }
    assert found[("U", "dev", "enroll")] == 64 and found[("U", "dev", "probe")] == 64 * 4 * 19


@pytest.mark.parametrize(
    "rel",
    [
        "session01/multiview/001/01/05_1/001_01_01_050_07.png",  # camera in the name disagrees
        "session01/multiview/001/01/05_1/002_01_01_051_07.png",  # subject disagrees
        "session01/multiview/001/01/05_1/001_01_01_051_07.txt",
        "session01/highres/001/01/05_1/001_01_01_051_07.png",
    ],
)
def test_multipie_paths_that_disagree_with_their_folders_are_not_samples(rel: str) -> None:
    assert parse_path(rel) is None


# -------------------------------------------------------------------------------------------------- LFW

LFW_PEOPLE = {"Aaron_Peirsol": 4, "Abel_Pacheco": 2, "Zico": 3, "Zoe_Ball": 1}


def build_lfw(root: Path, images: str = "lfw") -> None:
    for name, count in LFW_PEOPLE.items():
        for n in range(1, count + 1):
            touch(root / images / name / f"{name}_{n:04d}.jpg")
    (root / "pairsDevTrain.txt").write_text(
        "2\nAaron_Peirsol\t1\t2\nZico\t1\t3\nAaron_Peirsol\t1\tZico\t2\nAbel_Pacheco\t2\tZoe_Ball\t1\n"
    )
    (root / "pairsDevTest.txt").write_text("1\nAbel_Pacheco\t1\t2\nZico\t3\tZoe_Ball\t1\n")
    (root / "peopleDevTrain.txt").write_text("2\nAaron_Peirsol\t4\nZico\t3\n")
    (root / "peopleDevTest.txt").write_text("2\nAbel_Pacheco\t2\nZoe_Ball\t1\n")
    folds = []
    for fold in range(10):
        name = ("Aaron_Peirsol", "Zico")[fold % 2]
        folds.append(f"{name}\t{fold % 2 + 1}\t{fold % 2 + 2}\nAbel_Pacheco\t1\tZoe_Ball\t1")
    folds[9] = "Aaron_Peirsol\t1\t9\nAbel_Pacheco\t1\tZoe_Ball\t1"  # Aaron_Peirsol_0009.jpg does not exist
    (root / "pairs.txt").write_text("10\t1\n" + "\n".join(folds) + "\n")
    people = ["Aaron_Peirsol\t4", "Abel_Pacheco\t2", "Zico\t3", "Zoe_Ball\t1"]
    blocks = [f"1\n{people[f]}" if f < 4 else "0" for f in range(10)]
    (root / "people.txt").write_text("10\n" + "\n".join(blocks) + "\n")


def test_lfw_views_folds_and_pairs(ctx: Context, tmp_path: Path) -> None:
    build_lfw(tmp_path / "root")
    report = import_named(ctx, "lfw", tmp_path / "root")
    assert report.added == 10 and report.pairs_added == 2 * 2 + 2 + 19
    assert report.problems == {
        "pair_without_sample": ["view2/fold_10 #0: Aaron_Peirsol/Aaron_Peirsol_0009.jpg"]
    }
    with ctx.catalog.session() as session:
        sample = session.scalars(sa.select(Sample).where(Sample.key == "Zico/Zico_0002.jpg")).one()
        assert sample.path == "lfw/Zico/Zico_0002.jpg"
        assert session.get(Identity, sample.identity_id).label == "Zico"
    view1 = pairs(ctx, "view1")
    assert [(p["group"], p["position"], p["first"], p["second"], p["genuine"]) for p in view1] == [
        ("test", 0, "Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0002.jpg", True),
        ("test", 1, "Zico/Zico_0003.jpg", "Zoe_Ball/Zoe_Ball_0001.jpg", False),
        ("train", 0, "Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", True),
        ("train", 1, "Zico/Zico_0001.jpg", "Zico/Zico_0003.jpg", True),
        ("train", 2, "Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Zico/Zico_0002.jpg", False),
        ("train", 3, "Abel_Pacheco/Abel_Pacheco_0002.jpg", "Zoe_Ball/Zoe_Ball_0001.jpg", False),
    ]
    view2 = pairs(ctx, "view2")
    assert sorted({p["group"] for p in view2}) == [f"fold_{f:02d}" for f in range(1, 11)]
    assert Counter(p["genuine"] for p in view2) == {True: 9, False: 10}
    assert [p["position"] for p in view2 if p["group"] == "fold_10"] == [1]
    view1_members = Counter((m["group"], m["key"].split("/")[0]) for m in members(ctx, "view1"))
    assert view1_members == {("train", "Aaron_Peirsol"): 4, ("train", "Zico"): 3, ("test", "Abel_Pacheco"): 2,
                             ("test", "Zoe_Ball"): 1}  # fmt: skip
    assert Counter(m["group"] for m in members(ctx, "view2")) == {
        "fold_01": 4,
        "fold_02": 2,
        "fold_03": 3,
        "fold_04": 1,
    }


def test_lfw_images_in_the_root_and_malformed_protocol_files(sqlite_ctx: Context, tmp_path: Path) -> None:
    build_lfw(tmp_path / "flat", images="")
    report = import_named(sqlite_ctx, "lfw", tmp_path / "flat")
    assert report.added == 10 and report.pairs_added == 25
    with sqlite_ctx.catalog.session() as session:
        assert session.scalars(sa.select(Sample.path).where(Sample.key == "Zico/Zico_0002.jpg")).one() == (
            "Zico/Zico_0002.jpg"
        )
    build_lfw(tmp_path / "bad")
    (tmp_path / "bad" / "pairsDevTest.txt").write_text("1\nAbel_Pacheco\t1\nZico\t3\tZoe_Ball\t1\n")
    with pytest.raises(SynthdbError, match=r"pairsDevTest.txt:2: expected a matched pair"):
        import_named(sqlite_ctx, "lfw", tmp_path / "bad", name="bad")
    (tmp_path / "bad" / "pairsDevTest.txt").write_text("1\nAbel_Pacheco\t1\t2\n")
    with pytest.raises(SynthdbError, match=r"pairsDevTest.txt: ends early"):
        import_named(sqlite_ctx, "lfw", tmp_path / "bad", name="bad")
    assert counts(sqlite_ctx)["dataset"] == 1


# ---------------------------------------------------------------------------------------------- UTKFace


def test_utkface_attributes_from_file_names(ctx: Context, tmp_path: Path) -> None:
    root = tmp_path / "utk"
    for rel in (
        "UTKFace/26_0_2_20170104023102422.jpg.chip.jpg",
        "UTKFace/1_1_4_20161221193016140.jpg.chip.jpg",
        "UTKFace/39_1_20170116174525125.jpg.chip.jpg",  # an upstream name without the race field
        "part1/26_0_2_20170104023102422.jpg",
        "part1/not_a_utk_name.jpg",
        "part1/landmark_list_part1.txt",
    ):
        touch(root / rel)
    report = import_named(ctx, "utkface", root)
    assert report.added == 5
    with ctx.catalog.session() as session:
        found = {s.key: s for s in session.scalars(sa.select(Sample))}
        labels = dict(session.execute(sa.select(Identity.id, Identity.label)).all())
    aligned = found["UTKFace/26_0_2_20170104023102422.jpg.chip.jpg"]
    assert aligned.attributes == {"age": 26, "gender": "male", "race": "asian"} and aligned.label == "UTKFace"
    wild = found["part1/26_0_2_20170104023102422.jpg"]
    assert wild.identity_id == aligned.identity_id and labels[wild.identity_id] == "26_0_2_20170104023102422"
    assert found["UTKFace/1_1_4_20161221193016140.jpg.chip.jpg"].attributes == {
        "age": 1,
        "gender": "female",
        "race": "others",
    }
    assert found["UTKFace/39_1_20170116174525125.jpg.chip.jpg"].attributes == {"age": 39, "gender": "female"}
    assert found["part1/not_a_utk_name.jpg"].attributes is None
    assert len(labels) == 4


# ------------------------------------------------------------------------------------------------ IJB-C

IJBC_HEADER = "TEMPLATE_ID,SUBJECT_ID,FILENAME,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT\n"


def build_ijbc(root: Path) -> Path:
    base = root / "IJB" / "IJB-C"
    protocol = base / "protocols" / "test1"
    protocol.mkdir(parents=True)
    (protocol / "enroll_templates.csv").write_text(
        IJBC_HEADER
        + "1,10,img/1.jpg,10,20,100,120\n"
        + "1,10,frames/1.png,11,21,101,121\n"  # same number as img/1.jpg: the reference keys collided
        + "2,11,img/2.jpg,30,40,90,95\n"
    )
    (protocol / "verif_templates.csv").write_text(
        IJBC_HEADER + "101,10,img/1.jpg,10,20,100,120\n" + "102,11,frames/2.png,5,6,70,80\n"
    )
    (protocol / "match.csv").write_text("ENROLL_TEMPLATE_ID,VERIF_TEMPLATE_ID\n1,101\n1,102\n2,101\n2,102\n")
    for rel in ("img/1.jpg", "img/2.jpg", "frames/1.png", "frames/2.png"):
        touch(base / "images" / rel)
    return base


def test_ijbc_templates_keys_boxes_and_template_pairs(ctx: Context, tmp_path: Path) -> None:
    build_ijbc(tmp_path / "data")
    report = import_named(ctx, "ijbc", tmp_path / "data")
    assert (report.added, report.pairs_added, report.problem_counts) == (5, 4, {})
    with ctx.catalog.session() as session:
        found = {s.key: s for s in session.scalars(sa.select(Sample))}
        labels = dict(session.execute(sa.select(Identity.id, Identity.label)).all())
    assert sorted(found) == [
        "frames_1_1_11_21_101_121",
        "frames_2_102_5_6_70_80",
        "img_1_101_10_20_100_120",
        "img_1_1_10_20_100_120",
        "img_2_2_30_40_90_95",
    ]
    frame = found["frames_1_1_11_21_101_121"]
    assert (
        frame.path == "IJB/IJB-C/images/frames/1.png"
        and frame.label == "1"
        and labels[frame.identity_id] == "10"
    )
    assert frame.attributes == {
        "template_id": 1,
        "media": "frames",
        "face_x": 11,
        "face_y": 21,
        "face_w": 101,
        "face_h": 121,
    }
    assert Counter(m["purpose"] for m in members(ctx, "test1")) == {"enroll": 3, "probe": 2}
    assert [
        (p["first_template"], p["second_template"], p["genuine"], p["first"]) for p in pairs(ctx, "test1")
    ] == [
        ("1", "101", True, None),
        ("1", "102", False, None),
        ("2", "101", False, None),
        ("2", "102", True, None),
    ]


def test_ijbc_refuses_escaping_paths_and_needs_its_csvs(sqlite_ctx: Context, tmp_path: Path) -> None:
    base = build_ijbc(tmp_path / "data")
    enroll = base / "protocols" / "test1" / "enroll_templates.csv"
    enroll.write_text(enroll.read_text() + "3,12,../../../../x.jpg,1,2,3,4\n")
    report = import_named(sqlite_ctx, "ijbc", base)
    assert report.added == 5 and report.problems == {"escapes_root": ["images/../../../../x.jpg"]}
    enroll.write_text(IJBC_HEADER + "1,10,img/1.jpg,10,20,100,120\n4,13,img/9.jpg\n")
    with pytest.raises(
        SynthdbError, match=r"enroll_templates.csv:3: the row's fields do not match the header"
    ):
        import_named(sqlite_ctx, "ijbc", base, name="short")
    enroll.write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,10,img/1.jpg\n")
    with pytest.raises(SynthdbError, match="header lacks FACE_X, FACE_Y, FACE_WIDTH, FACE_HEIGHT"):
        import_named(sqlite_ctx, "ijbc", base, name="other")
    with pytest.raises(SynthdbError, match="enroll_templates.csv is missing: pass the IJB-C folder"):
        import_named(sqlite_ctx, "ijbc", tmp_path, name="other")


# ------------------------------------------------------------------------------------------- WebFace42M


def build_webface(root: Path) -> None:
    for rel in (
        "0/0_0_0000000/0_0.jpg",
        "0/0_0_0000000/0_1.jpg",
        "0/0_0_0000001/0_2.jpg",
        "1/WebFace260M/1_0_0000000/1_0.jpg",  # unzipped with -d 1: the archive's top folder in between
        "1/WebFace260M/1_3_0000042/1_7.jpg",
    ):
        touch(root / rel)
    touch(root / "0" / "0_0.zip")


def test_webface42m_shards_are_groups_and_folders_identities(ctx: Context, tmp_path: Path) -> None:
    build_webface(tmp_path / "wf")
    report = import_named(ctx, "webface42m", tmp_path / "wf")
    assert report.added == 5
    with ctx.catalog.session() as session:
        labels = session.scalars(sa.select(Identity.label).order_by(Identity.label)).all()
        sample = session.scalars(
            sa.select(Sample).where(Sample.key == "1/WebFace260M/1_3_0000042/1_7.jpg")
        ).one()
        assert session.get(Identity, sample.identity_id).label == "1_3_0000042"
    assert labels == ["0_0_0000000", "0_0_0000001", "1_0_0000000", "1_3_0000042"]
    assert Counter((m["group"], m["purpose"]) for m in members(ctx, "webface42m")) == {
        ("0", "train"): 3,
        ("1", "train"): 2,
    }


# ------------------------------------------------------------------------------ idempotence, all sources

BUILDERS: dict[str, Callable[[Path], object]] = {
    "ffhq": lambda root: build_ffhq(root, folders=("images1024x1024", "thumbnails128x128")),
    "multipie": lambda root: build_multipie(root, ATTENDANCE, ("05_1", "08_0"), range(6, 9)),
    "lfw": build_lfw,
    "utkface": lambda root: touch(root / "UTKFace" / "26_0_2_20170104023102422.jpg.chip.jpg"),
    "ijbc": build_ijbc,
    "webface42m": build_webface,
    "imagefolder": lambda root: [touch(root / f"id{i}" / f"{k}.jpg") for i in range(3) for k in range(2)],
}


@pytest.mark.parametrize("source", sorted(BUILDERS))
def test_reimport_adds_no_rows(ctx: Context, tmp_path: Path, source: str) -> None:
    BUILDERS[source](tmp_path / "root")
    first = import_named(ctx, source, tmp_path / "root")
    assert first.added > 0
    before = counts(ctx)
    again = import_named(ctx, source, tmp_path / "root")
    assert again.added == 0 and again.note and "--update" in again.note
    updated = import_named(ctx, source, tmp_path / "root", update=True)
    assert (updated.added, updated.existing, updated.pairs_added) == (0, first.added, 0)
    assert updated.pairs_existing == first.pairs_added
    after = counts(ctx)
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}


def test_update_adds_new_files_with_their_memberships(sqlite_ctx: Context, tmp_path: Path) -> None:
    build_multipie(tmp_path / "mpie", {2: (1,)}, ("05_1",), range(7, 8))
    assert import_named(sqlite_ctx, "multipie", tmp_path / "mpie").added == 2
    build_multipie(tmp_path / "mpie", {2: (1, 2)}, ("05_1",), range(7, 8))  # session 2 arrives
    report = import_named(sqlite_ctx, "multipie", tmp_path / "mpie", update=True)
    assert (report.added, report.existing) == (3, 2)
    e_lit = Counter((m["group"], m["purpose"]) for m in members(sqlite_ctx, "E_lit"))
    assert e_lit == {("dev", "enroll"): 1, ("dev", "probe"): 3}


def test_another_sources_dataset_name_is_refused(sqlite_ctx: Context, tmp_path: Path) -> None:
    BUILDERS["utkface"](tmp_path / "utk")
    BUILDERS["webface42m"](tmp_path / "wf")
    import_named(sqlite_ctx, "utkface", tmp_path / "utk", name="faces")
    with pytest.raises(SynthdbError, match="exists with source 'utkface', not 'webface42m'"):
        import_named(sqlite_ctx, "webface42m", tmp_path / "wf", name="faces")


# ------------------------------------------------------------------------------------ samples.h5 (HDF5)


def test_csv_manifest_rows_become_samples_with_attributes(ctx: Context, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for rel in ("a/1.jpg", "a/2.jpg", "b.png", "group.jpg"):
        touch(root / rel)
    touch(tmp_path / "outside.jpg")
    (root / "list.csv").write_text(
        "file,identity,age,licence\n"
        "a/1.jpg,ann,31,CC-BY\n"
        "a/2.jpg,ann,,CC-BY\n"
        "b.png,bob,40,\n"
        "group.jpg,,,CC0\n"
        "../outside.jpg,eve,20,\n"
        "missing.jpg,eve,20,\n"
    )
    report = import_named(ctx, "csv", root / "list.csv")
    assert (report.dataset, report.added) == ("list", 4)
    assert set(report.problems) == {"escapes_root", "missing"}
    got = rows(
        ctx,
        "SELECT s.key, i.label, s.attributes FROM catalog.sample s "
        "LEFT JOIN catalog.identity i ON i.id = s.identity_id ORDER BY s.key",
    )
    assert [(r["key"], r["label"]) for r in got] == [
        ("a/1.jpg", "ann"), ("a/2.jpg", "ann"), ("b.png", "bob"), ("group.jpg", None)
    ]  # fmt: skip
    assert [json.loads(r["attributes"]) for r in got] == [
        {"age": "31", "licence": "CC-BY"}, {"licence": "CC-BY"}, {"age": "40"}, {"licence": "CC0"}
    ]  # fmt: skip
    assert import_named(ctx, "csv", root / "list.csv").added == 0  # re-running adds nothing


def test_csv_manifests_without_their_columns_and_flat_folders_are_refused(
    sqlite_ctx: Context, tmp_path: Path
) -> None:
    touch(tmp_path / "flat" / "1.jpg")
    with pytest.raises(SynthdbError, match="holds no identity folders .*synthdb import csv MANIFEST"):
        import_named(sqlite_ctx, "imagefolder", tmp_path / "flat")
    (tmp_path / "flat" / "bad.csv").write_text("image,person\n1.jpg,ann\n")
    with pytest.raises(SynthdbError, match="names no path .*and identity column"):
        import_named(sqlite_ctx, "csv", tmp_path / "flat" / "bad.csv")
    (tmp_path / "flat" / "short.csv").write_text("path,identity\n1.jpg\n")
    with pytest.raises(SynthdbError, match=r"short.csv:2: the row's fields do not match the header"):
        import_named(sqlite_ctx, "csv", tmp_path / "flat" / "short.csv")
    assert counts(sqlite_ctx)["dataset"] == 0  # the header and first row are read before any write


def build_collection(folder: Path) -> dict[tuple[int, str], H5Sample]:
    """A reference-layout collection: 3 identities x (reference + 2 augmentations), one EG3D identity."""
    rng = np.random.default_rng(0)
    written: dict[tuple[int, str], H5Sample] = {}
    folder.mkdir(parents=True)
    with SampleCollection.create(folder / "samples.h5") as collection:
        for identity in (0, 1, 7):
            for label in ("reference", "augmentation_0", "augmentation_1"):
                sample = H5Sample(
                    w_latent=rng.standard_normal(512),
                    embedding=rng.standard_normal(128),
                    network_type="stylegan2-256",
                    embedding_type="dlib",
                )
                collection.add(identity, label, sample)
                written[(identity, label)] = sample
        eg3d = H5Sample(
            w_plus_latent=rng.standard_normal((14, 512)),
            c_label=rng.standard_normal(25),
            bfm_model={k: rng.standard_normal(d) for k, d in BFM_DIMS.items()},
            network_type="eg3d",
        )
        collection.add(42, "reference", eg3d)
        written[(42, "reference")] = eg3d
    for identity, label in written:
        if (identity, label) != (7, "augmentation_1"):  # one image was never rendered
            touch(folder / "images_arcface_112x112" / f"{identity:05d}" / f"{label}.png")
    return written


def test_samples_h5_becomes_a_synthetic_dataset_with_shards(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = build_collection(tmp_path / "langevin-demo")
    monkeypatch.setattr(samples_source, "CHUNK", 4)  # several chunks: the file is streamed
    report = import_named(ctx, "samples", tmp_path / "langevin-demo" / "samples.h5")
    assert (report.dataset, report.added) == ("langevin-demo", 10)
    assert report.problems == {"missing": ["images_arcface_112x112/00007/augmentation_1.png"]}
    with ctx.catalog.session() as session:
        dataset = session.scalars(sa.select(Dataset)).one()
        assert (dataset.kind, dataset.source) == ("synthetic", "samples")
        found = {s.key: s for s in session.scalars(sa.select(Sample))}
        labels = dict(session.execute(sa.select(Identity.id, Identity.label)).all())
        shards = session.scalars(sa.select(Shard)).all()
    assert sorted(labels.values()) == ["00000", "00001", "00007", "00042"]
    reference = found["00001/reference"]
    assert (reference.role, reference.label, labels[reference.identity_id]) == (
        "reference",
        "reference",
        "00001",
    )
    assert reference.path == "images_arcface_112x112/00001/reference.png"
    assert found["00007/augmentation_1"].path is None and found["00007/augmentation_1"].role == "variation"
    assert {(s.content, s.space) for s in shards} == {
        ("latent", "stylegan2-256"),
        ("embedding", "dlib"),
        ("latent", "eg3d"),
    }
    embeddings = rows(ctx, "SELECT sample_id, model, embedding FROM embeddings ORDER BY sample_id")
    assert len(embeddings) == 9 and {r["model"] for r in embeddings} == {"dlib"}
    by_id = {s.id: key for key, s in found.items()}
    for row in embeddings:
        identity, label = by_id[row["sample_id"]].split("/")
        np.testing.assert_array_equal(np.float32(row["embedding"]), written[(int(identity), label)].embedding)
    eg3d_shard = next(s for s in shards if s.space == "eg3d")
    assert eg3d_shard.columns == {
        "w_plus": [14, 512],
        "c": [25],
        **{f"bfm_{k}": [d] for k, d in BFM_DIMS.items()},
    }
    _, _, w_plus = parquet.read_vectors(ctx.store.abspath(eg3d_shard.path), "w_plus")
    np.testing.assert_array_equal(w_plus.reshape(14, 512), written[(42, "reference")].w_plus_latent)
    latents = rows(
        ctx, "SELECT generator, count(w) AS w, count(w_plus) AS w_plus FROM latents GROUP BY 1 ORDER BY 1"
    )
    assert latents == [
        {"generator": "eg3d", "w": 0, "w_plus": 1},
        {"generator": "stylegan2-256", "w": 9, "w_plus": 0},
    ]

    before = counts(ctx)
    again = import_named(ctx, "samples", tmp_path / "langevin-demo" / "samples.h5", update=True)
    assert (again.added, again.existing) == (0, 10) and counts(ctx) == before


def test_samples_h5_errors_name_the_file(sqlite_ctx: Context, tmp_path: Path) -> None:
    (tmp_path / "not.h5").write_bytes(b"nothing like HDF5")
    with pytest.raises(SynthdbError, match="not.h5"):
        import_named(sqlite_ctx, "samples", tmp_path / "not.h5")
    with pytest.raises(SynthdbError, match="is not a file: pass a samples.h5"):
        import_named(sqlite_ctx, "samples", tmp_path)
    assert counts(sqlite_ctx)["dataset"] == 0


# -------------------------------------------------------------------------------------------------- CLI


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthdb.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_imports_a_tree_and_a_file_then_queries(tmp_path: Path) -> None:
    init_workspace(tmp_path / "ws", models_dir=str(tmp_path / "models")).close()
    build_multipie(tmp_path / "mpie", ATTENDANCE, ("05_1",), range(7, 8))
    build_collection(tmp_path / "gen")
    ws = ["-w", str(tmp_path / "ws")]
    imported = cli(*ws, "import", "multipie", str(tmp_path / "mpie"), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("dataset 'multipie' (run 1): 26 samples added")
    answer = cli(
        *ws,
        "query",
        "SELECT json_extract_string(s.attributes, '$.expression') AS expression, count(*) AS images "
        "FROM catalog.sample s JOIN catalog.group_member m ON m.sample_id = s.id "
        "JOIN catalog.protocol_group g ON g.id = m.group_id JOIN catalog.protocol p ON p.id = g.protocol_id "
        "WHERE p.name = 'E_lit' AND g.name = 'dev' GROUP BY 1 ORDER BY 1",
        "--format",
        "csv",
        cwd=tmp_path,
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip().splitlines() == [
        "expression,images",
        *(f"{e},{n}" for e, n in sorted(EXPRESSIONS_PER_IMAGE_IN_E_LIT_DEV.items())),
    ]
    h5 = cli(*ws, "import", "samples", str(tmp_path / "gen" / "samples.h5"), "--name", "gen", cwd=tmp_path)
    assert h5.returncode == 0 and "10 samples added" in h5.stdout and "1 missing" in h5.stdout, h5.stderr
    refused = cli(*ws, "import", "samples", str(tmp_path / "gen"), cwd=tmp_path)
    assert refused.returncode == 2 and "is a directory" in refused.stderr


def test_an_import_still_running_is_not_taken_over(sqlite_ctx: Context, tmp_path: Path) -> None:
    """Regression: a second import of the same name treated a live import as a crashed one and resumed
    it (both then wrote into the dataset, and the live run was marked interrupted)."""
    tree = tmp_path / "tree"
    (tree / "id0").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tree / "id0" / "0.png")
    import_named(sqlite_ctx, "imagefolder", tree, name="faces", quiet=True)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )

    def creator_running(pid: int) -> int:
        """Mark the dataset's creating run as still running in process ``pid`` of this host."""
        dataset, run = Dataset.__table__, Run.__table__
        with sqlite_ctx.catalog.begin() as conn:
            run_id = conn.execute(sa.select(dataset.c.created_by_run_id)).scalar_one()
            conn.execute(sa.update(run).where(run.c.id == run_id).values(status="running", pid=pid))
        return run_id

    live = creator_running(os.getpid())  # as if that import were still at work, in this process
    with pytest.raises(SynthdbError, match=rf"being imported by run {live} .*pass --update"):
        import_named(sqlite_ctx, "imagefolder", tree, name="faces", quiet=True)
    creator_running(int(gone.stdout))  # a crashed import on this host: its pid is gone, so it resumes
    Image.new("RGB", (4, 4)).save(tree / "id0" / "1.png")
    assert import_named(sqlite_ctx, "imagefolder", tree, name="faces", quiet=True).added == 1
    creator_running(os.getpid())  # --update is the way to take over an import known to be gone
    Image.new("RGB", (4, 4)).save(tree / "id0" / "2.png")
    assert import_named(sqlite_ctx, "imagefolder", tree, name="faces", update=True, quiet=True).added == 1


# ------------------------------------------------------------------ one root per dataset (issue 17)


def _person_folders(root: Path, people: tuple[str, ...]) -> None:
    for person in people:
        touch(root / person / "0.png", png_bytes())


def test_update_from_another_root_is_refused_and_fsck_files_sees_none_lost(
    ctx: Context, tmp_path: Path
) -> None:
    """Regression: ``import imagefolder B --name X --update`` where X came from folder A added samples whose
    paths resolve against A and point nowhere. It is refused in one line naming both folders, with
    ``--update`` or without it, and nothing is added; ``fsck --files`` stays clean."""
    from synthdb.store.fsck import fsck

    _person_folders(tmp_path / "A", ("ann", "bob"))
    _person_folders(tmp_path / "B", ("cid", "dan"))
    import_named(ctx, "imagefolder", tmp_path / "A", name="X")
    before = counts(ctx)
    for update in (True, False):
        with pytest.raises(SynthdbError, match=r"was imported from .*A, not .*B") as refused:
            import_named(ctx, "imagefolder", tmp_path / "B", name="X", update=update)
        assert "\n" not in str(refused.value) and "choose another --name" in str(refused.value)
    assert counts(ctx) == before
    report = fsck(ctx.catalog, ctx.store, files=True)
    assert report.clean and report.files_checked == 2


def test_the_same_root_through_a_link_still_updates(sqlite_ctx: Context, tmp_path: Path) -> None:
    """The check compares resolved folders: the dataset's own root named through a symlink is its root."""
    _person_folders(tmp_path / "A", ("ann",))
    import_named(sqlite_ctx, "imagefolder", tmp_path / "A", name="X")
    os.symlink(tmp_path / "A", tmp_path / "link")
    _person_folders(tmp_path / "A", ("bob",))
    assert import_named(sqlite_ctx, "imagefolder", tmp_path / "link", name="X", update=True).added == 1


def test_a_csv_manifest_in_another_folder_and_another_samples_h5_folder_are_refused(
    sqlite_ctx: Context, tmp_path: Path
) -> None:
    """The same rule for the other sources whose root is a file's folder: a CSV manifest and a samples.h5."""
    for folder in ("one", "two"):
        touch(tmp_path / folder / "a.png", png_bytes())
        (tmp_path / folder / "list.csv").write_text("path,identity\na.png,ann\n")
    import_named(sqlite_ctx, "csv", tmp_path / "one" / "list.csv")
    with pytest.raises(SynthdbError, match=r"dataset 'list' was imported from .*one, not .*two"):
        import_named(sqlite_ctx, "csv", tmp_path / "two" / "list.csv", update=True)
    build_collection(tmp_path / "first")
    build_collection(tmp_path / "second")
    import_named(sqlite_ctx, "samples", tmp_path / "first" / "samples.h5", name="synth")
    with pytest.raises(SynthdbError, match=r"dataset 'synth' was imported from .*first, not .*second"):
        import_named(sqlite_ctx, "samples", tmp_path / "second" / "samples.h5", name="synth", update=True)
