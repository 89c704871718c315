"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a differentiable module.

It reproduces ``dlib.face_recognition_model_v1.compute_face_descriptor`` on aligned 150x150 chips to float32
rounding, runs batched on torch's BLAS (dlib-bin runs one image at a time on one core), and lets gradients
flow back to the pixels, which dlib cannot do. Weights are read from the file that ``face-recognition-models``
installs, so nothing is downloaded or converted ahead of time.

Input convention: float tensor (N, 3, 150, 150), RGB (not BGR), values in [0, 255] as in a uint8 image,
aligned the way ``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` aligns them. The output is
dlib's 128-d descriptor, not L2-normalised: compare with Euclidean distance against
:attr:`DlibResNet.dist_thresh` (0.6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthdb.errors import SynthdbError
from synthdb.nets.dlib_dat import BLOCKS, CHIP_SIZE, Affine, Conv, DlibResNetWeights, read_dlib_dat

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MODEL_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"


class _ConvAffine(nn.Module):
    """dlib's ``con`` followed by its ``affine`` layer, folded into one convolution at load time.

    ``affine(conv(x)) = conv(x; W * gamma, b * gamma + beta)``: one pass over the activations instead of
    three (conv, multiply, add), forward and backward. The folded weight is kept channels-last, the layout
    the activations use (see :meth:`DlibResNet.forward`), so oneDNN does not reorder it on every call.
    Folding rounds the products in another order than dlib does: descriptors move by about 1e-7, far
    inside the parity tolerance with dlib itself.
    """

    def __init__(self, conv: Conv, affine: Affine) -> None:
        super().__init__()
        gamma = torch.from_numpy(affine.gamma).reshape(-1)
        beta = torch.from_numpy(affine.beta).reshape(-1)
        weight = torch.from_numpy(conv.weight) * gamma.view(-1, 1, 1, 1)
        self.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last))
        self.bias = nn.Parameter(torch.from_numpy(conv.bias) * gamma + beta)
        self.stride, self.padding = conv.stride, conv.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the result takes the larger size of each dim, and missing entries count as zero.

    In the down blocks the block output has more channels than the skip, and in the last two it is also
    smaller (3x3 vs 4x4, 1x1 vs 2x2): it sits in the top-left corner. Cropping or broadcasting breaks parity.
    """
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(sa, sb) for sa, sb in zip(a.shape[1:], b.shape[1:], strict=True))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _Block(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(skip (+) affine(conv(relu(affine(conv(x)))))).

    The skip is ``x`` itself, or a 2x2/2 average pool of it when the first conv has stride 2.
    """

    def __init__(self, convs: list[Conv], affines: list[Affine]) -> None:
        super().__init__()
        self.conv1, self.conv2 = _ConvAffine(convs[0], affines[0]), _ConvAffine(convs[1], affines[1])
        self.down = convs[0].stride == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: a convolution's backward needs its input, never its output, and a sum's neither
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_zero_padded(skip, y), inplace=True)


class DlibResNet(nn.Module):
    """128-d face descriptor of (N, 3, 150, 150) RGB chips in [0, 255]; see the module docstring.

    Build it with :func:`load_dlib_resnet`. The mean subtraction and /256 scaling dlib applies to the pixels
    happen inside :meth:`forward`, so gradients with respect to the chip pixels are exact.
    """

    def __init__(self, weights: DlibResNetWeights) -> None:
        super().__init__()
        self.register_buffer("channel_means", torch.from_numpy(weights.channel_means).view(1, 3, 1, 1))
        self.dist_thresh = weights.dist_thresh
        self.conv0 = _ConvAffine(weights.convs[0], weights.affines[0])
        self.blocks = nn.ModuleList(
            _Block(weights.convs[i:i + 2], weights.affines[i:i + 2]) for i in range(1, 2 * len(BLOCKS), 2)
        )
        self.fc = nn.Linear(weights.fc_weight.shape[0], weights.fc_weight.shape[1], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(weights.fc_weight).T)  # dlib stores (in, out) for x @ W
        self.requires_grad_(False)
        self.eval()

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.shape[1:] != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected (N, 3, {CHIP_SIZE}, {CHIP_SIZE}) RGB chips, got {tuple(rgb.shape)}")
        # channels-last: oneDNN's native layout, no reorder around each convolution, and a vectorised max
        # pool (batch of 32, one thread: the pool 98 -> 8 ms; with the folded affines, forward + backward
        # 1.2x faster, 1.3x for single chips)
        x = ((rgb - self.channel_means) / 256.0).contiguous(memory_format=torch.channels_last)  # 256: dlib's
        x = F.max_pool2d(F.relu(self.conv0(x), inplace=True), 3, 2)
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(dim=(2, 3)))

    def describe_chips(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors (N, 128) float32 of uint8 RGB chips (150, 150, 3) or (N, 150, 150, 3); no gradients."""
        with torch.no_grad():
            return self(chips_to_tensor(chips).to(self.channel_means.device)).cpu().numpy()


def chips_to_tensor(chips: np.ndarray) -> torch.Tensor:
    """uint8 RGB chips, one (H, W, 3) or a stack (N, H, W, 3), to DlibResNet's float (N, 3, H, W) input."""
    chips = np.asarray(chips)
    if chips.dtype != np.uint8 or chips.shape[-1] != 3 or chips.ndim not in (3, 4):
        raise ValueError(f"expected uint8 (H, W, 3) or (N, H, W, 3) chips, got {chips.dtype} {chips.shape}")
    batch = chips[None] if chips.ndim == 3 else chips
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).float()


def load_dlib_resnet(path: str | Path) -> DlibResNet:
    """Parse the .dat (:mod:`synthdb.zoo` finds the installed one), check its sha256, build a frozen
    eval-mode net."""
    weights = read_dlib_dat(path)
    if weights.sha256 != MODEL_SHA256:
        raise SynthdbError(f"{weights.path} has sha256 {weights.sha256}, expected {MODEL_SHA256} "
                           f"for {MODEL_FILE}: reinstall face-recognition-models")
    return DlibResNet(weights)
