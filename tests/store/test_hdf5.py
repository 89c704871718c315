"""Tests for synthdb.store.hdf5: the reference ``synthetics`` HDF5 layouts, read and written with h5py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from synthdb.errors import SynthdbError
from synthdb.store.hdf5 import (
    BFM_DIMS,
    COLLECTION_MAGIC,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    SAMPLE_MAGIC,
    H5Sample,
    SampleCollection,
    natural_sort_key,
    normalize_label,
    read_sample,
    write_sample,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def full_sample(seed: int = 0, emb_dim: int = 512, network_type: str = "eg3d") -> H5Sample:
    rng = _rng(seed)
    return H5Sample(
        z_latent=rng.standard_normal(512),
        w_latent=rng.standard_normal(512),
        w_plus_latent=rng.standard_normal((14, 512)),
        c_label=rng.standard_normal(25),
        embedding=rng.standard_normal(emb_dim),
        bfm_model={k: rng.standard_normal(d) for k, d in BFM_DIMS.items()},
        network_type=network_type,
        embedding_type="iresnet50",
    )


def w_sample(value: float, emb_dim: int | None = None) -> H5Sample:
    embedding = None if emb_dim is None else np.full(emb_dim, value)
    return H5Sample(
        w_latent=np.full(512, value),
        embedding=embedding,
        network_type="stylegan2-256",
        embedding_type=None if emb_dim is None else "iresnet50",
    )


def assert_same(a: H5Sample, b: H5Sample) -> None:
    for name in ("z_latent", "w_latent", "w_plus_latent", "c_label", "embedding"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert y.dtype == np.float32, name
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert (a.bfm_model is None) == (b.bfm_model is None)
    if a.bfm_model is not None:
        assert set(a.bfm_model) == set(b.bfm_model)
        for key in a.bfm_model:
            np.testing.assert_array_equal(a.bfm_model[key], b.bfm_model[key], err_msg=key)
    assert a.network_type == b.network_type
    assert a.embedding_type == b.embedding_type


# --------------------------------------------------------------------------------------------- Sample


def test_sample_converts_to_float32() -> None:
    s = full_sample()
    assert s.w_latent.dtype == np.float32 and s.w_plus_latent.shape == (14, 512)
    assert all(v.dtype == np.float32 for v in s.bfm_model.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"w_latent": np.zeros(512)}, "network_type"),
        ({"c_label": np.zeros(25)}, "network_type"),
        ({"embedding": np.zeros(512)}, "embedding_type"),
        ({"w_latent": np.zeros(512), "network_type": "eg3d"}, "c_label"),
        ({"w_latent": np.zeros(511), "network_type": "stylegan2"}, "expected (512,)"),
        ({"w_latent": np.zeros((1, 512)), "network_type": "stylegan2"}, "drop the leading batch"),
        ({"z_latent": np.zeros(256), "network_type": "stylegan2"}, "z_latent"),
        ({"w_plus_latent": np.zeros(512), "network_type": "stylegan2"}, "num_ws"),
        ({"c_label": np.zeros(16), "network_type": "eg3d"}, "(25,)"),
        ({"embedding": np.zeros((2, 128)), "embedding_type": "dlib"}, "(D,)"),
        ({"bfm_model": {"id": np.zeros(80)}}, "all six"),
        ({"bfm_model": {k: np.zeros(d + 1) for k, d in BFM_DIMS.items()}}, "bfm_model/"),
        ({"network_type": ""}, "non-empty"),
        ({"w_latent": ["a"] * 512, "network_type": "stylegan2"}, "not a numeric array"),
    ],
)
def test_sample_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(SynthdbError, match=message.replace("(", r"\(").replace(")", r"\)")):
        H5Sample(**kwargs)


def test_empty_sample_and_embedding_only_sample_are_valid() -> None:
    H5Sample()
    assert H5Sample(embedding=np.zeros(128), embedding_type="dlib").embedding.shape == (128,)


# ------------------------------------------------------------------------------------ single file


@pytest.mark.parametrize("emb_dim", [128, 512])
def test_sample_round_trip_every_field(tmp_path: Path, emb_dim: int) -> None:
    sample = full_sample(seed=emb_dim, emb_dim=emb_dim)
    write_sample(tmp_path / "s.h5", sample)
    assert_same(sample, read_sample(tmp_path / "s.h5"))
    assert os.listdir(tmp_path) == ["s.h5"]  # no temporary file left behind


def test_sample_round_trip_partial(tmp_path: Path) -> None:
    sample = H5Sample(embedding=np.arange(128), embedding_type="dlib")
    write_sample(tmp_path / "s.h5", sample)
    back = read_sample(tmp_path / "s.h5")
    assert_same(sample, back)
    assert back.network_type is None and back.w_latent is None and back.bfm_model is None


def test_written_sample_has_reference_layout(tmp_path: Path) -> None:
    write_sample(tmp_path / "s.h5", full_sample())
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert dict(f.attrs) == {
            "magic": SAMPLE_MAGIC,
            "major": FORMAT_MAJOR,
            "minor": FORMAT_MINOR,
            "network_type": "eg3d",
            "embedding_type": "iresnet50",
        }
        shapes = {name: f[name].shape for name in f if isinstance(f[name], h5py.Dataset)}
        assert shapes == {
            "z_latent": (1, 512),
            "w_latent": (1, 512),
            "w_plus_latent": (1, 14, 512),
            "c_label": (1, 25),
            "embedding": (1, 512),
        }
        assert all(f[name].dtype == np.float32 for name in shapes)
        assert {k: f["bfm_model"][k].shape for k in f["bfm_model"]} == {
            k: (1, d) for k, d in BFM_DIMS.items()
        }


def _reference_sample_file(path: Path, *, fixed_strings: bool = False) -> np.ndarray:
    """Build a single-sample file with raw h5py, as the reference package lays it out."""
    w = _rng(7).standard_normal((1, 512))  # float64 on purpose: the reference stores the tensor dtype
    with h5py.File(path, "w") as f:
        if fixed_strings:  # older writers give fixed-length byte strings
            f.attrs["magic"] = np.bytes_(b"synthetics")
            f.attrs["network_type"] = np.bytes_(b"stylegan2-256")
        else:
            f.attrs["magic"] = "synthetics"
            f.attrs["network_type"] = "stylegan2-256"
        f.attrs["major"] = 2
        f.attrs["minor"] = 0
        f.create_dataset("w_latent", data=w)
        f.create_dataset("z_latent", data=w.astype(np.float32) * 2)
    return w


@pytest.mark.parametrize("fixed_strings", [False, True])
def test_reads_hand_written_reference_file(tmp_path: Path, fixed_strings: bool) -> None:
    w = _reference_sample_file(tmp_path / "ref.h5", fixed_strings=fixed_strings)
    sample = read_sample(tmp_path / "ref.h5")
    assert sample.network_type == "stylegan2-256" and sample.embedding_type is None
    assert sample.w_latent.shape == (512,) and sample.w_latent.dtype == np.float32
    np.testing.assert_allclose(sample.w_latent, w[0], rtol=1e-6)
    np.testing.assert_allclose(sample.z_latent, 2 * w[0], rtol=1e-6)


def test_write_validates_mutated_sample(tmp_path: Path) -> None:
    sample = w_sample(1.0)
    sample.w_latent = np.zeros(3)
    with pytest.raises(SynthdbError, match="w_latent"):
        write_sample(tmp_path / "s.h5", sample)
    assert not (tmp_path / "s.h5").exists()


def test_write_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SynthdbError, match="nope"):
        write_sample(tmp_path / "nope" / "s.h5", w_sample(1.0))


# ------------------------------------------------------------------------------------- collection


def test_collection_add_get_identities_labels(tmp_path: Path) -> None:
    path = tmp_path / "samples.h5"
    labels = ["reference", "augmentation_10", "augmentation_2", "augmentation_0", "pose_1", "smile"]
    with SampleCollection.create(path) as coll:
        for identity in (100000, 42, 99999, 3):
            for i, label in enumerate(labels):
                coll.add(identity, label, w_sample(identity + i / 10))
        assert len(coll) == 24
    with SampleCollection.open(path) as coll:
        assert coll.identities() == [3, 42, 99999, 100000]  # numeric, not lexicographic
        expected = ["augmentation_0", "augmentation_2", "augmentation_10", "pose_1", "reference", "smile"]
        assert coll.labels(42) == expected
        assert list(coll)[:6] == [(3, label) for label in expected]
        got = coll.get(99999, "augmentation_10")
        np.testing.assert_array_equal(got.w_latent, np.full(512, 99999.1, dtype=np.float32))
        assert (42, "smile") in coll and (42, "frown") not in coll and (7, "smile") not in coll
        streamed = list(coll.iter_samples())
        assert [(i, lab) for i, lab, _ in streamed] == list(coll)
        assert [(i, lab) for i, lab, _ in coll.iter_samples([42])] == [(42, label) for label in expected]


def test_int_label_and_normalised_label(tmp_path: Path) -> None:
    with SampleCollection.create(tmp_path / "c.h5") as coll:
        coll.add(1, 3, w_sample(3.0))
        coll.add(1, "pose/left up", w_sample(4.0))
        assert coll.labels(1) == ["3", "pose_left_up"]
        assert coll.get(1, 3).w_latent[0] == 3.0
        assert coll.get(1, "3").w_latent[0] == 3.0
        assert coll.get(1, "pose/left up").w_latent[0] == 4.0


def test_replace_semantics(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    with SampleCollection.create(path) as coll:
        coll.add(5, "reference", w_sample(1.0, emb_dim=512))
        with pytest.raises(SynthdbError, match="replace=True") as err:
            coll.add(5, "reference", w_sample(2.0))
        assert str(path) in str(err.value)
        assert coll.get(5, "reference").w_latent[0] == 1.0
        coll.add(5, "reference", w_sample(2.0), replace=True)
        assert len(coll) == 1
    with SampleCollection.open(path) as coll:
        back = coll.get(5, "reference")
        assert back.w_latent[0] == 2.0
        assert back.embedding is None and back.embedding_type is None  # truly replaced, nothing merged
    with h5py.File(path, "r") as f:
        assert f["00005/reference/w_latent"][0, 0] == 2.0 and "embedding" not in f["00005/reference"]


def test_open_append_keeps_samples_and_creates_missing(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    with SampleCollection.open(path, "a") as coll:
        coll.add(1, "a", w_sample(1.0))
    with SampleCollection.open(path, "a") as coll:
        coll.add(1, "b", w_sample(2.0))
    with SampleCollection.open(path) as coll:
        assert coll.labels(1) == ["a", "b"]


def test_read_only_and_create_refusals(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    SampleCollection.create(path).close()
    with pytest.raises(SynthdbError, match="overwrite=True"):
        SampleCollection.create(path)
    with SampleCollection.open(path) as coll, pytest.raises(SynthdbError, match="read-only"):
        coll.add(1, "a", w_sample(1.0))
    with SampleCollection.create(path, overwrite=True) as coll:
        assert coll.identities() == [] and len(coll) == 0


def test_missing_sample_and_identity_errors(tmp_path: Path) -> None:
    with SampleCollection.create(tmp_path / "c.h5") as coll:
        coll.add(1, "a", w_sample(1.0))
        with pytest.raises(SynthdbError, match="no sample for identity 1, label 'b'"):
            coll.get(1, "b")
        with pytest.raises(SynthdbError, match="no identity 2"):
            coll.labels(2)
        with pytest.raises(SynthdbError, match="non-negative int"):
            coll.add(-1, "a", w_sample(1.0))
        with pytest.raises(SynthdbError, match="label"):
            coll.add(1, "", w_sample(1.0))
        with pytest.raises(SynthdbError, match="label"):
            coll.add(1, 2.5, w_sample(1.0))  # type: ignore[arg-type]


def test_natural_sort_key() -> None:
    names = ["augmentation_10", "augmentation_2", "b", "augmentation_1", "a10b2", "a10b10", "a9", "reference"]
    assert sorted(names, key=natural_sort_key) == [
        "a9",
        "a10b2",
        "a10b10",
        "augmentation_1",
        "augmentation_2",
        "augmentation_10",
        "b",
        "reference",
    ]
    assert normalize_label(12) == "12" and normalize_label("a b/c") == "a_b_c"


def test_read_arrays(tmp_path: Path) -> None:
    with SampleCollection.create(tmp_path / "c.h5") as coll:
        coll.add(20, "augmentation_10", w_sample(2.10, emb_dim=128))
        coll.add(20, "augmentation_2", w_sample(2.02, emb_dim=128))
        coll.add(3, "reference", w_sample(0.3))  # no embedding
        coll.add(3, "eg3d", full_sample(seed=1, emb_dim=128))
        ids, labels, w = coll.read_arrays("w_latent")
        assert ids.dtype == np.int64 and ids.tolist() == [3, 3, 20, 20]
        assert labels == ["eg3d", "reference", "augmentation_2", "augmentation_10"]
        assert w.dtype == np.float32 and w.shape == (4, 512)
        np.testing.assert_array_equal(w[1:, 0], np.float32([0.3, 2.02, 2.10]))
        np.testing.assert_array_equal(w[0], coll.get(3, "eg3d").w_latent)

        ids, labels, emb = coll.read_arrays("embedding")
        assert ids.tolist() == [3, 20, 20] and emb.shape == (3, 128)
        ids, labels, bfm = coll.read_arrays("bfm_model/exp")
        assert labels == ["eg3d"] and bfm.shape == (1, 64)
        np.testing.assert_array_equal(bfm[0], coll.get(3, "eg3d").bfm_model["exp"])
        ids, labels, wp = coll.read_arrays("w_plus_latent", identities=[20])
        assert ids.shape == (0,) and labels == [] and wp.shape == (0, 0, 512)
        assert coll.read_arrays("c_label", identities=[20])[2].shape == (0, 25)
        with pytest.raises(SynthdbError, match="unknown field"):
            coll.read_arrays("latent")
        coll.add(4, "reference", w_sample(1.0, emb_dim=512))
        with pytest.raises(SynthdbError, match="mixed shapes"):
            coll.read_arrays("embedding")


def _reference_collection(path: Path) -> dict[tuple[int, str], H5Sample]:
    """A collection built with raw h5py in the reference layout, with bfm_model inside label groups."""
    rng = _rng(3)
    expected = {}
    with h5py.File(path, "w") as f:
        f.attrs.update({"magic": "synthetics_collection", "major": 2, "minor": 0})
        for identity, label in [(7, "reference"), (7, "augmentation_1"), (12, "reference")]:
            g = f.create_group(f"{identity:05}/{label}")
            g.attrs["network_type"] = "stylegan2-256"
            g.attrs["embedding_type"] = "iresnet50"
            w, e = rng.standard_normal((1, 512)), rng.standard_normal((1, 512))
            g.create_dataset("w_latent", data=w.astype(np.float32))
            g.create_dataset("embedding", data=e.astype(np.float32))
            bfm = {k: rng.standard_normal((1, d)).astype(np.float32) for k, d in BFM_DIMS.items()}
            for k, v in bfm.items():
                g.create_dataset(f"bfm_model/{k}", data=v)
            expected[identity, label] = H5Sample(
                w_latent=w[0],
                embedding=e[0],
                bfm_model={k: v[0] for k, v in bfm.items()},
                network_type="stylegan2-256",
                embedding_type="iresnet50",
            )
    return expected


def test_reads_hand_written_reference_collection(tmp_path: Path) -> None:
    expected = _reference_collection(tmp_path / "samples.h5")
    with SampleCollection.open(tmp_path / "samples.h5") as coll:
        assert coll.identities() == [7, 12]
        assert coll.labels(7) == ["augmentation_1", "reference"]
        for (identity, label), sample in expected.items():
            assert_same(sample, coll.get(identity, label))  # bfm_model read relative to each group


def test_written_collection_has_reference_layout(tmp_path: Path) -> None:
    path = tmp_path / "samples.h5"
    with SampleCollection.create(path) as coll:
        coll.add(42, "reference", full_sample(network_type="eg3d"))
        coll.add(42, "augmentation 0", w_sample(1.0, emb_dim=128))
    with h5py.File(path, "r") as f:
        assert dict(f.attrs) == {"magic": COLLECTION_MAGIC, "major": 2, "minor": 0}
        assert list(f) == ["00042"]
        assert list(f["00042"]) == ["augmentation_0", "reference"]
        ref = f["00042/reference"]
        assert dict(ref.attrs) == {"network_type": "eg3d", "embedding_type": "iresnet50"}
        assert ref["w_latent"].shape == (1, 512) and ref["c_label"].shape == (1, 25)
        assert ref["w_plus_latent"].shape == (1, 14, 512)
        assert ref["bfm_model/gamma"].shape == (1, 27)
        aug = f["00042/augmentation_0"]
        assert sorted(aug) == ["embedding", "w_latent"] and aug["embedding"].shape == (1, 128)
        assert aug["w_latent"].dtype == np.float32


# ------------------------------------------------------------------------------------- bad files


def _open_collection(path: Path) -> None:
    SampleCollection.open(path).close()


READERS = [pytest.param(read_sample, id="sample"), pytest.param(_open_collection, id="collection")]


def _valid_file(reader, path: Path) -> None:
    if reader is read_sample:
        write_sample(path, full_sample())
    else:
        with SampleCollection.create(path) as coll:
            for i in range(5):
                coll.add(i, "reference", full_sample(seed=i))


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("keep", [0.5, 0.99, 0.01])
def test_truncated_file(tmp_path: Path, reader, keep: float) -> None:
    path = tmp_path / "bad.h5"
    _valid_file(reader, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SynthdbError, match="truncated") as err:
        reader(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("size", [0, 10, 4096])
def test_random_bytes_file(tmp_path: Path, reader, size: int) -> None:
    path = tmp_path / "noise.h5"
    path.write_bytes(_rng(size).bytes(size))
    with pytest.raises(SynthdbError, match="not a readable HDF5 file") as err:
        reader(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("reader", READERS)
def test_missing_file(tmp_path: Path, reader) -> None:
    with pytest.raises(SynthdbError, match="not found"):
        reader(tmp_path / "absent.h5")


@pytest.mark.parametrize(
    ("attrs", "reader", "message"),
    [
        ({"magic": "something", "major": 2, "minor": 0}, read_sample, "magic is 'something'"),
        ({"magic": "something", "major": 2, "minor": 0}, _open_collection, "magic is 'something'"),
        ({"magic": COLLECTION_MAGIC, "major": 2, "minor": 0}, read_sample, "SampleCollection.open"),
        ({"magic": SAMPLE_MAGIC, "major": 2, "minor": 0}, _open_collection, "read_sample"),
        ({"magic": SAMPLE_MAGIC, "major": 3, "minor": 0}, read_sample, "version 3.0 is not supported"),
        ({"magic": SAMPLE_MAGIC, "major": 2, "minor": 1}, read_sample, "version 2.1 is not supported"),
        ({"magic": COLLECTION_MAGIC, "major": 1, "minor": 0}, _open_collection, "version 1.0"),
        ({"magic": SAMPLE_MAGIC, "major": 2}, read_sample, "missing root attribute 'minor'"),
        ({}, _open_collection, "missing root attribute 'magic'"),
        ({"magic": SAMPLE_MAGIC, "major": "two", "minor": 0}, read_sample, "not integers"),
    ],
)
def test_bad_header(tmp_path: Path, attrs: dict, reader, message: str) -> None:
    path = tmp_path / "hdr.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update(attrs)
    with pytest.raises(SynthdbError, match=message) as err:
        reader(path)
    assert str(err.value).startswith(str(path))


def test_bad_dataset_shape_and_missing_attribute_in_file(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    _reference_sample_file(path)
    with h5py.File(path, "a") as f:
        del f["w_latent"]
        f.create_dataset("w_latent", data=np.zeros(512))  # batch dimension forgotten
    with pytest.raises(SynthdbError, match=r"s\.h5:/w_latent has shape \(512,\), expected a leading batch"):
        read_sample(path)
    with h5py.File(path, "a") as f:
        del f["w_latent"]
        f.create_dataset("w_latent", data=np.zeros((1, 512)))
        del f.attrs["network_type"]
    with pytest.raises(SynthdbError, match="missing network_type") as err:
        read_sample(path)
    assert str(path) in str(err.value)
    with h5py.File(path, "a") as f:
        f.attrs["network_type"] = "stylegan2"
        del f["w_latent"]
        f.create_dataset("w_latent", data=np.zeros((1, 500)))
    with pytest.raises(SynthdbError, match=r"w_latent has shape \(500,\), expected \(512,\)"):
        read_sample(path)


def test_damaged_collection_members(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    _reference_collection(path)
    with h5py.File(path, "a") as f:
        f["00012/reference/bfm_model"].pop("gamma")
        f.create_group("abc")
    with SampleCollection.open(path) as coll:
        with pytest.raises(SynthdbError, match=r"c\.h5:/00012/reference/bfm_model lacks \['gamma'\]"):
            coll.get(12, "reference")
        with pytest.raises(SynthdbError, match="'abc' is not an identity group"):
            coll.identities()


# ----------------------------------------------------------------------------------------- property

labels_st = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=12),
).filter(lambda label: str(label) not in (".", ".."))

entry_st = st.tuples(
    st.integers(min_value=0, max_value=200_000),
    labels_st,
    hnp.arrays(np.float32, 512, elements=st.floats(width=32, allow_nan=True)),
    st.none() | hnp.arrays(np.float32, st.integers(1, 64), elements=st.floats(width=32, allow_nan=False)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entry_st, min_size=1, max_size=8))
def test_property_collection_round_trip(entries: list) -> None:
    expected: dict[tuple[int, str], H5Sample] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.h5"
        with SampleCollection.create(path) as coll:
            for identity, label, w, emb in entries:
                sample = H5Sample(
                    w_latent=w,
                    embedding=emb,
                    network_type="stylegan2",
                    embedding_type=None if emb is None else "dlib",
                )
                coll.add(identity, label, sample, replace=True)
                expected[identity, normalize_label(label)] = sample
        with SampleCollection.open(path) as coll:
            assert coll.identities() == sorted({i for i, _ in expected})
            for identity in coll.identities():
                wanted = sorted((lab for i, lab in expected if i == identity), key=natural_sort_key)
                assert coll.labels(identity) == wanted
            for identity, label, sample in coll.iter_samples():
                assert_same(expected[identity, label], sample)
            ids, labels, w = coll.read_arrays("w_latent")
            assert list(zip(ids.tolist(), labels, strict=True)) == list(coll)
            for row, key in zip(w, coll, strict=True):
                np.testing.assert_array_equal(row, expected[key].w_latent)
