"""DCGAN generators (the ConvTranspose2d + BatchNorm stack of PyTorch's DCGAN tutorial) behind the StyleGAN
surface that :class:`~synthdb.nets.generator.Generator` drives.

The embedded face generator ``dcgan-digiface`` is such a network: z in R^100 -> 64x64 RGB in [-1, 1],
trained on DigiFace-1M, shipped as ``gan_face_generate/weights.tar`` (a ``torch.save`` zip holding
``{"netG_state_dict": ...}``). Its parameter names (``main.0.weight``, ``main.1.running_mean``, ...) are the
tutorial's ``nn.Sequential`` indices, so this module keeps that layout and the file loads as it is.

A DCGAN has no mapping network. To share every algorithm written for StyleGAN, w *is* z: ``mapping``
returns ``psi * z`` (truncation pulls towards the origin, the mean of the Gaussian prior, so ``w_avg`` is
zero), there is one w per image (``num_ws = 1``) and no synthesis noise. BatchNorm runs in eval mode with the
stored running statistics, so an image depends on its own latent only, never on the rest of its batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

#: Where ``torch.save`` checkpoints of the tutorial keep the generator.
CHECKPOINT_KEY = "netG_state_dict"
_CONV = re.compile(r"main\.(\d+)\.weight")


class DCGANMapping(nn.Module):
    """z -> w = psi * z, broadcast to ``num_ws`` rows; ``w_avg`` (zero, the prior's mean) is the centre
    truncation pulls to. Tutorial checkpoints do not hold it: :func:`translate` adds it."""

    def __init__(self, z_dim: int, num_ws: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.num_ws = num_ws
        self.register_buffer("w_avg", torch.zeros(z_dim))

    def forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        w = self.w_avg + truncation_psi * (z - self.w_avg)
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)


class DCGANGenerator(nn.Module):
    """The tutorial's generator for ``img_resolution = 4 * 2**(num_layers - 1)``: ``num_layers``
    ConvTranspose2d (kernel 4, no bias), each but the last followed by BatchNorm2d and ReLU, then Tanh.
    Channels halve from ``ngf * 2**(num_layers - 2)`` down to ``ngf``."""

    def __init__(self, z_dim: int = 100, ngf: int = 64, img_channels: int = 3, num_layers: int = 5) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"a DCGAN generator needs at least 2 layers, got {num_layers}")
        self.z_dim, self.w_dim, self.c_dim, self.num_ws = z_dim, z_dim, 0, 1
        self.img_channels = img_channels
        self.img_resolution = 4 * 2 ** (num_layers - 1)
        widths = [ngf * 2 ** (num_layers - 2 - i) for i in range(num_layers - 1)]
        layers: list[nn.Module] = []
        previous = z_dim
        for i, width in enumerate(widths):
            stride, padding = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(previous, width, 4, stride, padding, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(True),
            ]
            previous = width
        layers += [nn.ConvTranspose2d(previous, img_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.mapping = DCGANMapping(z_dim, self.num_ws)

    def synthesis(self, ws: Tensor, noise_mode: str = "const") -> Tensor:
        """w+ (N, 1, z_dim) -> images (N, C, R, R) in [-1, 1]; ``noise_mode`` is accepted for the shared
        surface and ignored (a DCGAN has no noise inputs)."""
        return self.main(ws[:, 0, :, None, None])

    def forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi))


def is_checkpoint(payload: Any) -> bool:
    """A tutorial-style checkpoint: a dict whose ``netG_state_dict`` is a state dict of ``main.*`` tensors."""
    state = payload.get(CHECKPOINT_KEY) if isinstance(payload, Mapping) else None
    return isinstance(state, Mapping) and bool(state) and all(
        isinstance(k, str) and k.startswith("main.") and isinstance(v, Tensor) for k, v in state.items()
    )


def kwargs_from_state(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Constructor arguments read off the tensor shapes: the first ConvTranspose2d weight is (z_dim,
    ngf * 2**(L-2), 4, 4), the last (ngf, img_channels, 4, 4), and every layer has one weight."""
    convs = sorted(int(m.group(1)) for k in state if (m := _CONV.fullmatch(k)) and state[k].ndim == 4)
    if len(convs) < 2:
        raise ValueError("fewer than two ConvTranspose2d weights (main.<i>.weight of rank 4)")
    first, last = state[f"main.{convs[0]}.weight"], state[f"main.{convs[-1]}.weight"]
    return {
        "z_dim": int(first.shape[0]),
        "ngf": int(last.shape[0]),
        "img_channels": int(last.shape[1]),
        "num_layers": len(convs),
    }


def translate(payload: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, Tensor]]:
    """(constructor arguments, state dict) of a tutorial checkpoint, with the zero ``mapping.w_avg`` added;
    the caller checks that they fit."""
    state = dict(payload[CHECKPOINT_KEY])
    kwargs = kwargs_from_state(state)
    return kwargs, {**state, "mapping.w_avg": torch.zeros(kwargs["z_dim"])}

