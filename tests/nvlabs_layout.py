"""NVIDIA's pickle layout, mimicked by our own code: what ``torch_utils.persistence`` writes.

The generator tests (StyleGAN2, StyleGAN3, EG3D) write pickles in this layout to check that the restricted
loader rebuilds networks from them without running their embedded source. No NVIDIA code is here.
"""

from __future__ import annotations

import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

from synthdb.nets.pickles import PickledModule

# --- stand-ins for NVIDIA's modules --------------------------------------------------------------------


def install_stand_ins(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-ins for ``torch_utils.persistence`` and ``dnnlib.util`` so that pickle writes their globals by
    name, exactly as NVIDIA's files name them. Their reconstruct function is never what our loader calls."""
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta: dict) -> None:
        raise AssertionError("the stand-in reconstruct function must never run")

    class EasyDict(dict):
        pass

    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = util.__name__, "EasyDict"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util.EasyDict = EasyDict
    for name, module in {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict)


class _Persistent:
    """Pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, like NVIDIA's decorator."""

    def __init__(self, reconstruct: Any, meta: dict) -> None:
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self) -> tuple:
        return self.reconstruct, (self.meta,)


def persistent(
    ns: types.SimpleNamespace,
    module: nn.Module,
    class_name: str | None = None,
    init_kwargs: dict | None = None,
    module_src: str = "# networks_stylegan2.py\n",
) -> _Persistent:
    """``module`` as NVIDIA would pickle it: its ``__dict__`` (floats as numpy scalars, as ``np.sqrt`` gives
    them), children persistent in turn, the init kwargs as nested EasyDicts, and the module source."""
    state: dict[str, Any] = {k: np.float64(v) if isinstance(v, float) else v for k, v in vars(module).items()}
    state["_modules"] = OrderedDict(
        (
            name,
            child
            if not isinstance(child, nn.Module) or type(child).__module__.startswith("torch.")
            else persistent(ns, child, module_src=module_src),
        )
        for name, child in module._modules.items()
    )

    def easy(value: Any) -> Any:
        return ns.EasyDict({k: easy(v) for k, v in value.items()}) if isinstance(value, dict) else value

    state["_init_args"] = ()
    state["_init_kwargs"] = easy(init_kwargs or {})
    meta = {
        "type": "class",
        "version": 6,
        "module_src": module_src,
        "class_name": class_name or type(module).__name__,
        "state": state,
    }
    return _Persistent(ns.reconstruct, meta)


def write_nvlabs_pickle(
    path: Path,
    ns: types.SimpleNamespace,
    g_ema: nn.Module,
    init_kwargs: dict,
    module_src: str = "# networks_stylegan2.py\n",
    **extra: Any,
) -> Path:
    """A snapshot like NVIDIA's training loop writes: G, D, G_ema, augment_pipe, training_set_kwargs."""
    root = persistent(ns, g_ema, "Generator", init_kwargs, module_src)
    critic = persistent(ns, nn.Linear(2, 1), "Discriminator", {"c_dim": 0}, module_src)
    data = {
        "G": root,
        "D": critic,
        "G_ema": root,
        "augment_pipe": None,
        "training_set_kwargs": ns.EasyDict(resolution=g_ema.img_resolution),
        **extra,
    }
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


def official_network(golden: dict, network_class: type[nn.Module], from_pickle: Any) -> nn.Module:
    """Our ``network_class`` holding a golden file's official state dict, built from its recorded init
    kwargs through the loader's own translation ``from_pickle`` (strict: every name and shape must match)."""
    record = PickledModule("Generator", {"_init_kwargs": golden["init_kwargs"]}, persistent=True)
    net = network_class(**from_pickle(record))
    net.load_state_dict(golden["state_dict"], strict=True)
    return net
