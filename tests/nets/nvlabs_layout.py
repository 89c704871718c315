"""NVIDIA's pickle layout, mimicked by our own code: what ``torch_utils.persistence`` writes.

The generator tests (StyleGAN2, StyleGAN3, EG3D) write pickles in this layout to check that the restricted
loader rebuilds networks from them without running their embedded source. No NVIDIA code is here.

NVIDIA's EG3D (``training/triplane.py``) also pickles modules that are *not* persistence-wrapped, by their
global names: the ``OSGDecoder`` of ``training.triplane`` (whose ``nn.Sequential`` holds persistent
``FullyConnectedLayer``s) and the weightless ``ImportanceRenderer`` (holding a ``MipRayMarcher2`` and its
``plane_axes`` tensor) and ``RaySampler`` of ``training.volumetric_rendering``, registered before the
backbone. :func:`write_eg3d_official_pickle` writes that exact layout.
"""

from __future__ import annotations

import copy
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from synthdb.nets import eg3d
from synthdb.nets.pickles import PickledModule

#: NVIDIA's plain EG3D module classes -> the module that defines them
EG3D_PLAIN_CLASSES = {
    "OSGDecoder": "training.triplane",
    "ImportanceRenderer": "training.volumetric_rendering.renderer",
    "RaySampler": "training.volumetric_rendering.ray_sampler",
    "MipRayMarcher2": "training.volumetric_rendering.ray_marcher",
}

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
    modules = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
        "training": types.ModuleType("training"),
        "training.volumetric_rendering": types.ModuleType("training.volumetric_rendering"),
    }
    plain_classes = {}
    for class_name, module_name in EG3D_PLAIN_CLASSES.items():
        module = modules.setdefault(module_name, types.ModuleType(module_name))
        plain_classes[class_name] = type(class_name, (), {"__module__": module_name})
        setattr(module, class_name, plain_classes[class_name])
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(
        reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict, plain_classes=plain_classes
    )


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


# --- EG3D in NVIDIA's exact layout ------------------------------------------------------------------------


def _plain(ns: types.SimpleNamespace, class_name: str, state: dict[str, Any]) -> Any:
    """An instance of NVIDIA's plain class ``class_name`` (a stand-in with its global name) holding
    ``state`` as its ``__dict__``: pickled as NEWOBJ of the class, then BUILD, as torch pickles modules."""
    cls = ns.plain_classes[class_name]
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _module_state(ns: types.SimpleNamespace, module: nn.Module, names: dict[str, str], prefix: str) -> dict:
    state: dict[str, Any] = {k: np.float64(v) if isinstance(v, float) else v for k, v in vars(module).items()}
    state["_modules"] = OrderedDict(
        (name, None if child is None else _nvidia(ns, child, names, f"{prefix}{name}."))
        for name, child in module._modules.items()
    )
    return state


def _nvidia(ns: types.SimpleNamespace, module: nn.Module, names: dict[str, str], prefix: str = "") -> Any:
    """``module`` (ours) as NVIDIA's EG3D pickles it: torch containers as themselves, NVIDIA's plain classes
    (``names`` gives official class names by module path) as plain objects, the rest persistent."""
    class_name = names.get(prefix.rstrip("."), type(module).__name__)
    if type(module).__module__.startswith("torch."):
        clone = copy.copy(module)
        clone.__dict__["_modules"] = _module_state(ns, module, names, prefix)["_modules"]
        return clone
    state = _module_state(ns, module, names, prefix)
    if class_name in EG3D_PLAIN_CLASSES:
        return _plain(ns, class_name, state)
    state["_init_args"], state["_init_kwargs"] = (), ns.EasyDict()
    meta = {
        "type": "class",
        "version": 6,
        "module_src": "# training/triplane.py\n",
        "class_name": class_name,
        "state": state,
    }
    return _Persistent(ns.reconstruct, meta)


def write_eg3d_official_pickle(
    path: Path, ns: types.SimpleNamespace, net: eg3d.EG3DGenerator, init_kwargs: dict
) -> Path:
    """A training snapshot holding ``net`` exactly as NVIDIA's ``TriPlaneGenerator``: persistent root with
    the renderer and ray sampler (plain, weightless) registered first, then backbone, superresolution (its
    official class name, from ``rendering_kwargs``) and the plain ``OSGDecoder``."""
    sr_class = str(net.rendering_kwargs["superresolution_module"]).rsplit(".", 1)[-1]
    names = {"": "TriPlaneGenerator", "backbone": "Generator", "superresolution": sr_class}
    root = _nvidia(ns, net, names)
    empty = vars(nn.Module())
    marcher = _plain(ns, "MipRayMarcher2", dict(empty))
    axes = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                         [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)  # fmt: skip
    modules = OrderedDict(ray_marcher=marcher)
    renderer = _plain(ns, "ImportanceRenderer", {**empty, "_modules": modules, "plane_axes": axes})
    attributes = ("ray_origins_h", "ray_directions", "depths", "image_coords", "rendering_options")
    sampler = _plain(ns, "RaySampler", {**empty, **dict.fromkeys(attributes)})
    state = root.meta["state"]
    state["_modules"] = OrderedDict(renderer=renderer, ray_sampler=sampler, **state["_modules"])
    state["_last_planes"] = None

    def easy(value: Any) -> Any:
        return ns.EasyDict({k: easy(v) for k, v in value.items()}) if isinstance(value, dict) else value

    state["_init_kwargs"] = easy(init_kwargs)
    path.write_bytes(pickle.dumps({"G": root, "G_ema": root, "D": None, "augment_pipe": None}, protocol=4))
    return path
