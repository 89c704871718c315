"""Landmark geometry shared by the detectors and the aligner: dlib's mean face and the similarity fit.

Both :mod:`synthdb.faces.detect` (completing dlib's five parts into our five points) and
:mod:`synthdb.faces.align` (warping faces onto templates) need them; keeping them here lets the aligner use
detectors without the two modules importing each other.
"""

from __future__ import annotations

import numpy as np
import torch

# dlib's mean face on the unit square, from get_face_chip_details in dlib/image_transforms/interpolation.h
# (github.com/davisking/dlib). The 5-point shape predictor's parts, in its own order: subject's left eye outer
# and inner corner, subject's right eye outer and inner corner, bottom of the nose.
DLIB_MEAN_FACE_5 = np.array([
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
])
# The same file's 68-point mean face (same frame: its points 45, 42, 36, 39 and 33 match the parts above to
# 3e-3),
# at the points our convention needs and the 5-point model lacks: nose tip (30), mouth corners (54, 48).
DLIB_MEAN_NOSE_TIP = np.array((0.490127, 0.515625))
DLIB_MEAN_MOUTH = np.array([(0.726104, 0.780233), (0.254149, 0.780233)])  # subject's left, right
# Our five points on dlib's mean face: eye centres = mean of the two corners.
DLIB_MEAN_FACE_POINTS = np.array([
    DLIB_MEAN_FACE_5[0:2].mean(0), DLIB_MEAN_FACE_5[2:4].mean(0), DLIB_MEAN_NOSE_TIP, *DLIB_MEAN_MOUTH,
])


def estimate_similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` points onto ``dst``.

    ``src`` (N, K, 2), ``dst`` (K, 2) or (N, K, 2), K >= 2; returns (N, 2, 3), one transform per image. In
    complex numbers ``dst ~ a * src + b``: after centring, ``a = sum(conj(src) * dst) / sum(|src|^2)``, the
    closed form of the linear least squares ``[x -y 1 0; y x 0 1] [a_re a_im tx ty]' = [u v]'`` that MATLAB's
    ``cp2tform('nonreflective similarity')`` solves. No reflection check: ``a`` is a complex factor, so the
    fit can never mirror the face; a mirrored fit would only win for mislabelled landmarks, and silently
    flipping that face would hide the mislabelling. Differentiable in both arguments.
    """
    if src.ndim != 3 or src.shape[-1] != 2 or src.shape[1] < 2:
        raise ValueError(f"expected src (N, K>=2, 2), got {tuple(src.shape)}")
    dst = dst.to(src).expand_as(src)
    src_c = src - src.mean(1, keepdim=True)
    dst_c = dst - dst.mean(1, keepdim=True)
    x, y = src_c[..., 0], src_c[..., 1]
    u, v = dst_c[..., 0], dst_c[..., 1]
    norm = (x * x + y * y).sum(1).clamp_min(torch.finfo(src.dtype).tiny)
    a_re = (x * u + y * v).sum(1) / norm
    a_im = (x * v - y * u).sum(1) / norm
    linear = torch.stack([torch.stack([a_re, -a_im], -1), torch.stack([a_im, a_re], -1)], -2)
    shift = dst.mean(1) - (linear @ src.mean(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([linear, shift.unsqueeze(-1)], -1)


def transform_points(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply (N, 2, 3) affine matrices to (N, K, 2) points."""
    return points @ matrix[:, :, :2].transpose(1, 2) + matrix[:, :, 2].unsqueeze(1)
