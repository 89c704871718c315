"""IResNet face embedders (ArcFace's "improved" ResNet) with insightface's parameter names.

The module tree and state-dict keys are those of insightface's
``recognition/arcface_torch/backbones/iresnet.py`` (``conv1, bn1, prelu, layer1..4`` of ``IBasicBlock`` with
``bn1, conv1, bn2, prelu, conv2, bn3, downsample.0/.1``, then ``bn2, dropout, fc, features``), so its
checkpoints load as they are.

nizhib's older ``pytorch-insightface`` port of the MXNet model zoo (the ``iresnet{34,50,100}-*.pth`` files the
reference uses) has the same keys, including ``num_batches_tracked``, since it saved ``model.state_dict()``.
It differs in three ways, and only the first changes outputs:

* every BatchNorm uses ``eps=2e-5`` (MXNet's value, kept by the port; arcface_torch uses ``1e-5``), so build
  those networks with ``bn_eps=NIZHIB_BN_EPS`` (their model cards say so);
* dropout is ``Dropout2d(0.4)`` before the flatten (arcface_torch: ``Dropout(p)`` after it): inactive in eval;
* it also defines a parameterless ``avgpool`` that its forward never calls.

Input: (N, 3, 112, 112) RGB, ``(pixel - 127.5) / 128`` (about [-1, 1]). Output: 512-d, not L2-normalised.
"""

from __future__ import annotations

import torch
from torch import nn

#: Residual units per stage for each depth (upstream ``iresnet18 .. iresnet100``).
UNITS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}
WIDTHS = (64, 128, 256, 512)
INPUT_SIZE = 112
ARCFACE_TORCH_BN_EPS = 1e-5
NIZHIB_BN_EPS = 2e-5


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN-conv-BN-PReLU-conv(stride)-BN plus a shortcut; the stride sits on the second conv."""

    def __init__(self, inplanes: int, planes: int, stride: int, bn_eps: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=bn_eps)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=bn_eps)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=bn_eps)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=bn_eps),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


def _stage(inplanes: int, planes: int, units: int, bn_eps: float) -> nn.Sequential:
    """One resolution stage: every stage halves the resolution in its first unit."""
    return nn.Sequential(IBasicBlock(inplanes, planes, 2, bn_eps),
                         *(IBasicBlock(planes, planes, 1, bn_eps) for _ in range(units - 1)))


class IResNet(nn.Module):
    """512-d embedding of (N, 3, 112, 112) RGB faces in about [-1, 1]; see the module docstring."""

    def __init__(self, depth: int, bn_eps: float = ARCFACE_TORCH_BN_EPS, dropout: float = 0.0,
                 num_features: int = 512) -> None:
        super().__init__()
        if depth not in UNITS:
            raise ValueError(f"IResNet depth must be one of {sorted(UNITS)}, got {depth}")
        self.conv1 = _conv3x3(3, WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=bn_eps)
        self.prelu = nn.PReLU(WIDTHS[0])
        units = UNITS[depth]
        self.layer1 = _stage(WIDTHS[0], WIDTHS[0], units[0], bn_eps)
        self.layer2 = _stage(WIDTHS[0], WIDTHS[1], units[1], bn_eps)
        self.layer3 = _stage(WIDTHS[1], WIDTHS[2], units[2], bn_eps)
        self.layer4 = _stage(WIDTHS[2], WIDTHS[3], units[3], bn_eps)
        self.bn2 = nn.BatchNorm2d(WIDTHS[-1], eps=bn_eps)
        self.dropout = nn.Dropout(p=dropout)  # only acts when fine-tuning in train mode
        side = INPUT_SIZE // 2 ** len(WIDTHS)
        self.fc = nn.Linear(WIDTHS[-1] * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=bn_eps)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) RGB faces, got {tuple(rgb.shape)}")
        x = self.prelu(self.bn1(self.conv1(rgb)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))
