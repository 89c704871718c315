"""The identity distance: the angle between two embeddings, in radians, everywhere in synthdb.

The reference papers measure identities by angle (ICT 1.4 rad is cosine 0.17), and so do every algorithm,
check, statistic and plot here; this module is the one definition, so that they all clip alike. Cosines
are clamped just inside [-1, 1] for tensors that carry gradients (``arccos`` has an infinite slope at +-1,
and identical vectors must keep a finite gradient), and clipped to [-1, 1] for plain numbers (float error
may put a cosine of unit vectors slightly outside).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_COS_CLAMP = 1.0 - 1e-7


def angle(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise angles (N, M) between the rows of ``a`` (N, D) and ``b`` (M, D); differentiable."""
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    return torch.arccos((a @ b.T).clamp(-_COS_CLAMP, _COS_CLAMP))


def rowwise_angle(a: Tensor, b: Tensor) -> Tensor:
    """Angles (N,) between row i of ``a`` and row i of ``b`` (N, D); differentiable."""
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return torch.arccos(cos.clamp(-_COS_CLAMP, _COS_CLAMP))


def from_cosine(cos: np.ndarray | float) -> np.ndarray:
    """Angles of cosines (of unit vectors), clipped into arccos's domain; float64 in, float64 out."""
    return np.arccos(np.clip(cos, -1.0, 1.0))
