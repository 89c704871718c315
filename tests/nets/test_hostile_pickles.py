"""Hostile generator files: pickles, synthdb files and checkpoints that try to crash, hang or exhaust memory.

Every attack is a real file, written here opcode by opcode (the small assembler below), through
:mod:`tests.nets.nvlabs_layout` with crafted constructor arguments, or with ``torch.save`` and ``zipfile``.
They are loaded by one subprocess under a data-memory limit (:data:`MEMORY_LIMIT`, a timeout as a safety net),
so a regression that segfaults, hangs or allocates gigabytes fails these tests instead of taking pytest down.
Each case must end as exactly one :class:`~synthdb.errors.SynthdbError` line that names the file, the
loading process must exit normally (no signal), and the folder must hold only what it held before.

The bounds (see :mod:`synthdb.nets.unpickler`, :mod:`synthdb.nets.pickles`, :mod:`synthdb.nets.limits` and
:mod:`synthdb.nets.weights`): at most 2,000,000 objects per pickle; storage and tensor bytes at most the
file's size + 1 MiB (torch files: twice the size + 1 MiB); module trees and recorded arguments at most 32
levels deep and 100,000 values; constructor arguments inside ranges that cover the published networks; zip
contents at most twice the zip's size.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import resource
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthdb.errors import SynthdbError
from synthdb.nets import eg3d, limits, stylegan2, stylegan3
from synthdb.nets.generator import TINY, Generator
from synthdb.nets.pickles import PickledModule, plain, read_network_pickle, read_pickled_module
from synthdb.nets.weights import load_state_dict
from tests.nets.nvlabs_layout import install_stand_ins, write_eg3d_official_pickle, write_nvlabs_pickle
from tests.nets.test_eg3d import official_network as official_eg3d
from tests.stress.harness import STATS

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
MEMORY_LIMIT = 3 << 30
"""RLIMIT_DATA of the loading subprocess (heap and anonymous mappings): torch itself takes about 0.9 GiB."""
TIMEOUT = 600
"""Seconds for all cases together: only a safety net against a hang, the cases take seconds."""

# --- a pickle assembler -------------------------------------------------------------------------------------


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def integer(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return (
        b"\x8a" + bytes([len(data)]) if len(data) < 256 else b"\x8b" + struct.pack("<i", len(data))
    ) + data


def raw(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def sequence(*items: bytes, kind: bytes = b"t") -> bytes:
    """A tuple (``t``) or list (``l``) of the items."""
    return b"(" + b"".join(items) + kind


def ints(values: tuple[int, ...]) -> bytes:
    return sequence(*map(integer, values))


def call(func: bytes, *args: bytes) -> bytes:
    return func + sequence(*args) + b"R"


def dictionary(**items: bytes) -> bytes:
    return b"}(" + b"".join(text(k) + v for k, v in items.items()) + b"u"


def put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


NONE, TRUE, FALSE = b"N", b"\x88", b"\x89"


def module(class_name: str = "Generator", **state: bytes) -> bytes:
    """A persistent record as NVIDIA's persistence wrapper writes it, with ``state`` as its ``__dict__``."""
    meta = dictionary(type=text("class"), class_name=text(class_name), state=dictionary(**state))
    return call(glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)


def snapshot(g_ema: bytes) -> bytes:
    return b"\x80\x04" + dictionary(G_ema=g_ema) + b"."


def generator(**state: bytes) -> bytes:
    """A StyleGAN2 root record (a ``SynthesisBlock`` below it), which loaders before the fix translated and
    built: attacks in its arguments or tensors reached ``plain`` and the network's constructor."""
    return snapshot(module(_modules=dictionary(b4=module("SynthesisBlock")), **state))


def storage_blob(values: bytes, numel: int | None = None, kind: str = "FloatStorage") -> bytes:
    """A storage in torch's legacy ``torch.save`` format (NVIDIA pickles embed one per tensor): five pickles,
    then the element count and the elements; ``numel`` may lie about the 4-byte values that follow."""
    numel = len(values) // 4 if numel is None else numel
    system = dictionary(protocol_version=integer(1001), little_endian=TRUE, type_sizes=dictionary())
    record = sequence(text("storage"), glob("torch", kind), text("k"), text("cpu"), integer(numel), NONE)
    pickles = [
        integer(0x1950A86A20F9469CFC6C),
        integer(1001),
        system,
        record + b"Q",
        b"]" + text("k") + b"a",  # torch's own unpickler knows EMPTY_LIST and APPEND, not LIST
    ]
    return b"".join(b"\x80\x02" + p + b"." for p in pickles) + struct.pack("<q", numel) + values


def storage(values: bytes, numel: int | None = None) -> bytes:
    return call(glob("torch.storage", "_load_from_bytes"), raw(storage_blob(values, numel)))


def tensor(source: bytes, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """``torch._utils._rebuild_tensor_v2`` of a storage, as torch pickles a tensor."""
    hooks = call(glob("collections", "OrderedDict"))
    rebuild = glob("torch._utils", "_rebuild_tensor_v2")
    return call(rebuild, source, integer(offset), ints(size), ints(stride), FALSE, hooks)


def with_weight(weight: bytes) -> bytes:
    return generator(_parameters=dictionary(weight=weight))


def dtype(code: str, state: bytes | None = None) -> bytes:
    """``numpy.dtype(code, False, True)`` and its BUILD, as numpy pickles one."""
    simple = sequence(integer(3), text("<"), NONE, NONE, NONE, integer(-1), integer(-1), integer(0))
    return call(glob("numpy", "dtype"), text(code), FALSE, TRUE) + (simple if state is None else state) + b"b"


def numpy_array(state: bytes) -> bytes:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` then BUILD with ``state``, in a module."""
    empty = call(
        glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), ints((0,)), b"C\x01b"
    )
    return generator(size=empty + state + b"b")


def forged_array(code: str) -> bytes:
    """The report's attack: ``numpy.ndarray((4,), dtype(code), buffer)``, pointers forged from raw bytes."""
    array = call(
        glob("numpy", "ndarray"), ints((4,)), call(glob("numpy", "dtype"), text(code)), raw(b"A" * 32)
    )
    sizes = {"z_dim": integer(8), "c_dim": integer(0), "w_dim": integer(8)}
    return generator(_init_kwargs=dictionary(**sizes, img_resolution=array))


def nested_modules(depth: int) -> bytes:
    """``depth`` modules, each the only child of the one above."""
    above, below = module("Block", _modules=dictionary(child=b"\0HOLE\0")).split(b"\0HOLE\0")
    return snapshot(above * depth + module("Leaf") + below * depth)


def module_dag(levels: int = 60) -> bytes:
    """Each level holds the level below twice (its definition, then a memo reference): 2**60 paths, 9 KB."""
    data = module("Leaf") + put(0)
    for level in range(1, levels + 1):
        data = module("Block", _modules=dictionary(a=data, b=get(level - 1))) + put(level)
    return snapshot(data)


def module_cycle() -> bytes:
    """A module that is its own child: its ``_modules`` dict receives the module once it is built."""
    meta = dictionary(
        type=text("class"), class_name=text("Generator"), state=dictionary(_modules=b"}" + put(1))
    )
    record = call(glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta) + put(2)
    return b"\x80\x04" + dictionary(G_ema=record + get(1) + text("loop") + get(2) + b"s0") + b"."


def shared_list(levels: int = 60) -> bytes:
    """A list holding the list below twice, ``levels`` deep: a kilobyte, 2**60 values when copied naively."""
    data = b"]" + put(0)
    for level in range(1, levels + 1):
        data = sequence(data, get(level - 1), kind=b"l") + put(level)
    return data


def repeated(value: Callable[[int], bytes], count: int = 1000) -> bytes:
    """A module with ``count`` parameters built by ``value(i)`` (i = 0 defines what the others reuse)."""
    return generator(_parameters=dictionary(**{f"w{i}": value(i) for i in range(count)}))


ONE_FLOAT = struct.pack("<f", 1.0)
MIB_BLOB = storage_blob(bytes(1 << 20))

#: name -> (pickle, what its one-line error must say)
PICKLES: dict[str, tuple[bytes, str]] = {
    # numpy: nothing that can make object arrays or reinterpret raw memory
    "ndarray of objects from a buffer": (forged_array("O8"), r"a numpy dtype 'O8': only numbers are read"),
    "ndarray of floats from a buffer": (forged_array("f8"), r"REDUCE on numpy\.ndarray"),
    "object array by BUILD": (
        numpy_array(sequence(integer(1), ints((2,)), dtype("f8"), FALSE, sequence(NONE, NONE, kind=b"l"))),
        r"a numpy array that is not numbers in raw bytes \(no object arrays\)",
    ),
    "numpy array shorter than its shape": (
        numpy_array(sequence(integer(1), ints((10**9,)), dtype("f8"), FALSE, raw(bytes(8)))),
        r"a numpy array of shape \(1000000000,\) with 8 bytes of data",
    ),
    "numpy dtype state": (
        generator(d=dtype("f8", sequence(integer(3), text("<"), integer(7), NONE, NONE, NONE, NONE, NONE))),
        r"a numpy dtype float64 with an unknown state",
    ),
    "numpy scalar of the wrong size": (
        generator(gain=call(glob("numpy.core.multiarray", "scalar"), dtype("f8"), raw(bytes(4096)))),
        r"a numpy scalar that is not a number of its dtype's size",
    ),
    # tensors: no view larger than its storage, no bytes beyond the file's
    "stride-0 expansion": (
        with_weight(tensor(storage(ONE_FLOAT), 0, (1 << 28,), (0,))),
        r"views more than its",
    ),
    "overlapping strides": (
        with_weight(tensor(storage(bytes(8000)), 0, (1000, 1000), (1, 1))),
        r"views more than its storage of 2,000 elements",
    ),
    "view past the storage": (with_weight(tensor(storage(ONE_FLOAT), 5, (1,), (1,))), r"views more than its"),
    "negative stride": (with_weight(tensor(storage(bytes(64)), 8, (4,), (-1,))), r"a stride that is not"),
    "2**70 elements": (with_weight(tensor(storage(ONE_FLOAT), 0, (2**70,), (1,))), r"views more than its"),
    "storage declaring 2**40 elements": (
        with_weight(tensor(storage(ONE_FLOAT, numel=2**40), 0, (1,), (1,))),
        r"a storage of 1,099,511,627,776 elements followed by 4 bytes",
    ),
    "one storage blob read 1000 times": (
        repeated(
            lambda i: call(glob("torch.storage", "_load_from_bytes"), get(0) if i else raw(MIB_BLOB) + put(0))
        ),
        r"refused: its storages and arrays hold more bytes than the file's",
    ),
    "one storage viewed by 1000 tensors": (
        repeated(
            lambda i: tensor(
                get(0) if i else call(glob("torch.storage", "_load_from_bytes"), raw(MIB_BLOB)) + put(0),
                0,
                (1 << 18,),
                (1,),
            )
        ),
        r"refused: its tensors view more bytes than the file's",
    ),
    "BUILD on a tensor": (
        with_weight(
            tensor(storage(ONE_FLOAT), 0, (1,), (1,))
            + sequence(NONE, integer(0), ints((1 << 28,)), ints((0,)))
            + b"b"
        ),
        r"BUILD on a Tensor, which synthdb never fills",
    ),
    # the module tree and the recorded arguments: walked once each, bounded
    "module DAG of 2**60 paths": (
        module_dag(),
        r"already met elsewhere in the tree|nested more than 32 modules",
    ),
    "module DAG of 2**30 paths": (module_dag(30), r"a\.b is a module already met elsewhere in the tree"),
    "module cycle": (module_cycle(), r"is a module already met elsewhere in the tree"),
    "modules 5000 deep": (nested_modules(5000), r"is nested more than 32 modules deep"),
    "kwargs DAG of 2**60 values": (
        generator(_init_kwargs=dictionary(mapping_kwargs=dictionary(num_layers=shared_list()))),
        r"recorded arguments over 100,000 values or 32 levels deep",
    ),
    "kwargs 100000 lists deep": (
        generator(_init_kwargs=dictionary(channel_base=b"]" * 100_000 + b"a" * 99_999)),
        r"recorded arguments over 100,000 values or 32 levels deep",
    ),
    "kwargs that are a list": (generator(_init_kwargs=b"]"), r"_init_kwargs is not a dict"),
    "mapping_kwargs that are an int": (
        generator(_init_kwargs=dictionary(mapping_kwargs=integer(3))),
        r"mapping_kwargs is a int, not a dict",
    ),
    # the machine itself
    "2.1 million objects": (
        b"\x80\x04(" + b"]" * 2_100_000 + b"l.",
        r"refused: it makes more than 2,000,000 objects",
    ),
    "a 4000-bit integer": (
        generator(_init_kwargs=dictionary(img_resolution=integer(2**4000))),
        r"an integer of 501 bytes",
    ),
    "tuple as a dict key": (b"\x80\x04}(K\x01\x85Nu.", r"a dict key or set item of type tuple"),
    "colliding int keys": (
        b"\x80\x04}(" + integer(2**61 - 1) + NONE + integer(2 * (2**61 - 1)) + NONE + b"u.",
        r"a dict key or set item of type int",
    ),
    "frozenset of tuples": (b"\x80\x04(N\x85\x91.", r"a dict key or set item of type tuple"),
    "bytearray of 2**40 bytes": (b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b".", r"opcode b'\\x96'"),
    "frame past the end": (b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.", r"a frame runs past the end"),
    "bytes past the end": (
        b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"abc.",
        r"runs past the end of the file",
    ),
    "REDUCE on a string": (b"\x80\x04" + text("os") + b")R.", r"REDUCE on a str"),
    "recorded class with arguments": (
        b"\x80\x04" + glob("torch.nn.modules.container", "Sequential") + sequence(dictionary()) + b"\x81.",
        r"Sequential called with 1 arguments",
    ),
    "APPEND to a dict": (b"\x80\x04}Na.", r"items added to a dict"),
    # names end up in error messages, which stay one line
    "newline in a global's name": (
        b"\x80\x04" + text("os\nx") + text("system") + b"\x93.",
        r"a global named 'os",
    ),
    "newline in a module's name": (
        snapshot(module(_modules=dictionary(**{"b4\nx": module("SynthesisBlock")}))),
        r"Generator has a child module named 'b4\\nx'",
    ),
    "newline in a parameter's name": (
        generator(_parameters=dictionary(**{"w\nx": tensor(storage(ONE_FLOAT), 0, (1,), (1,))})),
        r"the root module has a tensor named 'w\\nx'",
    ),
    "newline in an argument's name": (
        generator(_init_kwargs=dictionary(**{"z\ndim": integer(8)})),
        r"_init_kwargs is not a dict of named arguments",
    ),
    "os.system": (
        b"\x80\x04" + call(glob("os", "system"), text("touch ran")) + b".",
        r"needs the Python global os\.",
    ),
}

# --- NVIDIA-layout pickles with crafted constructor arguments -----------------------------------------------

SG2 = {
    "z_dim": 8,
    "c_dim": 0,
    "w_dim": 8,
    "img_resolution": 4,
    "mapping_kwargs": {"num_layers": 1},
    "channel_max": 4,
}
SG3 = {
    "z_dim": 8,
    "c_dim": 0,
    "w_dim": 8,
    "img_resolution": 16,
    "channel_max": 4,
    "num_layers": 3,
    "margin_size": 1,
}

#: name -> (architecture, changed arguments, what the one-line error must say)
ARGUMENTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "mapping num_layers=300000": (
        "stylegan2",
        {"mapping_kwargs": {"num_layers": 300_000}},
        r"mapping_kwargs\.num_layers = 300000, expected an integer in \[1, 32\]",
    ),
    "img_resolution=2**100": (
        "stylegan2",
        {"img_resolution": 2**100},
        r"img_resolution = a 101-bit integer, expected a power of two",
    ),
    "img_resolution=-64": (
        "stylegan2",
        {"img_resolution": -64},
        r"img_resolution = -64, expected a power of two",
    ),
    "img_resolution=nan": ("stylegan2", {"img_resolution": float("nan")}, r"img_resolution = nan, expected"),
    "channel_max=10**6": (
        "stylegan2",
        {"channel_max": 10**6},
        r"channel_max = 1000000, expected an integer in",
    ),
    "z_dim a string": ("stylegan2", {"z_dim": "512"}, r"z_dim = '512', expected an integer"),
    "resample_filter of 50000 taps": (
        "stylegan2",
        {"resample_filter": [1] * 50_000},
        r"resample_filter = a list, expected a list of 1 to 16 items",
    ),
    "channel_base below the resolution": (
        "stylegan2",
        {"channel_base": 2},
        r"channel_base = 2, expected at least",
    ),
    "filter_size=20000": (
        "stylegan3-t",
        {"filter_size": 20_000},
        r"filter_size = 20000, expected an integer in",
    ),
    "stylegan3 num_layers=10**6": ("stylegan3-t", {"num_layers": 10**6}, r"num_layers = 1000000, expected"),
    "stylegan3 taps by upsampling": (
        "stylegan3-t",
        {"filter_size": 64, "lrelu_upsampling": 8},
        r"filter_size = 64, expected at most 256 taps per filter",
    ),
    "stylegan3 first_cutoff=0": (
        "stylegan3-t",
        {"first_cutoff": 0},
        r"first_cutoff = 0, expected a number in",
    ),
}

# --- torch files: synthdb generator files, checkpoints, zips ------------------------------------------------


def _torch_bytes(obj: Any, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def zip_bomb() -> bytes:
    """A torch zip whose 256 MiB float tensor is deflated into 256 KB (torch.load inflates it)."""
    numel = 1 << 26
    record = (
        sequence(text("storage"), glob("torch", "FloatStorage"), text("0"), text("cpu"), integer(numel))
        + b"Q"
    )
    pkl = b"\x80\x02" + dictionary(w=tensor(record, 0, (numel,), (1,))) + b"."
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pkl)
        archive.writestr("archive/byteorder", "little")
        entry = zipfile.ZipInfo("archive/data/0")
        entry.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(entry, "w", force_zip64=True) as data:
            for _ in range(256):
                data.write(bytes(1 << 20))
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def lying_zip() -> bytes:
    """A real torch zip whose central directory declares 4 GB for its one stored tensor."""
    data = bytearray(_torch_bytes({"w": torch.ones(4)}))
    for header in re.finditer(rb"PK\x01\x02", bytes(data)):  # central directory entries
        start = header.start()
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + name_length].endswith(b"data/0"):
            struct.pack_into("<I", data, start + 24, 0xF000_0000)  # its uncompressed size
    return bytes(data)


def saved_generator(**changes: Any) -> bytes:
    """A synthdb generator file (Generator.save's layout) of stylegan2-tiny with ``changes``."""
    tiny = Generator.tiny("stylegan2-tiny")
    payload = {
        "format": "synthdb-generator",
        "version": 1,
        "architecture": "stylegan2",
        "name": "",
        "untrained": True,
        "kwargs": dict(tiny.kwargs),
        "state_dict": tiny.network.state_dict(),
    }
    return _torch_bytes({**payload, **changes})


def views(count: int, legacy: bool = False) -> Callable[[], bytes]:
    """A checkpoint of ``count`` distinct full views of one 1 MiB storage."""
    base = torch.zeros(1 << 18)
    return lambda: _torch_bytes({f"w{i}": base.view(-1) for i in range(count)}, legacy)


#: name -> (file writer, loader, what the one-line error must say). Loaders: Generator.load ("generator"),
#: or synthdb.nets.weights.load_state_dict ("weights", the embedders' path).
TORCH_FILES: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "zip bomb 256 KB to 256 MiB": (zip_bomb, "generator", r"declares 268,4\d\d,\d\d\d bytes of content in a"),
    "zip bomb as embedder weights": (zip_bomb, "weights", r"\(archive/data/0 is compressed\)"),
    "zip declaring 4 GB": (lying_zip, "weights", r"declares 4,02\d,\d\d\d,\d\d\d bytes of content"),
    "stride-0 tensor (zip)": (
        lambda: _torch_bytes({"w": torch.zeros(1).expand(1 << 28)}),
        "weights",
        r"its tensor w of shape \(268435456,\) and strides \(0,\) views 1,073,741,824 bytes of a 4-byte",
    ),
    "stride-0 tensor (legacy format)": (
        lambda: _torch_bytes({"w": torch.zeros(1).expand(1 << 28)}, legacy=True),
        "weights",
        r"views 1,073,741,824 bytes of a 4-byte storage",
    ),
    "one storage viewed 3000 times": (views(3000), "generator", r"its tensors add up to more than"),
    "one storage viewed 3000 times (legacy)": (
        views(3000, legacy=True),
        "weights",
        r"tensors add up to more",
    ),
    "saved generator num_layers=300000": (
        lambda: saved_generator(
            kwargs={**TINY["stylegan2-tiny"].kwargs, "mapping_kwargs": {"num_layers": 300_000}}
        ),
        "generator",
        r"its stylegan2 argument mapping_kwargs\.num_layers = 300000",
    ),
    "newline in a tensor's name": (
        lambda: _torch_bytes({"w\nx": torch.zeros(2)}),
        "weights",
        r"a tensor is named 'w\\nx': the file is damaged or crafted",
    ),
    "newline in a saved generator's tensor name": (
        lambda: saved_generator(state_dict={"w\nx": torch.zeros(2)}),
        "generator",
        r"a tensor is named 'state_dict\.w\\nx'",
    ),
    "saved generator 101-bit version": (
        lambda: saved_generator(version=2**100),
        "generator",
        r"a 101-bit integer",
    ),
    "saved generator named by a list": (
        lambda: saved_generator(architecture=["stylegan2"]),
        "generator",
        r"its architecture = a list, expected a printable string",
    ),
    "saved generator stride-0 weights": (
        lambda: saved_generator(state_dict={"w": torch.zeros(1).expand(1 << 26)}),
        "generator",
        r"views 268,435,456 bytes of a 4-byte storage",
    ),
    "rosinality with 200 ToRGB layers": (
        lambda: _torch_bytes(
            {
                "g_ema": {
                    "input.input": torch.zeros(1, 4, 4, 4),
                    "style.1.weight": torch.zeros(8, 8),
                    "to_rgb1.conv.weight": torch.zeros(1, 3, 4, 1, 1),
                    **{f"to_rgbs.{i}.conv.weight": torch.zeros(1) for i in range(200)},
                }
            }
        ),
        "generator",
        r"g_ema has 201 ToRGB layers, more than a 4096 px generator",
    ),
    "dcgan with 20 layers": (
        lambda: _torch_bytes(
            {"netG_state_dict": {f"main.{3 * i}.weight": torch.zeros(1, 1, 4, 4) for i in range(20)}}
        ),
        "generator",
        r"its dcgan argument num_layers = 20, expected an integer in \[2, 11\]",
    ),
}
SOUND = {"sound-stylegan2.pkl", "sound-stylegan3.pkl", "sound-saved.pt"}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def _cases() -> dict[str, tuple[str, str]]:
    """case -> (file name, loader) for every hostile file and the sound ones."""
    cases = {name: (f"{_slug(name)}.pkl", "generator") for name in [*PICKLES, *ARGUMENTS]}
    cases.update({name: (f"{_slug(name)}.pt", loader) for name, (_, loader, _) in TORCH_FILES.items()})
    cases.update({name: (name, "generator") for name in SOUND})
    return cases


def load_every_case(folder: str) -> None:
    """Run in the subprocess: load each file, print one JSON line per case with the outcome."""
    for case, (name, loader) in _cases().items():
        path = Path(folder) / name
        try:
            Generator.load(path) if loader == "generator" else load_state_dict(path)
            outcome = {"result": "loaded"}
        except SynthdbError as error:
            outcome = {"result": "error", "message": str(error)}
        except Exception as error:  # noqa: BLE001 - reported as a failure of this case, not of all of them
            outcome = {"result": "unexpected", "message": f"{type(error).__name__}: {error}"}
        print(json.dumps({"case": case, **outcome}), flush=True)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    for name, (data, _) in PICKLES.items():
        (folder / f"{_slug(name)}.pkl").write_bytes(data)
    with pytest.MonkeyPatch.context() as patch:
        ns = install_stand_ins(patch)
        sg2 = stylegan2.StyleGAN2Generator(**SG2)
        sg3 = stylegan3.StyleGAN3Generator(**SG3)
        for name, (arch, changes, _) in ARGUMENTS.items():
            net, kwargs = (sg2, SG2) if arch == "stylegan2" else (sg3, SG3)
            write_nvlabs_pickle(folder / f"{_slug(name)}.pkl", ns, net, {**kwargs, **changes})
        write_nvlabs_pickle(folder / "sound-stylegan2.pkl", ns, sg2, SG2)
        write_nvlabs_pickle(folder / "sound-stylegan3.pkl", ns, sg3, SG3)
    for name, (writer, _, _) in TORCH_FILES.items():
        (folder / f"{_slug(name)}.pt").write_bytes(writer())
    Generator.tiny("stylegan2-tiny").save(folder / "sound-saved.pt")
    return folder


@pytest.fixture(scope="module")
def outcomes(hostile_dir: Path) -> dict[str, Any]:
    """Every file loaded by one subprocess with at most :data:`MEMORY_LIMIT` of data memory."""
    before = sorted(os.listdir(hostile_dir))
    script = (
        f"from tests.nets.test_hostile_pickles import load_every_case; load_every_case({str(hostile_dir)!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_limit_memory,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {
        "returncode": proc.returncode,
        "stderr": proc.stderr[-3000:],
        "cases": {line.pop("case"): line for line in lines},
        "unchanged": before == sorted(os.listdir(hostile_dir)) and not (ROOT / "ran").exists(),
    }


EXPECTED = {
    **{name: message for name, (_, message) in PICKLES.items()},
    **{name: message for name, (_, _, message) in ARGUMENTS.items()},
    **{name: message for name, (_, _, message) in TORCH_FILES.items()},
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_hostile_file_ends_in_one_line(outcomes: dict[str, Any], hostile_dir: Path, case: str) -> None:
    assert outcomes["returncode"] == 0, (
        f"the loading process died ({outcomes['returncode']}): {outcomes['stderr']}"
    )
    outcome = outcomes["cases"][case]
    assert outcome["result"] == "error", outcome
    name = _cases()[case][0]
    message = outcome["message"]
    assert "\n" not in message and message.startswith(str(hostile_dir / name)), message
    assert re.search(EXPECTED[case], message), message
    STATS["hostile_inputs"] += 1


def test_sound_files_load_and_nothing_is_written(outcomes: dict[str, Any]) -> None:
    assert outcomes["returncode"] == 0, outcomes["stderr"]
    assert {case: outcomes["cases"][case]["result"] for case in SOUND} == dict.fromkeys(SOUND, "loaded")
    assert outcomes["unchanged"]  # no file appeared next to the inputs, and os.system never ran


@pytest.mark.parametrize("case", ["ndarray of objects from a buffer", "module DAG of 2**60 paths"])
def test_generate_image_refuses_in_one_line(tmp_path: Path, case: str) -> None:
    """The report's reproduction through the command line: `synthdb generate image` exits 1 with one line."""
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(PICKLES[case][0])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synthdb.cli.main",
            "generate",
            "image",
            "--generator",
            str(evil),
            "--out",
            str(tmp_path / "out.png"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {evil}"), proc.stderr
    assert re.search(PICKLES[case][1], proc.stderr)
    assert sorted(os.listdir(tmp_path)) == ["evil.pkl"]


# --- what must keep working ---------------------------------------------------------------------------------


def test_storage_blobs_are_torchs_legacy_format(tmp_path: Path) -> None:
    """The assembler's storage bytes are what torch's own legacy loader reads, and ours rebuilds them."""
    values = np.arange(6, dtype=np.float32)
    blob = storage_blob(values.tobytes())
    typed = torch.load(io.BytesIO(blob), weights_only=True)
    assert torch.equal(torch.empty(0).set_(typed), torch.from_numpy(values))
    path = tmp_path / "t.pkl"
    path.write_bytes(with_weight(tensor(storage(values.tobytes()), 1, (2, 2), (1, 2))))
    weight = read_pickled_module(path).state_dict()["weight"]
    assert torch.equal(weight, torch.from_numpy(values)[1:].as_strided((2, 2), (1, 2)))


def test_numpy_values_load_and_refusals_leave_numpy_alone(tmp_path: Path, nvlabs_modules: Any) -> None:
    """Numeric numpy scalars and arrays (NVIDIA's gains and StyleGAN3's size arrays) still load, in both byte
    orders; a refused dtype state never touched numpy's shared dtype singletons."""
    net = stylegan2.StyleGAN2Generator(**SG2)
    net.gains = [np.float32(0.5), np.float64(2.0), np.int64(7)]
    net.sizes = np.broadcast_to(np.asarray(16), [2])
    net.big_endian = np.arange(3, dtype=">f4")
    path = write_nvlabs_pickle(tmp_path / "n.pkl", nvlabs_modules, net, SG2)
    state = read_pickled_module(path).state
    assert state["gains"] == [0.5, 2.0, 7] and state["gains"][0].dtype == np.float32
    np.testing.assert_array_equal(state["sizes"], [16, 16])
    np.testing.assert_array_equal(state["big_endian"], [0, 1, 2])  # as numpy's own unpickling gives it
    assert state["big_endian"].dtype == pickle.loads(pickle.dumps(net.big_endian)).dtype
    (tmp_path / "d.pkl").write_bytes(PICKLES["numpy dtype state"][0])
    with pytest.raises(SynthdbError, match="unknown state"):
        read_network_pickle(tmp_path / "d.pkl")
    assert np.dtype("f8").byteorder == "=" and np.dtype("f8").isnative


def test_official_eg3d_layout_loads_and_reproduces_nvidia(tmp_path: Path, nvlabs_modules: Any) -> None:
    """An EG3D snapshot in NVIDIA's exact layout (plain ImportanceRenderer, RaySampler, MipRayMarcher2 and
    OSGDecoder globals) loads as data, executing nothing, and renders NVIDIA's numbers."""
    golden = torch.load(sorted(DATA.glob("eg3d_golden_*.pt"))[0], weights_only=True)
    net = official_eg3d(golden)
    pkl = write_eg3d_official_pickle(tmp_path / "eg3d.pkl", nvlabs_modules, net, golden["init_kwargs"])
    record = read_pickled_module(pkl)
    plain_modules = {r.class_name: r.module for _, r in record.walk() if not r.persistent}
    assert plain_modules == {
        "ImportanceRenderer": "training.volumetric_rendering.renderer",
        "MipRayMarcher2": "training.volumetric_rendering.ray_marcher",
        "RaySampler": "training.volumetric_rendering.ray_sampler",
        "OSGDecoder": "training.triplane",
        "Sequential": "torch.nn.modules.container",
        "Softplus": "torch.nn.modules.activation",
    }
    g = Generator.load(pkl)
    assert g.architecture.name == "eg3d"
    ws = g.mapping(golden["z"], golden["c_cond"], truncation_psi=golden["psi"], w_plus=True)
    assert (ws - golden["ws"]).abs().max() < 1e-4
    run = golden["runs"][0]
    torch.manual_seed(run["rng_seed"])
    with torch.no_grad():
        image = g.network.render(golden["ws"], golden["c_render"], run["noise_mode"], stochastic=True).image
    assert (image - run["image"]).abs().max() < 1e-4


def test_walk_and_plain_visit_each_value_once() -> None:
    leaf = PickledModule("Leaf", {})
    shared = PickledModule("Block", {"_modules": {"a": leaf, "b": leaf}})
    with pytest.raises(ValueError, match="b is a module already met"):
        list(shared.walk())
    assert [name for name, _ in PickledModule("Root", {"_modules": {"x": leaf}}).walk()] == ["", "x."]
    values: list[Any] = []
    for _ in range(40):
        values = [values, values]
    with pytest.raises(ValueError, match="over 100,000 values"):
        plain(values)
    assert plain({"a": (np.float32(1.5), [np.int64(2)])}) == {"a": (1.5, [2])}


@pytest.mark.parametrize(
    ("architecture", "kwargs"),
    [
        *((TINY[name].architecture, TINY[name].kwargs) for name in TINY),
        ("stylegan2", {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 1024}),
        (
            "stylegan3-r",
            {
                "z_dim": 512,
                "c_dim": 0,
                "w_dim": 512,
                "img_resolution": 1024,
                "channel_base": 65536,
                "channel_max": 1024,
                "conv_kernel": 1,
                "use_radial_filters": True,
            },
        ),
        ("stylegan3-t", {"z_dim": 512, "c_dim": 1000, "w_dim": 512, "img_resolution": 512}),
        ("eg3d", eg3d.FFHQ_512),
        ("dcgan", {"z_dim": 100, "ngf": 64, "img_channels": 3, "num_layers": 5}),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_published_networks_are_inside_the_limits(architecture: str, kwargs: dict[str, Any]) -> None:
    assert limits.check_arguments(architecture, kwargs, Path("net.pkl")) is None
