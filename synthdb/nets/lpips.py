"""LPIPS v0.1 on VGG16 (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", CVPR 2018), built from two files the user supplies.

What fixes the metric (facts of the ``lpips`` package, BSD-2-Clause): images in [-1, 1] are shifted by
``SHIFT`` and divided by ``SCALE`` per RGB channel; VGG16's convolutional trunk (torchvision's
``vgg16().features``) is read after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3; every feature
vector is divided by its L2 norm over channels (plus 1e-10); per layer a learned 1x1 linear head with
non-negative weights sums the squared differences of the normalised features channel by channel, the
result is averaged over positions, and the distance is the sum over the five layers.

The heads are folded into the features here: each normalised feature is multiplied by the square root of
its channel's head weight, so the distance is a plain squared difference (summed over channels, averaged
over positions, summed over layers; :func:`distance`). That is the form of NVIDIA's ``vgg16.pkl`` called
with ``return_lpips=True`` (whose features also carry the 1/positions factor, so a plain squared L2 of
them is the LPIPS distance), and it lets a projection compute the target's features once.

Weights: the trunk from torchvision's ImageNet state dict (card ``vgg16-imagenet``; its ``classifier.*``
is not read) and the heads from the lpips release's ``weights/v0.1/vgg.pth`` (card ``lpips-vgg-v0.1``,
keys ``lin{0..4}.model.1.weight`` of shape (1, C, 1, 1)).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from synthdb.errors import SynthdbError
from synthdb.nets.weights import load_state_dict, load_weights

#: VGG16's convolution widths, "M" a 2x2 max-pool (configuration D of Simonyan & Zisserman), up to conv5_3
VGG16_LAYERS: tuple[int | str, ...] = (
    *(64, 64, "M", 128, 128, "M", 256, 256, 256, "M"),
    *(512, 512, 512, "M", 512, 512, 512),
)
#: indices in ``features`` of the ReLUs LPIPS reads: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
TAPS = (3, 8, 15, 22, 29)
CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
HEAD_KEYS = tuple(f"lin{i}.model.1.weight" for i in range(len(TAPS)))
EPS = 1e-10


class VGG16Trunk(nn.Module):
    """torchvision's VGG16 ``features`` up to relu5_3, with the same module indices (so the same state-dict
    keys); the last max-pool, which has no weights, is left out: LPIPS never reads past relu5_3."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in VGG16_LAYERS:
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(width)
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The activations after each tapped ReLU."""
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                taps.append(x)
        return taps


class LPIPS(nn.Module):
    """LPIPS VGG16 features: ``distance(net(a), net(b))`` is the LPIPS v0.1 distance of images a and b."""

    def __init__(self) -> None:
        super().__init__()
        self.vgg = VGG16Trunk()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        for i, channels in enumerate(CHANNELS):
            self.register_buffer(f"head{i}", torch.zeros(channels))

    @classmethod
    def from_files(
        cls, vgg: str | Path, heads: str | Path, heads_sha256: str = "", device: str | torch.device = "cpu"
    ) -> LPIPS:
        """The network with its trunk from ``vgg`` and its heads from ``heads``: frozen, in eval mode."""
        net = cls()
        load_vgg16(vgg, into=net.vgg)
        for i, weights in enumerate(load_heads(heads, heads_sha256)):
            getattr(net, f"head{i}").copy_(weights)
        return net.requires_grad_(False).eval().to(device)

    def forward(self, images: Tensor) -> list[Tensor]:
        """Per tapped layer (N, C, h, w): the unit-normalised features of images (N, 3, H, W) in [-1, 1],
        scaled by the square roots of their head weights; differentiable."""
        taps = self.vgg((images - self.shift) / self.scale)
        heads = [getattr(self, f"head{i}").sqrt().view(1, -1, 1, 1) for i in range(len(taps))]
        return [
            f / (f.square().sum(1, keepdim=True).sqrt() + EPS) * h for f, h in zip(taps, heads, strict=True)
        ]


def distance(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Per-image distance (N,) of two feature lists: squared differences summed over channels, averaged
    over positions, summed over layers."""
    return sum((x - y).square().sum(1).mean((1, 2)) for x, y in zip(a, b, strict=True))


def load_vgg16(
    path: str | Path, sha256: str = "", model: str = "vgg16-imagenet", into: VGG16Trunk | None = None
) -> VGG16Trunk:
    """VGG16's trunk from a torchvision state dict (``features.N.weight/bias``; ``classifier.*`` ignored)."""
    return load_weights(
        into or VGG16Trunk(),
        path,
        sha256 or None,
        architecture="VGG16 (torchvision vgg16 features)",
        drop_prefixes=("classifier.",),
        model=model,
    )


def load_heads(path: str | Path, sha256: str = "", model: str = "lpips-vgg-v0.1") -> list[Tensor]:
    """The five LPIPS VGG heads' weights, (C,) each, from the lpips release's ``vgg.pth``."""
    state = load_state_dict(
        path, HEAD_KEYS, sha256 or None, architecture="the LPIPS VGG linear heads", model=model
    )
    heads = []
    for key, channels in zip(HEAD_KEYS, CHANNELS, strict=True):
        weight = state[key]
        if weight.shape != (1, channels, 1, 1):
            raise SynthdbError(
                f"{path}: {key} has shape {tuple(weight.shape)}, not (1, {channels}, 1, 1): these are not "
                f"the VGG heads (lpips also ships alex.pth and squeeze.pth): use weights/v0.1/vgg.pth"
            )
        if (weight < 0).any():
            raise SynthdbError(
                f"{path}: {key} has negative weights, which LPIPS heads never have (a distance needs them "
                "non-negative): use the lpips release's weights/v0.1/vgg.pth"
            )
        heads.append(weight.flatten().float())
    return heads
