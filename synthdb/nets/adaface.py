"""AdaFace IR backbones with the parameter names of the official ``mk-minchul/AdaFace`` ``net.py``.

Keys: ``input_layer.{0 conv, 1 bn, 2 prelu}``; ``body.<i>`` flattened over all stages, each unit with
``res_layer.{0 bn, 1 conv, 2 bn, 3 prelu, 4 conv(stride), 5 bn}`` and, when the width changes,
``shortcut_layer.{0 conv1x1, 1 bn}`` (otherwise the shortcut is a parameterless ``MaxPool2d(1, stride)``);
``output_layer.{0 bn2d, 1 dropout, 2 flatten, 3 linear, 4 bn1d without affine}``. Upstream's ``ir_101`` is its
``Backbone(num_layers=100)``. Released checkpoints are PyTorch Lightning files,
``{'state_dict': {'model.<key>': ..., 'head.kernel': ...}}``; :mod:`synthdb.nets.weights` unwraps them.

AdaFace was trained on BGR images (cv2 order): ``(pixel / 255 - 0.5) / 0.5``. Every synthdb embedder takes
RGB, so :meth:`AdaFaceIR.forward` flips the channels itself. Upstream returns ``(feature / norm, norm)``;
we return the unit-length feature only.
"""

from __future__ import annotations

import torch
from torch import nn

#: Units per stage for each depth name (upstream ``get_blocks``; ``101`` uses its 100-layer table).
UNITS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    50: (3, 4, 14, 3),
    101: (3, 13, 30, 3),
}
WIDTHS = (64, 128, 256, 512)
INPUT_SIZE = 112
EMBEDDING_DIMS = 512


class BasicBlockIR(nn.Module):
    """Pre-activation IR unit: BN-conv-BN-PReLU-conv(stride)-BN plus a (possibly projected) shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer: nn.Module
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # subsampling, as upstream
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.BatchNorm2d(depth),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class AdaFaceIR(nn.Module):
    """Unit-length 512-d embedding of (N, 3, 112, 112) RGB faces in [-1, 1]; see the module docstring."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        if depth not in UNITS:
            raise ValueError(f"AdaFace IR depth must be one of {sorted(UNITS)}, got {depth}")
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.PReLU(WIDTHS[0]))
        units: list[nn.Module] = []
        in_channel = WIDTHS[0]
        for width, count in zip(WIDTHS, UNITS[depth], strict=True):
            units.append(BasicBlockIR(in_channel, width, 2))
            units.extend(BasicBlockIR(width, width, 1) for _ in range(count - 1))
            in_channel = width
        self.body = nn.Sequential(*units)
        side = INPUT_SIZE // 2 ** len(WIDTHS)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(WIDTHS[-1]),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(WIDTHS[-1] * side * side, EMBEDDING_DIMS),
            nn.BatchNorm1d(EMBEDDING_DIMS, affine=False),
        )

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) RGB faces, got {tuple(rgb.shape)}")
        x = self.output_layer(self.body(self.input_layer(rgb.flip(1))))  # RGB -> BGR, the training order
        return x / x.norm(dim=1, keepdim=True)
