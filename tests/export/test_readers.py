"""Exports read back the way their users read them (issue 16): ``webdataset`` and ``wids``, mxnet's RecordIO
as insightface's ``MXFaceDataset`` reads it, insightface's ``load_bin``, ``bob.bio.base`` 8's ``CSVDatabase``,
the reference ``synthetics`` loader's assertions, and pyarrow, polars and DuckDB on our Parquet shards.

Clients that install in this environment are used directly; mxnet 1.9.1 (Python 3.9) and bob.bio.base 8
(scikit-learn 1.5.2) need interpreters of their own: point ``SYNTHDB_TEST_MXNET_PYTHON`` and
``SYNTHDB_TEST_BOB_PYTHON`` at them (e.g. ``python3 -m venv bob && bob/bin/pip install "bob.bio.base>=8,<9"
scikit-learn==1.5.2``; `.ci/run` makes both when they install), else those checks skip and the format-level
checks here still run.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from synthdb.catalog import shards
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.schema import (
    Dataset,
    GroupMember,
    Protocol,
    ProtocolGroup,
    Run,
    Sample,
    VerificationPair,
)
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.export.api import export
from synthdb.sources.registry import import_named
from synthdb.store.commit import NewSamples, ShardSpec, commit
from tests.conftest import CliRun
from tests.export.test_formats import face_image, make_tree, who

# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def holes(sqlite_ctx: Context, tmp_path: Path) -> Context:
    """Dataset 'holes': id000 (3 images), id001 (only an unreadable file), id002 (3 images), id003 (only a
    link that leads out of the root), id004 (3 images): two identities with no usable image."""
    root = tmp_path / "holes"
    for k in (0, 2, 4):
        (root / f"id{k:03d}").mkdir(parents=True)
        for j in range(3):
            Image.fromarray(face_image(k, j)).save(root / f"id{k:03d}" / f"img_{j}.png")
    (root / "id001").mkdir()
    (root / "id001" / "img_0.png").write_text("not an image at all\n")
    (root / "id003").mkdir()
    Image.fromarray(face_image(3, 0)).save(root / "id003" / "img_0.png")
    import_named(sqlite_ctx, "imagefolder", root, name="holes")
    (root / "id003" / "img_0.png").rename(tmp_path / "outside.png")  # after the import: met at export time
    os.symlink(tmp_path / "outside.png", root / "id003" / "img_0.png")
    return sqlite_ctx


def _commit_run(ctx: Context) -> int:
    with ctx.catalog.begin() as conn:
        table = Run.__table__
        return conn.execute(
            sa.insert(table).values(kind="references", synthdb_version="t").returning(table.c.id)
        ).scalar_one()


def _group(session: Any, protocol: Protocol, name: str) -> ProtocolGroup:
    group = ProtocolGroup(protocol_id=protocol.id, name=name)
    session.add(group)
    session.flush()
    return group


def _ids(ctx: Context, dataset: str) -> dict[str, int]:
    with ctx.catalog.session() as session:
        found = sa.select(Sample.key, Sample.id).join(Dataset, Dataset.id == Sample.dataset_id)
        return dict(session.execute(found.where(Dataset.name == dataset)).all())


# ------------------------------------------------------------------------------- empty classes, renumbered


def test_identities_without_a_usable_image_get_no_class_in_any_format(holes: Context, tmp_path: Path) -> None:
    """Regression: an identity with no usable image left an empty class range while ``property`` counted
    it. The unreadable file and the link out of the root are skipped; ids stay contiguous over the three
    identities with images, the same in the records, ``property``, the header, ``.cls`` and classes.csv."""
    from synthdb.export.recordio import RecordReader

    rec = export(holes, "holes", "recordio", tmp_path / "rec", size=32)
    assert rec.manifest["counts"]["skipped_by_kind"] == {"unreadable": 1, "escapes_root": 1}
    assert rec.manifest["counts"]["classes"] == 3 and rec.manifest["counts"]["identities"] == 5
    assert (tmp_path / "rec" / "property").read_text() == "3,32,32\n9\n"
    with RecordReader(tmp_path / "rec" / "train.rec", tmp_path / "rec" / "train.idx") as reader:
        assert reader[0].label == (10.0, 13.0)
        labels = [int(reader[i].label) for i in range(1, 10)]
        ranges = [reader[i].label for i in range(10, 13)]
        identities = [who(reader[i].data)[0] for i in range(1, 10)]
    assert labels == [0, 0, 0, 1, 1, 1, 2, 2, 2] and identities == [0, 0, 0, 2, 2, 2, 4, 4, 4]
    assert ranges == [(1.0, 4.0), (4.0, 7.0), (7.0, 10.0)]
    classes = list(csv.DictReader((tmp_path / "rec" / "classes.csv").open()))
    assert [(c["class"], c["identity"], c["images"]) for c in classes] == [
        ("0", "id000", "3"),
        ("1", "id002", "3"),
        ("2", "id004", "3"),
    ]
    wds = export(holes, "holes", "webdataset", tmp_path / "wds")
    import webdataset

    samples = list(webdataset.WebDataset(str(tmp_path / "wds" / "holes-000000.tar"), shardshuffle=False))
    assert [int(s["cls"]) for s in samples] == labels and wds.manifest["counts"]["classes"] == 3
    tree = export(holes, "holes", "imagefolder", tmp_path / "tree")
    assert sorted(p.name for p in (tmp_path / "tree").iterdir() if p.is_dir()) == ["id000", "id002", "id004"]
    assert tree.manifest["output"] == {"images": 9, "classes": 3, "identities_without_images": 2}


@pytest.mark.skipif(not os.environ.get("SYNTHDB_TEST_MXNET_PYTHON"), reason="SYNTHDB_TEST_MXNET_PYTHON unset")
def test_mxnet_reads_recordio_as_insightface_does(holes: Context, tmp_path: Path) -> None:
    """mxnet 1.9.1 itself: ``MXIndexedRecordIO`` + ``unpack`` + ``imdecode``, the steps of insightface's
    ``MXFaceDataset`` (header 0 gives the image records, a label is a float), and the class ranges."""
    export(holes, "holes", "recordio", tmp_path / "rec", size=32)
    script = """
import json, numbers, sys
import mxnet as mx
rec, idx = sys.argv[1:3]
r = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
header, _ = mx.recordio.unpack(r.read_idx(0))
first, end = int(header.label[0]), int(header.label[1])
labels, shapes = [], []
for i in range(1, first):
    h, img = mx.recordio.unpack(r.read_idx(i))
    label = h.label if isinstance(h.label, numbers.Number) else h.label[0]
    labels.append(int(label))
    shapes.append(list(mx.image.imdecode(img).shape))
ranges = [[int(x) for x in mx.recordio.unpack(r.read_idx(i))[0].label] for i in range(first, end)]
print(json.dumps({"header": [first, end], "labels": labels, "shapes": shapes, "ranges": ranges}))
"""
    out = subprocess.run(
        [
            os.environ["SYNTHDB_TEST_MXNET_PYTHON"],
            "-c",
            script,
            str(tmp_path / "rec" / "train.rec"),
            str(tmp_path / "rec" / "train.idx"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["header"] == [10, 13] and seen["labels"] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert seen["shapes"] == [[32, 32, 3]] * 9 and seen["ranges"] == [[1, 4], [4, 7], [7, 10]]


# ------------------------------------------------------------------------------------- photos squashed


def test_photos_are_not_squashed_into_record_formats_unasked(
    holes: Context, tmp_path: Path, synthdb_cli: CliRun
) -> None:
    """Regression: uncropped photos were resized to 112x112 without a word. Photos need --crop or an
    explicit --size for recordio and pairs-bin; an explicit resize of photos says it does not align;
    generated images resized to the default size say the same; formats without a fixed size copy."""
    for fmt in ("recordio", "pairs-bin"):
        with pytest.raises(
            SynthdbError, match=rf"--format {fmt} writes 112x112 .* holds photos: pass --crop"
        ):
            export(holes, "holes", fmt, tmp_path / fmt)
        assert not (tmp_path / fmt).exists()
    sized = export(holes, "holes", "webdataset", tmp_path / "wds", size=24)
    assert sized.manifest["notes"] == [
        "photos resized to 24x24 as they are, not aligned (a non-square one is stretched): pass --crop to "
        "align the faces"
    ]
    make_tree(tmp_path / "gen", 2, 2)
    generated_id = create_dataset(holes.catalog, "gen", "synthetic", "generated", root=str(tmp_path / "gen"))
    keys = [f"id{k:03d}/img_{j}.png" for k in range(2) for j in range(2)]
    commit(
        holes.catalog,
        holes.store,
        dataset_id=generated_id,
        run_id=_commit_run(holes),
        shards=[ShardSpec("latent", "g", {"w": np.ones((4, 8))})],
        samples=NewSamples(keys, "reference", identity_labels=[k[:5] for k in keys], paths=keys),
    )
    generated = export(holes, "gen", "recordio", tmp_path / "gen-rec")
    assert generated.manifest["output"]["images"] == 4 and "not aligned" in generated.manifest["notes"][0]

    said = synthdb_cli("export", "holes", str(tmp_path / "x"), "--format", "recordio", ws=str(holes.ws.root))
    assert (
        said.exit_code == 1 and len(said.output.strip().splitlines()) == 1 and "--crop arcface" in said.output
    )


# ------------------------------------------------------------------------------------------- pairs .bin


def load_bin(path: Path) -> tuple[list[np.ndarray], list[bool]]:
    """insightface's ``eval/verification.py`` ``load_bin``: unpickle with ``encoding='bytes'``, decode every
    image (it uses mx.image.imdecode; PIL decodes the same JPEG), in order."""
    with open(path, "rb") as fh:
        bins, issame = pickle.load(fh, encoding="bytes")
    assert len(bins) == 2 * len(issame)
    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in bins], list(issame)


def test_sampled_pairs_keep_their_balance_and_say_which_samples(holes: Context, tmp_path: Path) -> None:
    """Regression: pairs touching an unusable sample were dropped after drawing, unbalancing the set. They
    are drawn from usable samples only (two identities have none here): exactly N/2 genuine and N/2
    impostor pairs, none with a skipped sample, and pairs.csv names the two samples of every pair."""
    report = export(holes, "holes", "pairs-bin", tmp_path / "p", pairs=12, seed=3, size=32)
    images, issame = load_bin(tmp_path / "p" / "holes.bin")
    assert len(issame) == 12 and sum(issame) == 6 and report.manifest["output"]["pairs_unreadable"] == 0
    rows = list(csv.DictReader((tmp_path / "p" / "pairs.csv").open()))
    assert [int(r["same"]) for r in rows] == [int(x) for x in issame] and len(rows) == 12
    for n, row in enumerate(rows):
        buffer = [io.BytesIO(), io.BytesIO()]
        for side, image in zip(buffer, images[2 * n : 2 * n + 2], strict=True):
            Image.fromarray(image).save(side, format="PNG")
        (k1, j1), (k2, j2) = (who(side.getvalue()) for side in buffer)
        assert (
            row["first_key"] == f"id{k1:03d}/img_{j1}.png" and row["second_key"] == f"id{k2:03d}/img_{j2}.png"
        )
        assert (k1 == k2) == bool(int(row["same"])) and k1 in (0, 2, 4) and k2 in (0, 2, 4)
    # insightface cuts the pairs in order into 10 folds (KFold): sizes 2, 2, 1, ...
    assert [int(r["fold"]) for r in rows] == [1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    again = export(holes, "holes", "pairs-bin", tmp_path / "p2", pairs=12, seed=3, size=32)
    assert again.manifest["files"] == report.manifest["files"]
    with pytest.raises(SynthdbError, match="only 9 distinct same-identity .* usable samples"):
        export(holes, "holes", "pairs-bin", tmp_path / "many", pairs=40, size=32)


# ------------------------------------------------------------------------------------------- WebDataset


def test_webdataset_and_wids_read_the_export_as_it_is(holes: Context, tmp_path: Path) -> None:
    """Regression: wids needed an index built by hand, and the catalog key was nowhere in the sample name.
    ``shardindex.json`` opens with ``wids.ShardListDataset`` as it is; the key is in each ``.json``."""
    import webdataset
    import wids
    from wids.wids_decode import default_decoder

    out = tmp_path / "wds"
    report = export(holes, "holes", "webdataset", out, shard_max_count=4)
    index = json.loads((out / "shardindex.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and [s["nsamples"] for s in index["shardlist"]] == [
        4,
        4,
        1,
    ]
    assert report.manifest["output"]["wids_index"] == "shardindex.json"
    decode = functools.partial(default_decoder, format="PIL")  # wids' default, named the current way
    dataset = wids.ShardListDataset(
        str(out / "shardindex.json"), cache_dir=str(tmp_path / "cache"), transformations=[decode]
    )
    assert len(dataset) == 9
    keys = [dataset[i][".json"]["key"] for i in range(9)]  # its default decoder parses the JSON
    assert keys == [f"id{k:03d}/img_{j}.png" for k in (0, 2, 4) for j in range(3)]
    first = dataset[4]
    assert first["__key__"] == "000000004" and first[".cls"] == 1
    assert np.asarray(first[".jpg"]).shape == (32, 32, 3)  # wids decodes it with PIL
    stream = webdataset.WebDataset(str(out / "holes-{000000..000002}.tar"), shardshuffle=False).decode("rgb8")
    decoded = list(stream)
    assert [s["__key__"] for s in decoded] == [f"{i:09d}" for i in range(9)]
    assert [s["cls"] for s in decoded] == [0, 0, 0, 1, 1, 1, 2, 2, 2] and decoded[0]["jpg"].shape == (
        32,
        32,
        3,
    )
    assert [s["json"]["sample_id"] for s in decoded] == sorted(s["json"]["sample_id"] for s in decoded)


# ----------------------------------------------------------------------------------------------- Parquet


def test_parquet_shards_carry_the_shape_of_every_vector(sqlite_ctx: Context) -> None:
    """Regression: ``w_plus`` was 7,168 flat values with no shape in the file. ``synthdb.shapes`` in the
    file metadata gives (num_ws, w_dim), and ``c`` and ``w`` too, read with pyarrow, polars and DuckDB."""
    import duckdb
    import polars as pl
    import pyarrow.parquet as pq

    ctx = sqlite_ctx
    dataset_id = create_dataset(ctx.catalog, "lat", "synthetic", "generated")
    rng = np.random.default_rng(0)
    vectors = {
        "w_plus": rng.standard_normal((3, 14, 512)),
        "c": rng.standard_normal((3, 25)),
        "w": rng.standard_normal((3, 512)),
    }
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=dataset_id,
        run_id=_commit_run(ctx),
        shards=[ShardSpec("latent", "eg3d-tiny", vectors)],
        samples=NewSamples(["a", "b", "c"], "reference", identity_labels=["0", "1", "2"]),
    )
    (shard,) = shards.committed(ctx.catalog, dataset_id=dataset_id)
    path = ctx.store.abspath(shard.path)
    want = {"w_plus": [14, 512], "c": [25], "w": [512]}
    assert json.loads(pq.read_schema(path).metadata[b"synthdb.shapes"]) == want
    assert json.loads(pl.read_parquet_metadata(path)["synthdb.shapes"]) == want
    found = duckdb.sql(
        f"SELECT decode(value) FROM parquet_kv_metadata('{path}') WHERE decode(key) = 'synthdb.shapes'"
    )
    assert json.loads(found.fetchone()[0]) == want
    flat = pl.read_parquet(path)["w_plus"].to_numpy()
    restored = np.stack(flat).reshape(3, *want["w_plus"])
    np.testing.assert_array_equal(restored, vectors["w_plus"].astype(np.float32))


# ---------------------------------------------------------------------------------------- synthetics-h5

REFERENCE_SHAPES = {"z_latent": (1, 512), "w_latent": (1, 512), "c_label": (1, 25), "embedding": (1, 512)}


def reference_load(path: Path) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """The reference ``SampleCollection.load`` (spec 2.2-2.3): magic, major and minor checked exactly, every
    identity group an int, every field's shape asserted with a batch dimension of 1; one failure aborts the
    whole load (an AssertionError, as the reference's own asserts raise)."""
    loaded = {}
    with h5py.File(path, "r") as f:
        assert f.attrs["magic"] == "synthetics_collection" and (f.attrs["major"], f.attrs["minor"]) == (2, 0)
        for identity in f:
            for label, group in f[identity].items():
                fields = {}
                for name, dataset in group.items():
                    if name == "bfm_model":
                        continue
                    if name == "w_plus_latent":
                        assert dataset.shape[0] == 1 and dataset.shape[2] == 512, (name, dataset.shape)
                    else:
                        assert dataset.shape == REFERENCE_SHAPES[name], (name, dataset.shape)
                    fields[name] = dataset[()]
                if set(fields) - {"embedding"}:
                    assert "network_type" in group.attrs
                if "embedding" in fields:
                    assert "embedding_type" in group.attrs
                loaded[(int(identity), label)] = fields
    return loaded


def _synthetic(
    ctx: Context, root: Path, latents: dict[str, tuple[str, int]], embeddings: dict[str, int]
) -> int:
    """'syn': 8 identities x 4 samples (32, as in the issue) with latents and embeddings of the given
    widths (space -> width)."""
    dataset_id = create_dataset(ctx.catalog, "syn", "synthetic", "generated", root=str(root))
    rng = np.random.default_rng(5)
    keys = [
        f"{i:05d}/{label}"
        for i in range(8)
        for label in ("reference", *(f"augmentation_{a}" for a in range(3)))
    ]
    run_id = _commit_run(ctx)
    space, width = next(iter(latents.values()))
    done = commit(
        ctx.catalog,
        ctx.store,
        dataset_id=dataset_id,
        run_id=run_id,
        shards=[
            ShardSpec("latent", space, {c: rng.standard_normal((32, w)) for c, (_, w) in latents.items()})
        ],
        samples=NewSamples(
            keys,
            "variation",
            identity_labels=[k.split("/")[0] for k in keys],
            labels=[k.split("/")[1] for k in keys],
        ),
    )
    for name, dims in embeddings.items():
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=dataset_id,
            run_id=run_id,
            sample_ids=done.sample_ids,
            shards=[ShardSpec("embedding", name, {"embedding": rng.standard_normal((32, dims))})],
        )
    return dataset_id


def test_synthetics_h5_default_loads_in_the_reference(
    sqlite_ctx: Context, tmp_path: Path, synthdb_cli: CliRun
) -> None:
    """Regression: a dlib-resnet dataset (128-d embeddings, the default) exported (1, 128) and the
    reference loader aborted: 0 of 32 samples. By default only what it reads is written, with a note;
    ``--embeddings dlib-resnet`` writes them anyway, and then the reference refuses the file."""
    _synthetic(
        sqlite_ctx, tmp_path, {"w": ("stylegan2-256", 512), "z": ("stylegan2-256", 512)}, {"dlib-resnet": 128}
    )
    report = export(sqlite_ctx, "syn", "synthetics-h5", tmp_path / "h5")
    loaded = reference_load(tmp_path / "h5" / "samples.h5")
    assert len(loaded) == 32 and all(set(f) == {"w_latent", "z_latent"} for f in loaded.values())
    assert report.manifest["notes"] == [
        "embeddings of dlib-resnet (128) left out: the reference's loader reads 512-d embeddings only; pass "
        "--embeddings MODEL to write them anyway"
    ]
    chosen = export(sqlite_ctx, "syn", "synthetics-h5", tmp_path / "h5-dlib", embedding_model="dlib-resnet")
    with pytest.raises(AssertionError, match="embedding"):
        reference_load(tmp_path / "h5-dlib" / "samples.h5")
    with h5py.File(tmp_path / "h5-dlib" / "samples.h5") as f:
        assert f["00003"]["reference"]["embedding"].shape == (1, 128)
    assert "will refuse the file" in chosen.manifest["notes"][0]

    said = synthdb_cli(
        "export", "syn", str(tmp_path / "cli"), "--format", "synthetics-h5", ws=str(sqlite_ctx.ws.root)
    )
    assert said.exit_code == 0 and "note: embeddings of dlib-resnet (128) left out" in said.output


def test_synthetics_h5_picks_the_512_space_and_leaves_out_other_latents(
    sqlite_ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variants: a 512-d space is taken by itself beside a 128-d one; 100-d latents (dcgan-digiface's z and
    w) are left out with a note since the reference asserts 512; two 512-d spaces need a choice;
    ``--embeddings none`` writes none; samples stream in chunks whatever their number."""
    import synthdb.export.synthetics_h5 as h5_format

    dataset_id = _synthetic(
        sqlite_ctx,
        tmp_path,
        {"w": ("dcgan-digiface", 100), "z": ("dcgan-digiface", 100)},
        {"dlib-resnet": 128, "iresnet50": 512},
    )
    monkeypatch.setattr(h5_format, "CHUNK", 3)  # many chunks, each shard read again: the same content
    monkeypatch.setattr(h5_format, "CACHED_SHARDS", 1)
    report = export(sqlite_ctx, "syn", "synthetics-h5", tmp_path / "h5")
    loaded = reference_load(tmp_path / "h5" / "samples.h5")
    assert len(loaded) == 32 and all(set(f) == {"embedding"} for f in loaded.values())
    assert any(
        "latents w of dcgan-digiface (100), z of dcgan-digiface (100) left out" in n
        for n in report.manifest["notes"]
    )
    assert report.manifest["output"]["embedding_type"] == ["iresnet50"]
    with h5py.File(tmp_path / "h5" / "samples.h5") as f:
        assert (
            sorted(f) == [f"{i:05d}" for i in range(8)]
            and f["00002"]["augmentation_1"].attrs["embedding_type"] == "iresnet50"
        )
    none = export(sqlite_ctx, "syn", "synthetics-h5", tmp_path / "none", embedding_model="none")
    assert none.manifest["output"]["with_vectors"] == 0
    _more = np.random.default_rng(1).standard_normal((32, 512))
    ids = sorted(_ids(sqlite_ctx, "syn").values())
    commit(
        sqlite_ctx.catalog,
        sqlite_ctx.store,
        dataset_id=dataset_id,
        sample_ids=np.array(ids),
        shards=[ShardSpec("embedding", "adaface", {"embedding": _more})],
    )
    with pytest.raises(SynthdbError, match="embeddings of adaface, iresnet50: .* pick it with --embeddings"):
        export(sqlite_ctx, "syn", "synthetics-h5", tmp_path / "two")


# ---------------------------------------------------------------------------------------------------- bob


def _protocol(
    ctx: Context,
    dataset: str,
    name: str,
    members: list[tuple[str, str | None, str]],
    pairs: dict[str, list[tuple[Any, Any, bool]]] | None = None,
) -> None:
    """A protocol of (group, purpose, sample key) memberships and, per group, (first, second, same) pairs of
    sample keys (or of template names, when they are not keys)."""
    ids = _ids(ctx, dataset)
    with ctx.catalog.session() as session:
        dataset_id = session.scalars(
            sa.select(Sample.dataset_id).where(Sample.id == next(iter(ids.values())))
        ).one()
        protocol = Protocol(dataset_id=dataset_id, name=name)
        session.add(protocol)
        session.flush()
        groups: dict[str, ProtocolGroup] = {}
        for group, purpose, key in members:
            if group not in groups:
                groups[group] = _group(session, protocol, group)
            session.add(GroupMember(group_id=groups[group].id, sample_id=ids[key], purpose=purpose))
        for group, listed in (pairs or {}).items():
            if group not in groups:
                groups[group] = _group(session, protocol, group)
            for position, (a, b, same) in enumerate(listed):
                keyed = a in ids
                session.add(
                    VerificationPair(
                        group_id=groups[group].id,
                        position=position,
                        genuine=same,
                        first_sample_id=ids[a] if keyed else None,
                        second_sample_id=ids[b] if keyed else None,
                        first_template=None if keyed else a,
                        second_template=None if keyed else b,
                    )
                )


def read_protocol(folder: Path) -> dict[str, list[dict[str, str]]]:
    return {p.relative_to(folder).as_posix(): list(csv.DictReader(p.open())) for p in folder.rglob("*.csv")}


BOB_SCRIPT = """
import json, sys
import bob.io.base
from bob.bio.base.database import CSVDatabase, FileSampleLoader
from sklearn.pipeline import make_pipeline
path, protocol, directory, extension = sys.argv[1:5]
db = CSVDatabase(name="synthdb", protocol=protocol, dataset_protocols_path=path,
                 transformer=make_pipeline(FileSampleLoader(data_loader=bob.io.base.load,
                     dataset_original_directory=directory, extension=extension)))
def sets(found):
    return [{"template": str(s.template_id), "subject": str(s.subject_id), "keys": [x.key for x in s.samples],
             "references": [str(r) for r in getattr(s, "references", [])]} for s in found]
train = db.background_model_samples()
out = {"groups": sorted(db.groups()), "all_vs_all": db.score_all_vs_all, "train": [s.key for s in train],
       "references": sets(db.references("dev")), "probes": sets(db.probes("dev")),
       "zprobes": sets(db.zprobes("dev")), "treferences": sets(db.treferences()),
       "shape": list(db.probes("dev")[0].samples[0].data.shape)}
print(json.dumps(out))
"""


def run_bob(manifest: dict[str, Any]) -> dict[str, Any]:
    """bob.bio.base 8 itself, in its own interpreter, reading the export as the module doc says."""
    python = os.environ.get("SYNTHDB_TEST_BOB_PYTHON")
    if not python:
        pytest.skip("SYNTHDB_TEST_BOB_PYTHON unset: bob.bio.base 8 needs its own environment")
    bob = manifest["output"]["bob"]
    args = [
        bob["dataset_protocols_path"],
        bob["protocol"],
        bob["original_directory"],
        bob["original_extension"],
    ]
    out = subprocess.run([python, "-c", BOB_SCRIPT, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def coded(sqlite_ctx: Context, tmp_path: Path) -> Context:
    make_tree(tmp_path / "tree", 5, 4)
    import_named(sqlite_ctx, "imagefolder", tmp_path / "tree", name="coded")
    return sqlite_ctx


def test_bob_reads_train_dev_eval_and_score_norm_cohorts(coded: Context, tmp_path: Path) -> None:
    """Regression: z-norm and t-norm lists went to <group>/ where bob never looks; bob reads them from
    train/. The bob 8 form of the module doc loads every list, and the images."""
    members = [("train", None, f"id000/img_{j}.png") for j in range(3)]
    members += [("train", "znorm", "id000/img_3.png"), ("train", "tnorm", "id004/img_3.png")]
    for k, group in ((1, "dev"), (2, "dev"), (3, "eval")):
        members += [(group, "enroll", f"id{k:03d}/img_0.png")]
        members += [(group, "probe", f"id{k:03d}/img_{j}.png") for j in (1, 2)]
    _protocol(coded, "coded", "P", members)
    report = export(coded, "coded", "bob", tmp_path / "bob", protocol="P")
    files = read_protocol(tmp_path / "bob" / "protocols" / "P")
    assert sorted(files) == [
        "dev/for_enrolling.csv",
        "dev/for_probing.csv",
        "eval/for_enrolling.csv",
        "eval/for_probing.csv",
        "train/for_background_model.csv",
        "train/for_tnorm.csv",
        "train/for_znorm.csv",
    ]
    assert list(files["dev/for_probing.csv"][0]) == ["path", "subject_id", "template_id", "key"]
    assert [r["template_id"] for r in files["dev/for_enrolling.csv"]] == ["id001", "id002"]
    seen = run_bob(report.manifest)
    assert seen["all_vs_all"] is True and seen["groups"] == ["dev", "eval", "train"]
    assert seen["train"] == [f"id000/img_{j}.png" for j in range(3)]
    assert [s["template"] for s in seen["references"]] == ["id001", "id002"]
    assert len(seen["probes"]) == 4 and all(p["references"] == ["id001", "id002"] for p in seen["probes"])
    assert [s["keys"] for s in seen["zprobes"]] == [["id000/img_3.png"]]
    assert [s["template"] for s in seen["treferences"]] == ["id004"] and seen["shape"] == [3, 32, 32]


def test_bob_sparse_template_pairs_as_bob_scores_them(coded: Context, tmp_path: Path) -> None:
    """Regression: IJB-C-like pairs were not exported, so bob scored all against all, and template ids
    were replaced by subject/sample ids. The group ('eval', the only one) becomes bob's default 'dev',
    with for_matching.csv of the protocol's own template ids; a pair with a side not selected is left out."""
    members = []
    templates = {
        "101": ["id001/img_0.png", "id001/img_1.png"],
        "102": ["id002/img_0.png"],
        "201": ["id001/img_2.png"],
        "202": ["id002/img_2.png", "id002/img_3.png"],
        "203": ["id003/img_0.png"],
    }
    for template, keys in templates.items():
        members += [("eval", "enroll" if template < "200" else "probe", key) for key in keys]
    with coded.catalog.begin() as conn:
        for template, keys in templates.items():
            conn.execute(
                sa.update(Sample.__table__)
                .where(Sample.__table__.c.key.in_(keys))
                .values(label=template, attributes={"template_id": int(template)})
            )
    _protocol(
        coded,
        "coded",
        "test1",
        members,
        {"eval": [("101", "201", True), ("102", "201", False), ("102", "202", True), ("101", "203", False)]},
    )
    report = export(coded, "coded", "bob", tmp_path / "bob", protocol="test1", where="i.label <> 'id003'")
    assert report.manifest["notes"] == ["group 'eval' exported as bob's 'dev'"]
    assert report.manifest["output"]["pairs_dropped"] == 1
    files = read_protocol(tmp_path / "bob" / "protocols" / "test1")
    assert [(r["enroll_template_id"], r["probe_template_id"]) for r in files["dev/for_matching.csv"]] == [
        ("101", "201"),
        ("102", "201"),
        ("102", "202"),
    ]
    assert {r["template_id"] for r in files["dev/for_enrolling.csv"]} == {"101", "102"}
    seen = run_bob(report.manifest)
    assert seen["all_vs_all"] is False
    references = {p["template"]: sorted(p["references"]) for p in seen["probes"]}
    assert references == {"201": ["101", "102"], "202": ["102"]}
    assert {s["template"]: s["subject"] for s in seen["references"]} == {"101": "id001", "102": "id002"}


def test_bob_image_pairs_and_groups_bob_does_not_name(coded: Context, tmp_path: Path) -> None:
    """LFW-like image pairs: each compared image is its own template, named by its key, in for_matching.csv;
    View 2's ten folds are no bob groups: --group picks one (as dev). A dataset without protocols is told
    how to get one, and the built-in 'identities' protocol enrols each identity's first sample."""
    pairs = {
        f"fold_0{n}": [
            (f"id00{n}/img_0.png", f"id00{n}/img_1.png", True),
            (f"id00{n}/img_0.png", f"id00{n + 1}/img_0.png", False),
        ]
        for n in (1, 2)
    }
    _protocol(coded, "coded", "view2", [("train", None, "id000/img_0.png")], pairs)
    with pytest.raises(
        SynthdbError, match="groups fold_01, fold_02: bob scores dev and eval only; pick one with --group"
    ):
        export(coded, "coded", "bob", tmp_path / "all", protocol="view2")
    report = export(coded, "coded", "bob", tmp_path / "one", protocol="view2", group="fold_02", size=16)
    files = read_protocol(tmp_path / "one" / "protocols" / "view2")
    assert [(r["enroll_template_id"], r["probe_template_id"]) for r in files["dev/for_matching.csv"]] == [
        ("id002/img_0.png", "id002/img_1.png"),
        ("id002/img_0.png", "id003/img_0.png"),
    ]
    assert files["dev/for_enrolling.csv"] == [
        {
            "path": "data/id002/img_0",
            "subject_id": "id002",
            "template_id": "id002/img_0.png",
            "key": "id002/img_0.png",
        }
    ]
    seen = run_bob(report.manifest)
    assert seen["all_vs_all"] is False and seen["shape"] == [3, 16, 16]
    assert sorted((p["template"], tuple(p["references"])) for p in seen["probes"]) == [
        ("id002/img_1.png", ("id002/img_0.png",)),
        ("id003/img_0.png", ("id002/img_0.png",)),
    ]
    make_tree(tmp_path / "plain", 3, 2)
    import_named(coded, "imagefolder", tmp_path / "plain", name="plain")
    with pytest.raises(SynthdbError, match="has no protocol: pass --protocol identities"):
        export(coded, "plain", "bob", tmp_path / "none")
    built = export(coded, "plain", "bob", tmp_path / "builtin", protocol="identities")
    files = read_protocol(tmp_path / "builtin" / "protocols" / "identities")
    assert [r["key"] for r in files["dev/for_enrolling.csv"]] == [f"id{k:03d}/img_0.png" for k in range(3)]
    assert [r["key"] for r in files["dev/for_probing.csv"]] == [f"id{k:03d}/img_1.png" for k in range(3)]
    seen = run_bob(built.manifest)
    assert seen["all_vs_all"] is True and len(seen["probes"]) == 3


def test_a_failed_bob_export_leaves_no_half_written_lists(
    coded: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the protocol lists are written under temporary names and renamed when complete; a
    failure left the temporary files in the output folder."""
    from synthdb.export import bob

    def broken(*_args: object) -> None:
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(bob, "_matching", broken)
    with pytest.raises(RuntimeError, match="the disk went away"):
        export(coded, "coded", "bob", tmp_path / "out", protocol="identities")
    assert not list(tmp_path.rglob("*.tmp"))
