"""rosinality/stylegan2-pytorch checkpoints, translated into synthdb's StyleGAN2 (NVIDIA's layout).

rosinality's ``Generator`` computes config F StyleGAN2 exactly as NVIDIA's does (pixel norm and an
equalised-lr mapping with lr multiplier 0.01, demodulated convolutions, transposed-convolution upsampling
with the [1, 3, 3, 1] blur, scalar-weighted noise, biased leaky ReLU with gain sqrt(2), ToRGB without
demodulation and upsampled skips, no clamping), so a checkpoint is only a renaming and reshaping away from
:class:`~synthdb.nets.stylegan2.StyleGAN2Generator`. Its files are plain ``torch.save`` dicts: ``g_ema`` (the
generator's state) and, from ``convert_weight.py``, ``latent_avg`` (NVIDIA's ``dlatent_avg``); ``train.py``
checkpoints add ``g``, ``d``, optimiser states and ``args`` (an ``argparse.Namespace``) but no
``latent_avg``.

Nothing records the constructor arguments, so they are read off the tensors: ``style_dim`` and ``n_mlp``
from the mapping, the resolution from the number of ToRGB layers, the widths from the convolutions.
``lr_mlp`` is not recoverable and is taken to be the default 0.01 (every public checkpoint uses it).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from synthdb.errors import SynthdbError
from synthdb.nets import limits
from synthdb.nets.stylegan2 import StyleGAN2Generator, make_filter

#: keys only rosinality's StyleGAN2 generator state has, all of which a checkpoint must hold
MARKERS = ("input.input", "style.1.weight", "to_rgb1.conv.weight")
#: what a ``train.py`` checkpoint pickles besides tensors: its command-line arguments, a plain attribute bag
SAFE_GLOBALS = (argparse.Namespace,)
#: z drawn for ``w_avg`` when a checkpoint has no ``latent_avg``: fixed, so the estimate is reproducible
W_AVG_SAMPLES = 4096
W_AVG_SEED = 20240515
_FIX = "pass a checkpoint written by rosinality/stylegan2-pytorch's train.py or convert_weight.py"


def is_checkpoint(payload: Any) -> bool:
    """A rosinality checkpoint (or something claiming to be one, which :func:`translate` then judges):
    a dict with a ``g_ema`` entry and no synthdb ``format``."""
    return isinstance(payload, dict) and "g_ema" in payload and "format" not in payload


def translate(payload: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Tensor], bool]:
    """``(kwargs, state, has_w_avg)``: constructor arguments and a complete state dict for
    :class:`StyleGAN2Generator`. Without a ``latent_avg`` the state's ``w_avg`` is zeros and ``has_w_avg``
    False: the caller estimates it on the built network (:func:`estimate_w_avg`)."""
    g = payload["g_ema"]
    if not isinstance(g, Mapping) or not all(isinstance(v, Tensor) for v in g.values()):
        raise SynthdbError(f"{path}: its g_ema is not a state dict of tensors: {_FIX}")
    if missing := [k for k in MARKERS if k not in g]:
        raise SynthdbError(
            f"{path}: its g_ema lacks {', '.join(missing)}, so it is not rosinality's StyleGAN2 generator "
            f"(SWAGAN and other models are not supported): {_FIX}"
        )
    src = _Source(g, path)
    w_dim = src.get("style.1.weight", ndim=2).shape[1]
    n_mlp = _count(g, r"style\.(\d+)\.weight")
    blocks = _count(g, r"to_rgbs\.(\d+)\.conv\.weight") + 1
    if blocks > limits.MAX_RESOLUTION.bit_length() - 2:  # before a list of sizes up to 2 ** blocks is made
        raise SynthdbError(
            f"{path}: g_ema has {blocks} ToRGB layers, more than a {limits.MAX_RESOLUTION} px generator: "
            f"the file is damaged or crafted: {_FIX}"
        )
    resolutions = [2 ** (i + 2) for i in range(blocks)]
    channels = {4: src.get("input.input", ndim=4).shape[1]}
    for idx, res in enumerate(resolutions[1:]):
        channels[res] = src.get(f"convs.{2 * idx}.conv.weight", ndim=5).shape[1]
    base, cmax = _channel_schedule(channels, path)

    state: dict[str, Tensor] = {}
    for i in range(n_mlp):
        state[f"mapping.fc{i}.weight"] = src.get(f"style.{i + 1}.weight", (w_dim, w_dim))
        state[f"mapping.fc{i}.bias"] = src.get(f"style.{i + 1}.bias", (w_dim,))
    state["mapping.w_avg"] = _w_avg(payload.get("latent_avg"), w_dim, path)
    state["synthesis.b4.const"] = src.get("input.input", (1, channels[4], 4, 4))[0]
    layer = 0  # rosinality numbers its convolutions, and their noise buffers, across blocks
    for idx, res in enumerate(resolutions):
        block, c_out = f"synthesis.b{res}", channels[res]
        names = {"conv1": "conv1"} if idx == 0 else {"conv0": f"convs.{layer - 1}", "conv1": f"convs.{layer}"}
        for ours, theirs in names.items():
            c_in = channels[res // 2] if ours == "conv0" else c_out
            if ours == "conv0":
                src.kernel(f"{theirs}.conv.blur.kernel")
            prefix = f"{block}.{ours}"
            state[f"{prefix}.resample_filter"] = make_filter()
            state[f"{prefix}.affine.weight"] = src.get(f"{theirs}.conv.modulation.weight", (c_in, w_dim))
            state[f"{prefix}.affine.bias"] = src.get(f"{theirs}.conv.modulation.bias", (c_in,))
            state[f"{prefix}.weight"] = src.get(f"{theirs}.conv.weight", (1, c_out, c_in, 3, 3))[0]
            state[f"{prefix}.noise_const"] = src.get(f"noises.noise_{layer}", (1, 1, res, res))[0, 0]
            state[f"{prefix}.noise_strength"] = src.get(f"{theirs}.noise.weight", (1,)).reshape(())
            state[f"{prefix}.bias"] = src.get(f"{theirs}.activate.bias", (c_out,))
            layer += 1
        rgb = "to_rgb1" if idx == 0 else f"to_rgbs.{idx - 1}"
        if idx > 0:
            src.kernel(f"{rgb}.upsample.kernel")
        state[f"{block}.resample_filter"] = make_filter()
        state[f"{block}.torgb.affine.weight"] = src.get(f"{rgb}.conv.modulation.weight", (c_out, w_dim))
        state[f"{block}.torgb.affine.bias"] = src.get(f"{rgb}.conv.modulation.bias", (c_out,))
        state[f"{block}.torgb.weight"] = src.get(f"{rgb}.conv.weight", (1, 3, c_out, 1, 1))[0]
        state[f"{block}.torgb.bias"] = src.get(f"{rgb}.bias", (1, 3, 1, 1)).reshape(3)
    if unused := sorted(set(g) - src.used):
        raise SynthdbError(
            f"{path}: g_ema holds {len(unused)} tensors a {resolutions[-1]} px generator does not have "
            f"({', '.join(unused[:3])}): the file is damaged or from a modified model: {_FIX}"
        )
    kwargs = {
        "z_dim": w_dim,
        "c_dim": 0,
        "w_dim": w_dim,
        "img_resolution": resolutions[-1],
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": n_mlp},
        "channel_base": base,
        "channel_max": cmax,
        "architecture": "skip",
        "conv_clamp": None,
    }
    return kwargs, state, payload.get("latent_avg") is not None


class _Source:
    """Reads a rosinality state, checking shapes and recording what was read (the rest is unexpected)."""

    def __init__(self, g: Mapping[str, Tensor], path: Path) -> None:
        self.g, self.path, self.used = g, path, set[str]()

    def get(self, key: str, shape: tuple[int, ...] | None = None, ndim: int | None = None) -> Tensor:
        """``g_ema[key]``, which must have ``shape``, or at least ``ndim`` dimensions."""
        if key not in self.g:
            raise SynthdbError(f"{self.path}: g_ema has no {key}; the file is damaged or truncated: {_FIX}")
        tensor = self.g[key]
        if (shape is not None and tuple(tensor.shape) != shape) or (ndim is not None and tensor.ndim != ndim):
            expected = shape or f"{ndim} dimensions"
            raise SynthdbError(
                f"{self.path}: g_ema's {key} has shape {tuple(tensor.shape)}, expected {expected}; the file "
                f"is damaged or from a modified model: {_FIX}"
            )
        self.used.add(key)
        return tensor

    def kernel(self, key: str) -> None:
        """rosinality stores its blur as the normalised outer product times 4 (the upsampling gain);
        synthdb's StyleGAN2 has the [1, 3, 3, 1] one built in."""
        kernel = self.get(key)
        expected = make_filter() * 4
        if kernel.device.type != "meta" and (
            kernel.shape != expected.shape or not torch.allclose(kernel.float(), expected)
        ):
            raise SynthdbError(
                f"{self.path}: g_ema's {key} is not the [1, 3, 3, 1] blur that synthdb's StyleGAN2 uses "
                f"(the model was built with another blur_kernel): {_FIX}"
            )


def _count(g: Mapping[str, Tensor], pattern: str) -> int:
    """How many numbered modules match ``pattern`` (its group is the index)."""
    return len({m.group(1) for key in g if (m := re.fullmatch(pattern, key))})


def _channel_schedule(channels: Mapping[int, int], path: Path) -> tuple[int, int]:
    """``(channel_base, channel_max)`` with ``min(channel_base // res, channel_max)`` equal to every
    block's width: rosinality's table (512 up to 32 px, then halving, times ``channel_multiplier``) is such
    a schedule, and so is any narrowed one that halves with each resolution."""
    cmax = max(channels.values())
    base = max(c * res for res, c in channels.items())
    if any(min(base // res, cmax) != c for res, c in channels.items()):
        widths = ", ".join(f"{res}: {c}" for res, c in sorted(channels.items()))
        raise SynthdbError(
            f"{path}: its channel widths ({widths}) do not follow StyleGAN2's schedule (constant, then "
            f"halving with each resolution), which synthdb's StyleGAN2 needs: {_FIX}"
        )
    return base, cmax


def _w_avg(latent_avg: Any, w_dim: int, path: Path) -> Tensor:
    if latent_avg is None:
        return torch.zeros(w_dim)
    if not isinstance(latent_avg, Tensor) or latent_avg.numel() != w_dim:
        shape = tuple(latent_avg.shape) if isinstance(latent_avg, Tensor) else type(latent_avg).__name__
        raise SynthdbError(
            f"{path}: its latent_avg is {shape}, not a vector of {w_dim} (the mapping's width): the file is "
            f"damaged; delete the latent_avg entry to have synthdb estimate w_avg, or {_FIX}"
        )
    return latent_avg.reshape(w_dim)


@torch.no_grad()
def estimate_w_avg(network: StyleGAN2Generator) -> None:
    """Set ``w_avg`` to the mean w of :data:`W_AVG_SAMPLES` z from a fixed seed (the reference estimated
    it lazily from fresh random z, so its truncated images changed from run to run)."""
    z = torch.randn(W_AVG_SAMPLES, network.z_dim, generator=torch.Generator().manual_seed(W_AVG_SEED))
    w = network.mapping(z.to(network.mapping.w_avg.device), None)[:, 0]
    network.mapping.w_avg.copy_(w.mean(dim=0))
