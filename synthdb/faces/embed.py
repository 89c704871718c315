"""``Embedder``: one face-recognition network behind one interface, differentiable and batched.

Every embedder takes aligned RGB crops as float tensors (N, 3, S, S) with pixel values in [0, 255],
cropped with the card's preset (``dlib150`` for dlib-resnet, ``arcface`` for AdaFace, ...), and
returns raw (not normalised) identity vectors (N, D). The card's pixel scaling is applied here, so
callers never need to know whether a network wants [-1, 1], BGR or dlib's mean subtraction.
Gradients flow to the input and never into the (frozen) weights: the generation algorithms rely on
that to push latents through G, the crop and this network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from synthdb.angles import angle
from synthdb.nets.cards import ModelCard


@dataclass
class Embedder:
    """A card's network with its weights on ``device``; :func:`synthdb.zoo.embedder` builds one by name.
    ``distance`` is the angle in radians (:func:`synthdb.angles.angle`)."""

    card: ModelCard
    net: nn.Module
    device: torch.device

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def dims(self) -> int:
        return int(self.card.output_dims)

    @property
    def preset(self) -> str:
        return self.card.preset

    @property
    def size(self) -> int:
        return self.card.image_size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Identity vectors (N, D) of aligned crops (N, 3, S, S), RGB in [0, 255]; differentiable."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (self.size, self.size):
            raise ValueError(
                f"{self.name} expects (N, 3, {self.size}, {self.size}) crops ({self.preset} "
                f"preset), got {tuple(images.shape)}"
            )
        x = images.to(self.device, torch.float32)
        x = (x - float(self.card.pixel_mean)) / float(self.card.pixel_std)
        return self.net(x)

    def embed_numpy(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Vectors (N, D) float32 of uint8 crops (N, S, S, 3), without gradients, in batches."""
        out = []
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size]))
                out.append(self.embed(chunk.permute(0, 3, 1, 2).float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dims), np.float32)

    distance = staticmethod(angle)
