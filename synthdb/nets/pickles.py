"""Read NVIDIA network pickles (StyleGAN2-ADA, StyleGAN3, EG3D) as data, never as code.

NVIDIA saves networks with ``pickle.dump``. Every network class is wrapped by ``torch_utils.persistence``,
so each module is pickled as a call ``_reconstruct_persistent_obj(meta)`` whose ``meta`` carries the full
Python source of the module that defined the class (``module_src``), the class name, and the object's
``__dict__`` (parameters, buffers, child modules, the ``_init_args`` / ``_init_kwargs`` it was built with).
NVIDIA's loader ``exec``s that source: loading a pickle from a stranger runs the stranger's code.

:class:`RestrictedUnpickler` resolves only the globals in :data:`ALLOWED_GLOBALS`, each to a function of ours
that builds inert data: persistent objects become :class:`PickledModule` records (class name, init arguments,
state; the source stays an unread string), tensors are rebuilt from their bytes with
``torch.load(weights_only=True)``, and a few plain containers and numpy scalars are allowed. Any other global
(``os.system``, ``builtins.eval``, a class of the pickle's choosing) stops the load before anything is
called. Callers then build synthdb's own classes from the records (:mod:`synthdb.nets.generator`).
"""

from __future__ import annotations

import io
import pickle
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthdb.errors import SynthdbError


class PickledModule:
    """One ``torch.nn.Module`` of a pickle, as data: its class name, state and constructor arguments.

    ``persistent`` records come from NVIDIA's persistence wrapper and keep their ``module_src`` (only ever
    shown, never compiled). Plain torch modules that networks embed (an ``nn.Sequential`` in EG3D's decoder)
    are allow-listed by name in :data:`RECORDED_CLASSES` and recorded the same way, without importing them.
    """

    class_name: str = ""
    module: str = ""
    persistent: bool = False
    module_src: str = ""
    state: Mapping[str, Any] = types.MappingProxyType({})  # until pickle's BUILD step sets it

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

    def __setstate__(self, state: Any) -> None:
        """Pickle's BUILD step for recorded plain modules: keep their ``__dict__`` as data."""
        if not isinstance(state, Mapping):
            raise pickle.UnpicklingError(f"{self.module}.{self.class_name} has a state of type {type(state)}")
        self.state = dict(state)

    def __repr__(self) -> str:
        return f"PickledModule({self.class_name}, children={list(self.children())})"

    @property
    def init_args(self) -> tuple[Any, ...]:
        """Positional constructor arguments (persistent classes record them; NVIDIA passes none)."""
        return tuple(plain(self.state.get("_init_args", ())))

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """Keyword constructor arguments, as plain dicts (NVIDIA nests ``EasyDict``s)."""
        return plain(self.state.get("_init_kwargs", {}))

    def children(self) -> dict[str, PickledModule]:
        """Child modules by attribute name, as ``nn.Module._modules`` lists them."""
        out = {}
        for name, child in self.state.get("_modules", {}).items():
            if child is None:
                continue
            if not isinstance(child, PickledModule):
                raise ValueError(f"{self.class_name}.{name} is a {type(child).__name__}, not a module")
            out[name] = child
        return out

    def walk(self, prefix: str = "") -> Iterator[tuple[str, PickledModule]]:
        """(dotted name, record) for this module and every descendant, in registration order."""
        yield prefix, self
        for name, child in self.children().items():
            yield from child.walk(f"{prefix}{name}.")

    def class_names(self) -> set[str]:
        """Class names of this module and all its descendants: what architecture detection looks at."""
        return {record.class_name for _, record in self.walk()}

    def state_dict(self) -> dict[str, Tensor]:
        """The flat ``name -> tensor`` dict ``nn.Module.state_dict()`` would give: parameters and persistent
        buffers, children after their parent, in registration order."""
        out: dict[str, Tensor] = {}
        for prefix, record in self.walk():
            skip = record.state.get("_non_persistent_buffers_set", set())
            tensors = [
                *record.state.get("_parameters", {}).items(),
                *((k, v) for k, v in record.state.get("_buffers", {}).items() if k not in skip),
            ]
            for name, value in tensors:
                if value is None:
                    continue
                if not isinstance(value, Tensor):
                    raise ValueError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
                out[prefix + name] = value
        return out


def plain(value: Any) -> Any:
    """Dict subclasses (EasyDict) as dicts, recursively through lists and tuples, so kwargs compare and
    serialise like ordinary data."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    return value


class _EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access) while unpickling."""


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global off the allow-list; nothing it names has been called."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class TensorFlowPickle(pickle.UnpicklingError):
    """A TensorFlow-era StyleGAN pickle: its weights are TF variables, not torch tensors."""


def _reconstruct_persistent(meta: Any) -> PickledModule:
    if (
        not isinstance(meta, Mapping)
        or meta.get("type") != "class"
        or not isinstance(meta.get("state"), Mapping)
    ):
        raise pickle.UnpicklingError(
            "a persistent object without the class name / state layout of torch_utils.persistence"
        )
    return PickledModule(
        str(meta["class_name"]), meta["state"], persistent=True, module_src=str(meta.get("module_src", ""))
    )


def _load_storage(data: Any) -> torch.storage.TypedStorage:
    """Each tensor's storage is pickled as the bytes of a (legacy-format) ``torch.save``; NVIDIA's loader
    reads them with ``weights_only=False``. They go through torch's weights-only unpickler here."""
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("a tensor storage that is not bytes")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"a tensor storage that holds a {type(storage).__name__}")
    return storage


def _rebuild_tensor(
    storage: Any,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> Tensor:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("a tensor whose storage was not rebuilt by _load_storage")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any) -> Tensor:
    """Parameters come back as plain tensors: they are only copied into synthdb's own (frozen) modules."""
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError("a parameter that is not a tensor")
    return data


def _numpy_scalar(dtype: Any, data: Any) -> Any:
    """numpy scalars (NVIDIA stores gains such as ``1 / np.sqrt(fan_in)`` in module state)."""
    dtype = np.dtype(dtype)
    if dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_array(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """The empty array numpy's pickles fill in their BUILD step (StyleGAN3 keeps sizes as arrays)."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"a numpy array of class {subtype!r}")
    return np.ndarray(shape, dtype=np.dtype(dtype))


#: (module, name) -> what the unpickler hands back for it. Everything here builds data and calls nothing
#: named by the pickle; numpy appears under its 1.x and 2.x module names.
ALLOWED_GLOBALS: Mapping[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_array,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_array,
}
_TENSORFLOW_NETWORK = ("dnnlib.tflib.network", "Network")

#: Plain (not persistence-wrapped) torch module classes that NVIDIA networks embed; they are recorded as
#: :class:`PickledModule` data by name, never imported. EG3D's decoder is an ``nn.Sequential`` with a
#: ``Softplus``; add a network's own plain classes here when its loader learns to rebuild them.
RECORDED_CLASSES: frozenset[tuple[str, str]] = frozenset(
    {
        ("torch.nn.modules.container", "Sequential"),
        ("torch.nn.modules.container", "ModuleList"),
        ("torch.nn.modules.container", "ModuleDict"),
        ("torch.nn.modules.activation", "Softplus"),
    }
)


@cache
def _recorded_class(module: str, name: str) -> type[PickledModule]:
    """A PickledModule subclass standing in for ``module.name``: pickle creates plain objects with
    ``cls.__new__(cls)`` and fills them with ``__setstate__``, so the stand-in must be a class."""
    return type(name, (PickledModule,), {"class_name": name, "module": module, "persistent": False})


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose only globals are :data:`ALLOWED_GLOBALS` and :data:`RECORDED_CLASSES`.

    Persistent IDs are not supported (the base class refuses them), so no other hook can call code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if (module, name) in RECORDED_CLASSES:
            return _recorded_class(module, name)
        if (module, name) == _TENSORFLOW_NETWORK:
            raise TensorFlowPickle(f"{module}.{name}")
        raise RefusedGlobal(module, name)


def read_network_pickle(path: str | Path) -> Any:
    """Everything in an NVIDIA network pickle (usually a dict with ``G``, ``D``, ``G_ema``,
    ``augment_pipe``, ``training_set_kwargs``), networks as :class:`PickledModule` records."""
    path = Path(path)
    if not path.is_file():
        raise SynthdbError(
            f"network pickle {path} does not exist: check the path, or fetch the model "
            "(`synthdb models fetch NAME`)"
        )
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
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
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        RuntimeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        OverflowError,  # a length field beyond sys.maxsize (BINUNICODE8, BINBYTES8)
    ) as error:
        reason = str(error).split("\n")[0] or type(error).__name__
        raise SynthdbError(
            f"{path} is not a readable network pickle ({reason}): it is truncated, "
            "corrupt or not an NVIDIA network pickle; download it again"
        ) from None


def read_pickled_module(path: str | Path, key: str = "G_ema") -> PickledModule:
    """The network stored under ``key`` in an NVIDIA pickle (``G_ema``: the generator to sample from)."""
    data = read_network_pickle(path)
    if isinstance(data, PickledModule):
        return data
    if not isinstance(data, Mapping) or not isinstance(data.get(key), PickledModule):
        found = (
            f"keys {', '.join(map(str, data))}" if isinstance(data, Mapping) else f"a {type(data).__name__}"
        )
        raise SynthdbError(
            f"{path} holds {found}, not a network under {key!r}: pass an NVIDIA network "
            "pickle (a snapshot .pkl with G_ema)"
        )
    return data[key]
