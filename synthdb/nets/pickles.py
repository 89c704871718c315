"""Read NVIDIA network pickles (StyleGAN2-ADA, StyleGAN3, EG3D) as data, never as code, with bounded work.

NVIDIA saves networks with ``pickle.dump``. Every network class is wrapped by ``torch_utils.persistence``,
so each module is pickled as a call ``_reconstruct_persistent_obj(meta)`` whose ``meta`` carries the full
Python source of the module that defined the class (``module_src``), the class name, and the object's
``__dict__`` (parameters, buffers, child modules, the ``_init_args`` / ``_init_kwargs`` it was built with).
NVIDIA's loader ``exec``s that source: loading a pickle from a stranger runs the stranger's code.

So the file runs on synthdb's own bounded pickle machine (:mod:`synthdb.nets.unpickler`: a budget of
opcodes and bytes, lengths checked against the file, safe dict keys, no call or BUILD it did not allow), whose
only globals are :data:`ALLOWED_GLOBALS` (functions of ours that build inert data) and
:data:`RECORDED_CLASSES` (plain torch and EG3D modules, recorded by name). Tensor storages are rebuilt by us
from the legacy ``torch.save`` bytes NVIDIA embeds (their declared size must equal the bytes that follow); a
tensor may not view more elements than its storage holds nor reach past it (no stride-0 expansion); storage
and numpy array bytes, and separately tensor bytes, may not add up to more than the file's size plus
:data:`~synthdb.nets.unpickler.BYTES_SLACK`. numpy values are numeric scalars and arrays only, from payloads
of exactly the right size: no object arrays, no raw buffers, no ``numpy.ndarray`` called by the pickle.

Persistent objects become :class:`PickledModule` records (class name, init arguments, state; the source
stays an unread string). After loading, :meth:`PickledModule.check` walks the module tree iteratively, each
module once (a child reachable twice, or a cycle, is an error) and at most :data:`MAX_DEPTH` levels deep, and
:func:`plain` copies recorded arguments at most :data:`MAX_ITEMS` values and :data:`MAX_DEPTH` levels deep.
Every refusal ends as one :class:`~synthdb.errors.SynthdbError` line. Callers then build synthdb's own
classes from the records (:mod:`synthdb.nets.generator`).
"""

from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthdb.errors import SynthdbError
from synthdb.nets.unpickler import (
    BYTES_SLACK,
    MAX_OPS,
    Budget,
    Global,
    OverBudget,
    RefusedGlobal,
    TensorFlowPickle,
    Unpickler,
    arguments,
    describe,
    key,
)

MAX_DEPTH = 32
"""The deepest module tree or recorded argument walked (NVIDIA's networks are 6 levels deep)."""
MAX_ITEMS = 100_000
"""The most values :func:`plain` copies from one recorded argument tree."""
MAX_DIMS = 8
"""The most dimensions of a tensor or numpy array (networks use up to 5)."""
_EXAMPLES = 8  # keys named in an error
_MAX_NAME = 256


def _is_name(value: Any) -> bool:
    """A module, class, parameter or argument name that error messages can show on one line."""
    return isinstance(value, str) and 0 < len(value) <= _MAX_NAME and value.isprintable()


class PickledModule:
    """One ``torch.nn.Module`` of a pickle, as data: its class name, state and constructor arguments.

    ``persistent`` records come from NVIDIA's persistence wrapper and keep their ``module_src`` (only ever
    shown, never compiled). Plain modules that networks embed (an ``nn.Sequential`` in EG3D's decoder, EG3D's
    renderer) are allow-listed by name in :data:`RECORDED_CLASSES` and recorded the same way, without
    importing them; their state arrives with pickle's BUILD.
    """

    def __init__(
        self,
        class_name: str,
        state: Mapping[str, Any],
        *,
        module: str = "",
        persistent: bool = False,
        module_src: str = "",
    ) -> None:
        self.class_name = class_name
        self.module = module
        self.persistent = persistent
        self.module_src = module_src
        self.state = dict(state)

    def __repr__(self) -> str:
        return f"PickledModule({self.class_name}, children={list(self.children())})"

    @property
    def init_args(self) -> tuple[Any, ...]:
        """Positional constructor arguments (persistent classes record them; NVIDIA passes none)."""
        args = plain(self.state.get("_init_args", ()))
        if not isinstance(args, list | tuple):
            raise ValueError(f"{self.class_name}'s _init_args is a {type(args).__name__}, not a tuple")
        return tuple(args)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """Keyword constructor arguments, as plain dicts (NVIDIA nests ``EasyDict``s)."""
        kwargs = plain(self.state.get("_init_kwargs", {}))
        if not isinstance(kwargs, dict) or not all(_is_name(k) for k in kwargs):
            raise ValueError(f"{self.class_name}'s _init_kwargs is not a dict of named arguments")
        for name, value in kwargs.items():
            if name.endswith("_kwargs") and not isinstance(value, dict | None):
                raise ValueError(f"{self.class_name}'s {name} is a {type(value).__name__}, not a dict")
        return kwargs

    def children(self) -> dict[str, PickledModule]:
        """Child modules by attribute name, as ``nn.Module._modules`` lists them."""
        modules = self.state.get("_modules", {})
        if not isinstance(modules, Mapping):
            raise ValueError(f"{self.class_name}._modules is a {type(modules).__name__}, not a dict")
        out = {}
        for name, child in modules.items():
            if child is None:
                continue
            if not _is_name(name):
                raise ValueError(f"{self.class_name} has a child module named {describe(name)}")
            if not isinstance(child, PickledModule):
                raise ValueError(f"{self.class_name}.{name} is a {type(child).__name__}, not a module")
            out[name] = child
        return out

    def walk(self, prefix: str = "") -> Iterator[tuple[str, PickledModule]]:
        """(dotted name, record) for this module and every descendant, in registration order.

        Iterative, and each module is visited once: a crafted pickle can make the tree a DAG (the same child
        under two names, at every level: 2^60 paths in a few kilobytes) or a cycle, which torch never saves.
        """
        seen: set[int] = set()
        pending: list[tuple[str, PickledModule, int]] = [(prefix, self, 0)]
        while pending:
            name, record, depth = pending.pop()
            where = name.rstrip(".") or "the root module"
            if id(record) in seen:
                raise ValueError(f"{where} is a module already met elsewhere in the tree (shared or cyclic)")
            if depth > MAX_DEPTH:
                raise ValueError(f"{where} is nested more than {MAX_DEPTH} modules deep")
            seen.add(id(record))
            yield name, record
            children = list(record.children().items())
            pending.extend((f"{name}{key}.", child, depth + 1) for key, child in reversed(children))

    def class_names(self) -> set[str]:
        """Class names of this module and all its descendants: what architecture detection looks at."""
        return {record.class_name for _, record in self.walk()}

    def state_dict(self) -> dict[str, Tensor]:
        """The flat ``name -> tensor`` dict ``nn.Module.state_dict()`` would give: parameters and persistent
        buffers, children after their parent, in registration order."""
        out: dict[str, Tensor] = {}
        for prefix, record in self.walk():
            skip = record.state.get("_non_persistent_buffers_set", set())
            parameters, buffers = record.state.get("_parameters", {}), record.state.get("_buffers", {})
            if (
                not isinstance(skip, set | frozenset)
                or not isinstance(parameters, Mapping)
                or not isinstance(buffers, Mapping)
            ):
                raise ValueError(f"{prefix or 'the root module'}: parameters or buffers that are not dicts")
            tensors = [*parameters.items(), *((k, v) for k, v in buffers.items() if k not in skip)]
            for name, value in tensors:
                if value is None:
                    continue
                if not _is_name(name):
                    raise ValueError(f"{prefix or 'the root module'} has a tensor named {describe(name)}")
                if not isinstance(value, Tensor):
                    raise ValueError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
                out[f"{prefix}{name}"] = value
        return out

    def check(self) -> None:
        """Raise ValueError unless this record is a tree of modules (no DAG, no cycle, bounded depth) whose
        tensors are tensors and whose recorded arguments are plain data: after this, walking it is safe."""
        self.state_dict()
        _ = (self.init_args, self.init_kwargs)  # computing them raises on anything but plain data


def plain(value: Any, limit: int = MAX_ITEMS) -> Any:
    """Dict subclasses (EasyDict) as dicts, numpy values as Python ones, recursively through lists and
    tuples, so kwargs compare and serialise like ordinary data.

    A pickle can share one list under many names at every level (1.5 KB that a naive copy turns into
    gigabytes) or nest without end: the copy stops with ValueError after ``limit`` values or
    :data:`MAX_DEPTH` levels.
    """
    budget = [limit]

    def spend(count: int, depth: int) -> None:
        budget[0] -= count
        if budget[0] < 0 or depth > MAX_DEPTH:
            raise ValueError(f"recorded arguments over {limit:,} values or {MAX_DEPTH} levels deep")

    def copy(item: Any, depth: int) -> Any:
        spend(1, depth)
        if isinstance(item, Mapping):
            return {k: copy(v, depth + 1) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return type(item)(copy(v, depth + 1) for v in item)
        if isinstance(item, np.ndarray):
            spend(item.size, depth)  # before tolist() makes a Python object of every element
            return copy(item.tolist(), depth)
        if isinstance(item, np.generic):
            return item.item()
        return item

    return copy(value, 0)


class _EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access) while unpickling."""


# --- what the globals build ---------------------------------------------------------------------------------


def _reconstruct_persistent(machine: Unpickler, args: tuple[Any, ...]) -> PickledModule:
    """``torch_utils.persistence._reconstruct_persistent_obj(meta)``: a record, its source unread."""
    (meta,) = arguments(args, 1, 1, "_reconstruct_persistent_obj")
    if (
        not isinstance(meta, Mapping)
        or meta.get("type") != "class"
        or not isinstance(meta.get("state"), Mapping)
        or not isinstance(meta.get("class_name"), str)
        or not _is_name(meta["class_name"])
        or not isinstance(meta.get("module_src", ""), str)
    ):
        raise pickle.UnpicklingError(
            "a persistent object without the class name / state layout of torch_utils.persistence"
        )
    machine.budget.spend_ops(len(meta["state"]))
    return PickledModule(
        meta["class_name"], meta["state"], persistent=True, module_src=meta.get("module_src", "")
    )


def _recorded(module: str, name: str) -> Global:
    """NEWOBJ of a plain module class: an empty record that the following BUILD fills with its state."""

    def new(machine: Unpickler, args: tuple[Any, ...]) -> PickledModule:
        arguments(args, 0, 0, f"{module}.{name}")
        record = PickledModule(name, {}, module=module)

        def build(state: Any) -> None:
            if not isinstance(state, Mapping):
                raise pickle.UnpicklingError(f"{module}.{name} has a state of type {type(state).__name__}")
            machine.budget.spend_ops(len(state))
            record.state = dict(state)

        return machine.will_build(record, build)

    return Global(f"{module}.{name}", new=new)


def _easy_dict(machine: Unpickler, args: tuple[Any, ...]) -> _EasyDict:
    arguments(args, 0, 0, "EasyDict")
    return _EasyDict()


def _ordered_dict(machine: Unpickler, args: tuple[Any, ...]) -> OrderedDict:
    arguments(args, 0, 0, "OrderedDict")  # pickle adds the items with SETITEMS
    return OrderedDict()


def _set_of(kind: type[set] | type[frozenset]) -> Callable[[Unpickler, tuple[Any, ...]], Any]:
    def make(machine: Unpickler, args: tuple[Any, ...]) -> Any:
        items = arguments(args, 0, 1, kind.__name__)
        if items and not isinstance(items[0], list):
            raise pickle.UnpicklingError(f"{kind.__name__} of a {type(items[0]).__name__}")
        machine.budget.spend_ops(len(items[0]) if items else 0)
        return kind(map(key, items[0]) if items else ())

    return make


# tensors


@dataclass(frozen=True, eq=False)
class _Storage:
    """A tensor storage rebuilt from the bytes of a legacy ``torch.save``: ``numel`` elements of ``dtype``."""

    dtype: torch.dtype
    numel: int
    data: torch.UntypedStorage


@dataclass(frozen=True, eq=False)
class _StorageRecord:
    """The persistent id a legacy ``torch.save`` writes for its storage, before the bytes are read."""

    dtype: torch.dtype
    key: str
    numel: int


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
#: torch's storage classes (the legacy format names them) -> dtype. No bool or complex: networks hold neither.
STORAGE_DTYPES: Mapping[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "UntypedStorage": torch.uint8,
}
_STORAGE_GLOBALS: Mapping[tuple[str, str], Global] = {
    ("torch", name): Global(f"torch.{name}") for name in STORAGE_DTYPES
}


def _load_storage(machine: Unpickler, args: tuple[Any, ...]) -> _Storage:
    """``torch.storage._load_from_bytes(data)``: NVIDIA pickles each storage as the bytes of a legacy-format
    ``torch.save``: five small pickles (magic number, protocol, system info, the storage's record, its key)
    then the element count and the raw elements. Read here on the same bounded machine, and the element
    count checked against the bytes that follow before anything is allocated."""
    (data,) = arguments(args, 1, 1, "_load_from_bytes")
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("a tensor storage that is not bytes")
    records: list[_StorageRecord] = []
    reader = Unpickler(
        io.BytesIO(data), len(data), _STORAGE_GLOBALS, machine.budget, lambda p: _storage_record(p, records)
    )
    magic, protocol, system = reader.load(), reader.load(), reader.load()
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("a tensor storage that is not a legacy torch.save")
    if not isinstance(system, dict) or system.get("little_endian") is not True:
        raise pickle.UnpicklingError("a tensor storage saved on a big-endian machine")
    record, keys = reader.load(), reader.load()
    if len(records) != 1 or record is not records[0] or keys != [record.key]:
        raise pickle.UnpicklingError("a tensor storage blob that is not exactly one storage")
    nbytes = record.numel * record.dtype.itemsize
    if reader.left != 8 + nbytes or int.from_bytes(reader.read(8), "little") != record.numel:
        raise pickle.UnpicklingError(
            f"a storage of {record.numel:,} elements followed by {max(reader.left - 8, 0):,} bytes"
        )
    machine.budget.spend_data(nbytes)
    raw = bytearray(memoryview(data)[len(data) - nbytes :])
    tensor = torch.frombuffer(raw, dtype=record.dtype) if nbytes else torch.empty(0, dtype=record.dtype)
    return _Storage(record.dtype, record.numel, tensor.untyped_storage())


def _storage_record(pid: Any, records: list[_StorageRecord]) -> _StorageRecord:
    """The legacy format's ``('storage', storage class, key, location, numel, view metadata)``."""
    if not (type(pid) is tuple and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], Global)):
        raise pickle.UnpicklingError("a tensor storage record of an unknown layout")
    _, kind, name, location, numel, view = pid
    if not isinstance(name, str) or not isinstance(location, str) or view is not None:
        raise pickle.UnpicklingError("a tensor storage record of an unknown layout")
    if type(numel) is not int or numel < 0:
        raise pickle.UnpicklingError(f"a tensor storage of {describe(numel)} elements")
    records.append(_StorageRecord(STORAGE_DTYPES[kind.name.removeprefix("torch.")], name, numel))
    return records[-1]


def _sizes(value: Any, what: str) -> tuple[int, ...]:
    if type(value) is not tuple or len(value) > MAX_DIMS or not all(type(v) is int and v >= 0 for v in value):
        raise pickle.UnpicklingError(f"a {what} that is not up to {MAX_DIMS} non-negative integers")
    return value


def _rebuild_tensor(machine: Unpickler, args: tuple[Any, ...]) -> Tensor:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``: a view of a storage that must
    lie inside it and not view more elements than it holds (no stride-0 or overlapping expansion)."""
    storage, offset, size, stride = arguments(args, 6, 7, "_rebuild_tensor_v2")[:4]
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor whose storage was not rebuilt by _load_from_bytes")
    size, stride, (offset,) = _sizes(size, "size"), _sizes(stride, "stride"), _sizes((offset,), "offset")
    numel = math.prod(size)
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"a tensor of size {size} with strides {stride}")
    end = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1 if numel else offset
    if end > storage.numel or numel > storage.numel:
        raise pickle.UnpicklingError(
            f"a tensor of size {size}, strides {stride} and offset {offset} views more than its storage "
            f"of {storage.numel:,} elements"
        )
    machine.budget.spend_tensor(numel * storage.dtype.itemsize)
    return torch.empty(0, dtype=storage.dtype).set_(storage.data, offset, size, stride)


def _rebuild_parameter(machine: Unpickler, args: tuple[Any, ...]) -> Tensor:
    """Parameters come back as plain tensors: they are only copied into synthdb's own (frozen) modules."""
    data = arguments(args, 3, 3, "_rebuild_parameter")[0]
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError("a parameter that is not a tensor")
    return data


# numpy

#: numpy type codes of the dtypes numpy pickles may name: numbers and bools, never objects or records
NUMPY_CODES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"})
#: what numpy's BUILD of a simple dtype carries after its byte order
_NUMPY_DTYPE_STATE = (None, None, None, -1, -1, 0)


class _DType:
    """A numpy dtype while unpickling. ``np.dtype('f8')`` is a shared singleton that numpy's own BUILD would
    mutate, so the pickle's BUILD only sets this stand-in's byte order."""

    def __init__(self, code: str) -> None:
        self.dtype = np.dtype(code)

    def build(self, state: Any) -> None:
        if type(state) is not tuple or len(state) != 8 or state[0] != 3 or state[2:] != _NUMPY_DTYPE_STATE:
            raise pickle.UnpicklingError(f"a numpy dtype {self.dtype} with an unknown state")
        if state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"a numpy dtype {self.dtype} of byte order {describe(state[1])}")
        self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_dtype(machine: Unpickler, args: tuple[Any, ...]) -> _DType:
    """``numpy.dtype(code, align, copy)`` for the numeric codes only."""
    code = arguments(args, 1, 3, "numpy.dtype")[0]
    if not isinstance(code, str) or code not in NUMPY_CODES:
        raise pickle.UnpicklingError(f"a numpy dtype {describe(code)}: only numbers are read")
    dtype = _DType(code)
    return machine.will_build(dtype, dtype.build)


def _numpy_scalar(machine: Unpickler, args: tuple[Any, ...]) -> Any:
    """numpy scalars (NVIDIA stores gains such as ``1 / np.sqrt(fan_in)`` in module state)."""
    dtype, data = arguments(args, 2, 2, "numpy scalar")
    if not isinstance(dtype, _DType) or type(data) is not bytes or len(data) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar that is not a number of its dtype's size")
    return np.frombuffer(data, dtype=dtype.dtype, count=1)[0]


def _numpy_array(machine: Unpickler, args: tuple[Any, ...]) -> np.ndarray:
    """``numpy...._reconstruct(ndarray, (0,), b'b')``: an empty array, which the next BUILD fills from a
    state checked here (numeric dtype, raw bytes of exactly the declared size) rather than by numpy."""
    subtype, shape, code = arguments(args, 3, 3, "numpy _reconstruct")
    if subtype is not _NDARRAY or shape != (0,) or code != b"b":
        raise pickle.UnpicklingError("a numpy array of another class or layout than numpy.ndarray's")
    array = np.empty(0, dtype=np.uint8)

    def build(state: Any) -> None:
        if type(state) is not tuple or len(state) != 5:
            raise pickle.UnpicklingError("a numpy array with an unknown state")
        version, shape, dtype, fortran, raw = state
        numeric = isinstance(dtype, _DType) and isinstance(raw, bytes)
        if version != 1 or not numeric or type(fortran) is not bool:
            raise pickle.UnpicklingError("a numpy array that is not numbers in raw bytes (no object arrays)")
        shape = _sizes(shape, "numpy shape")
        if len(raw) != math.prod(shape) * dtype.dtype.itemsize:
            raise pickle.UnpicklingError(f"a numpy array of shape {shape} with {len(raw):,} bytes of data")
        machine.budget.spend_data(len(raw))
        array.__setstate__((1, shape, dtype.dtype, fortran, raw))  # numpy copies the checked bytes

    return machine.will_build(array, build)


_NDARRAY = Global("numpy.ndarray")  # only ever the first argument of _reconstruct

#: (module, name) -> what a GLOBAL gives. Everything here builds data and calls nothing named by the pickle;
#: numpy appears under its 1.x and 2.x module names.
ALLOWED_GLOBALS: Mapping[tuple[str, str], Global] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): Global(
        "_reconstruct_persistent_obj", reduce=_reconstruct_persistent
    ),
    ("torch.storage", "_load_from_bytes"): Global("_load_from_bytes", reduce=_load_storage),
    ("torch._utils", "_rebuild_tensor_v2"): Global("_rebuild_tensor_v2", reduce=_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): Global("_rebuild_parameter", reduce=_rebuild_parameter),
    ("collections", "OrderedDict"): Global("OrderedDict", reduce=_ordered_dict),
    ("builtins", "set"): Global("set", reduce=_set_of(set)),
    ("builtins", "frozenset"): Global("frozenset", reduce=_set_of(frozenset)),
    ("dnnlib.util", "EasyDict"): Global("EasyDict", new=_easy_dict),
    ("dnnlib", "EasyDict"): Global("EasyDict", new=_easy_dict),
    ("numpy", "dtype"): Global("numpy.dtype", reduce=_numpy_dtype),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy.core.multiarray", "scalar"): Global("numpy scalar", reduce=_numpy_scalar),
    ("numpy._core.multiarray", "scalar"): Global("numpy scalar", reduce=_numpy_scalar),
    ("numpy.core.multiarray", "_reconstruct"): Global("numpy _reconstruct", reduce=_numpy_array),
    ("numpy._core.multiarray", "_reconstruct"): Global("numpy _reconstruct", reduce=_numpy_array),
}

#: Plain (not persistence-wrapped) module classes that NVIDIA networks embed; they are recorded as
#: :class:`PickledModule` data by name, never imported. EG3D's decoder is a plain ``OSGDecoder`` holding an
#: ``nn.Sequential`` with a ``Softplus``, and its renderer and ray sampler are plain modules without weights
#: (synthdb's EG3D has its own): every official EG3D snapshot names them. Add a network's own plain classes
#: here when its loader learns to rebuild them.
RECORDED_CLASSES: frozenset[tuple[str, str]] = frozenset(
    {
        ("torch.nn.modules.container", "Sequential"),
        ("torch.nn.modules.container", "ModuleList"),
        ("torch.nn.modules.container", "ModuleDict"),
        ("torch.nn.modules.activation", "Softplus"),
        ("training.triplane", "OSGDecoder"),
        ("training.volumetric_rendering.renderer", "ImportanceRenderer"),
        ("training.volumetric_rendering.ray_sampler", "RaySampler"),
        ("training.volumetric_rendering.ray_marcher", "MipRayMarcher2"),
    }
)
_NETWORK_GLOBALS: Mapping[tuple[str, str], Global] = {
    **ALLOWED_GLOBALS,
    **{key: _recorded(*key) for key in RECORDED_CLASSES},
}


# --- reading files ------------------------------------------------------------------------------------------


def read_network_pickle(path: str | Path) -> Any:
    """Everything in an NVIDIA network pickle (usually a dict with ``G``, ``D``, ``G_ema``,
    ``augment_pipe``, ``training_set_kwargs``), networks as :class:`PickledModule` records."""
    path = Path(path)
    if not path.is_file():
        raise SynthdbError(
            f"network pickle {path} does not exist: check the path, or fetch the model "
            "(`synthdb models fetch NAME`)"
        )
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            return Unpickler(f, size, _NETWORK_GLOBALS, Budget(size)).load()
    except RefusedGlobal as refused:
        raise SynthdbError(
            f"{path} refused: the pickle needs the Python global {refused.module}.{refused.name}, which "
            "synthdb's restricted unpickler does not allow (unpickling it could run code): nothing from the "
            "file was executed; use an official NVIDIA network pickle, or a synthdb generator file "
            "(Generator.save)"
        ) from None
    except TensorFlowPickle:
        raise SynthdbError(
            f"{path} is a TensorFlow-era StyleGAN pickle (dnnlib.tflib), whose weights synthdb cannot read: "
            "download the PyTorch release of the network (stylegan2-ada-pytorch / stylegan3 pickles)"
        ) from None
    except OverBudget as error:
        raise SynthdbError(
            f"{path} refused: {error} (synthdb reads network pickles of up to {MAX_OPS:,} objects, whose "
            f"storage and tensor bytes add up to at most the file's size + {BYTES_SLACK >> 20} MiB): it is "
            "damaged or crafted; nothing was built from it"
        ) from None
    except (pickle.UnpicklingError, UnicodeDecodeError) as error:
        raise SynthdbError(
            f"{path} is not a readable network pickle ({error}): it is truncated, "
            "corrupt or not an NVIDIA network pickle; download it again"
        ) from None


def read_pickled_module(path: str | Path, key: str = "G_ema") -> PickledModule:
    """The network stored under ``key`` in an NVIDIA pickle (``G_ema``: the generator to sample from),
    checked to be a tree of modules with plain recorded arguments (:meth:`PickledModule.check`)."""
    data = read_network_pickle(path)
    record = data if isinstance(data, PickledModule) else data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(record, PickledModule):
        found = (
            f"keys {', '.join(map(describe, list(data)[:_EXAMPLES]))}"
            if isinstance(data, Mapping)
            else f"a {type(data).__name__}"
        )
        raise SynthdbError(
            f"{path} holds {found}, not a network under {key!r}: pass an NVIDIA network "
            "pickle (a snapshot .pkl with G_ema)"
        )
    try:
        record.check()
    except ValueError as error:
        raise SynthdbError(
            f"{path}: its {record.class_name} is not a module tree torch could have saved ({error}): the "
            "file is damaged or crafted; download the official release again"
        ) from None
    return record
