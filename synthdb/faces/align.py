"""Crop presets and the alignment warps: batched, differentiable, device-agnostic (kornia style).

A preset is data (:class:`CropPreset` in :data:`PRESETS`): an output size plus where the landmarks land in it,
in the five-point order and pixel-centre convention of :mod:`synthdb.faces.landmarks`. The algorithms:

* :func:`~synthdb.faces.geometry.estimate_similarity` + :func:`warp`: detector landmarks onto a template
  (arcface, iresnet_bob, dlib150).
* :func:`ffhq_align`: the FFHQ recipe (NVlabs ``download_ffhq.py``): an oriented square from the eyes and
  mouth, then shrink, crop, reflect-pad, a supersampled transform and an antialiased resize.
* :func:`fixed_crop`: the fixed two-point crop that reframes generator output (one preset to another).

:class:`Cropper` picks the algorithm from an (input, output) preset pair.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import invert_affine_transform

from synthdb.errors import SynthdbError
from synthdb.faces.detect import Detector
from synthdb.faces.geometry import DLIB_MEAN_FACE_POINTS, estimate_similarity, transform_points
from synthdb.faces.landmarks import Detection, ImageFaces

Point = tuple[float, float]


def _dlib_chip_points(size: int, padding: float) -> tuple[Point, ...]:
    """Where ``dlib.get_face_chip(img, shape, size, padding)`` puts our five points, in chip pixels.

    dlib scales its unit mean face to ``(padding + p) / (1 + 2 padding) * size`` and centres that
    ``[0, size]`` square on the chip's pixel centres ``0 .. size-1`` (``centered_drect`` shortens the
    rectangle by one pixel), hence the -0.5. The same shortening makes dlib's chip span
    ``(size*s - 1) / ((size - 1) s)`` times as much of the image as this template's, for a face at s image
    pixels per chip pixel: within 0.7 % whenever s >= 0.5, which tests/faces/test_faces.py measures.
    """
    chip = (padding + DLIB_MEAN_FACE_POINTS) / (1 + 2 * padding) * size - 0.5
    return tuple((float(x), float(y)) for x, y in chip)


@dataclass(frozen=True)
class CropPreset:
    """One crop geometry: an algorithm family, an output size and where the landmarks land in it.

    ``kind``: ``template`` (similarity warp of detector landmarks onto ``points``), ``ffhq`` (FFHQ quad
    alignment, framed so the eyes land on ``points``), ``detector`` (input only: find landmarks),
    ``resize`` (input only: plain resize) or ``nocrop`` (output only: identity). ``points`` holds the two eyes
    or all five points, in our order and pixel-centre convention.

    ``fit`` says which way a template's least squares runs, because the model behind the preset was trained
    on crops made one way. ``image_to_template`` (insightface, skimage) minimises the residual in the chip;
    ``template_to_image`` (dlib) fits the template onto the detected points and inverts. The two differ in
    scale only, by the fit's residual: noise in the detected points shrinks the first one's scale, not the
    second's. For the dlib ResNet, dlib's way raises the worst descriptor cosine to dlib on the shared test
    photos from 0.9947 to 0.9977.
    """

    name: str
    kind: str
    size: tuple[int, int] | None = None  # (height, width)
    points: tuple[Point, ...] = ()
    note: str = ""
    fit: str = "image_to_template"

    @property
    def has_eyes(self) -> bool:
        """Fixed geometry: the eyes sit at known pixels, so images in it can be reframed without detection."""
        return len(self.points) >= 2

    @property
    def eye_left(self) -> Point:
        return self.points[0]

    @property
    def eye_right(self) -> Point:
        return self.points[1]


def _ffhq_family(name: str, size: int, eye_left: Point, eye_right: Point, note: str) -> CropPreset:
    return CropPreset(name, "ffhq", (size, size), (eye_left, eye_right), note)


# Eye coordinates of the FFHQ family and iresnet_bob, and the arcface template: reference spec section 6.2
# (the arcface numbers are insightface's ``arcface_dst``).
PRESETS: dict[str, CropPreset] = {p.name: p for p in (
    _ffhq_family("ffhq", 1024, (650.0, 480.0), (380.0, 480.0), "FFHQ-aligned, as StyleGAN FFHQ models emit"),
    _ffhq_family("ffhq256", 256, (162.5, 120.0), (95.0, 120.0), "FFHQ framing at 256"),
    _ffhq_family("ffhq128", 128, (81.25, 60.0), (47.5, 60.0), "FFHQ framing at 128"),
    _ffhq_family("synmultipie", 182, (121.33, 60.67), (60.67, 60.67), "SynMultiPIE generator framing"),
    _ffhq_family("sf2_feat", 160, (107.0, 46.0), (53.0, 46.0), "SF2 feature-extractor framing"),
    CropPreset("iresnet_bob", "template", (112, 112), ((73.5318, 51.6), (38.2946, 51.6)),
               "bob's iresnet input: eyes-only similarity"),
    CropPreset("arcface", "template", (112, 112), (
        (73.53179932, 51.50139999), (38.29459953, 51.69630051), (56.02519989, 71.73660278),
        (70.72990036, 92.20410156), (41.54930115, 92.3655014)), "insightface arcface 5-point template"),
    CropPreset("dlib150", "template", (150, 150), _dlib_chip_points(150, 0.25),
               "dlib.get_face_chip(size=150, padding=0.25): the dlib ResNet's input",
               fit="template_to_image"),
    # Mean MTCNN points of 242 dcgan-digiface images (256 seeded z, 4x bicubic upsampling, those with
    # exactly one face), mapped back to 64 px: tests/nets/test_dcgan.py re-measures them.
    CropPreset("digiface64", "template", (64, 64), (
        (42.06, 30.31), (21.88, 30.54), (31.64, 43.29), (40.57, 54.26), (23.25, 54.45)),
        "dcgan-digiface output: DigiFace-1M framing (about insightface's arcface template at 64 px)"),
    CropPreset("mtcnn", "detector", note="facenet-pytorch MTCNN landmarks"),
    CropPreset("dlib", "detector", note="dlib HOG detector + 5-point shape predictor"),
    CropPreset("resize", "resize", note="input only: resize the whole image to the output size"),
    CropPreset("nocrop", "nocrop", note="output only: keep the input as it is"),
)}


def ffhq_scaled(size: int) -> CropPreset:
    """The FFHQ framing at any square resolution (e.g. 64 for the tiny generator): ``ffhq`` scaled by
    size/1024, so generators of any size get a fixed two-point crop into an embedder's preset."""
    base = PRESETS["ffhq"]
    scale = size / base.size[0]
    (lx, ly), (rx, ry) = base.eye_left, base.eye_right
    return _ffhq_family(f"ffhq{size}", size, (lx * scale, ly * scale), (rx * scale, ry * scale),
                        f"FFHQ framing at {size}")


def generator_preset(framing: str, resolution: int) -> CropPreset:
    """The fixed geometry of a generator's images: its card's preset (``digiface64`` for dcgan-digiface) when
    that is a preset of the generator's size, else the FFHQ framing scaled to it (StyleGAN and EG3D FFHQ
    models, tiny configurations, bare files)."""
    preset = PRESETS.get(framing)
    if preset is not None and preset.has_eyes and preset.size == (resolution, resolution):
        return preset
    return ffhq_scaled(resolution)


def get_preset(preset: str | CropPreset) -> CropPreset:
    """The preset of that name (or the preset itself); a SynthdbError listing the names otherwise."""
    if isinstance(preset, CropPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise SynthdbError(f"unknown crop preset {preset!r}: choose one of {', '.join(PRESETS)}") from None


# ---------------------------------------------------------------------------------------------------------
# Similarity transforms and warping


def _binomial_pyr_down(images: torch.Tensor) -> torch.Tensor:
    """Blur with the 5-tap binomial [1 4 6 4 1]/16 (dlib's pyramid_down<2> filter) and keep even pixels.

    Output pixel i is input pixel 2i, so coordinates halve exactly; borders are replicated.
    """
    c = images.shape[1]
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=images.dtype, device=images.device) / 16
    x = F.pad(images, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, 5).repeat(c, 1, 1, 1), stride=(1, 2), groups=c)
    return F.conv2d(x, taps.view(1, 1, 5, 1).repeat(c, 1, 1, 1), stride=(2, 1), groups=c)


def pyramid_levels(matrix: torch.Tensor) -> torch.Tensor:
    """How many 2x pre-shrinks each (N, 2, 3) image-to-output warp needs before bilinear sampling.

    Bilinear sampling reads 2x2 pixels, so at more than 2 image pixels per output pixel it skips pixels and
    aliases. Like dlib's extract_image_chips, shrink by powers of two until at most 2 remain.
    """
    step = torch.linalg.det(matrix[:, :, :2].detach()).abs().rsqrt()  # image pixels per output pixel
    return torch.ceil(torch.log2(step / 2)).clamp_min(0).long()


def warp(images: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int], *,
         antialias: bool = True) -> torch.Tensor:
    """Warp (N, C, H, W) float images by (N, 2, 3) image-to-output affines into (N, C, h, w).

    Bilinear, zeros outside the image, pixel centres at integers (kornia ``align_corners=True``). With
    ``antialias``, images whose face is much larger than the output are first shrunk with a binomial pyramid
    (:func:`pyramid_levels`), so a 112-pixel chip of a 1000-pixel face is not aliased. Differentiable in
    ``images`` (and in ``matrix`` for the sampling positions).
    """
    if images.ndim != 4 or matrix.shape != (images.shape[0], 2, 3):
        raise ValueError(f"expected images (N, C, H, W) and matrix (N, 2, 3), got {tuple(images.shape)}"
                         f" and {tuple(matrix.shape)}")
    matrix = matrix.to(images)
    levels = pyramid_levels(matrix) if antialias else torch.zeros(len(matrix), dtype=torch.long)
    top = int(levels.max()) if len(levels) else 0
    if top == 0:
        return kornia.geometry.transform.warp_affine(images, matrix, size, align_corners=True)
    out = images.new_zeros(images.shape[0], images.shape[1], *size)
    level_images = images
    for level in range(top + 1):
        chosen = (levels == level).nonzero().flatten().to(images.device)
        if len(chosen):
            scaled = matrix[chosen].clone()
            scaled[:, :, :2] = scaled[:, :, :2] * 2**level  # input pixel x at this level is 2**level x
            out[chosen] = kornia.geometry.transform.warp_affine(level_images[chosen], scaled, size,
                                                                align_corners=True)
        if level < top:
            level_images = _binomial_pyr_down(level_images)
    return out


def align_to_template(images: torch.Tensor, points: torch.Tensor, preset: str | CropPreset, *,
                      antialias: bool = True) -> torch.Tensor:
    """Similarity-warp each image so its (N, 5, 2) landmarks land on the preset's template points.

    Two-point presets (iresnet_bob) fit the eyes only, which is exact; five-point presets fit all five.
    """
    preset = get_preset(preset)
    matrix = template_matrix(points.to(device=images.device, dtype=torch.float64), preset)
    return warp(images, matrix, preset.size, antialias=antialias)


def template_matrix(points: torch.Tensor, preset: str | CropPreset) -> torch.Tensor:
    """(N, 2, 3) image-to-chip similarities taking (N, 5, 2) landmarks onto a template preset's points,
    fitted the preset's way (:attr:`CropPreset.fit`)."""
    preset = get_preset(preset)
    if preset.kind != "template":
        raise ValueError(f"{preset.name} is not a template preset")
    dst = torch.tensor(preset.points, dtype=points.dtype, device=points.device)
    src = points[:, : len(dst)]
    if preset.fit == "template_to_image":
        return invert_affine_transform(estimate_similarity(dst.expand_as(src), src))
    return estimate_similarity(src, dst)


# ---------------------------------------------------------------------------------------------------------
# FFHQ


def ffhq_quad(points: torch.Tensor) -> torch.Tensor:
    """FFHQ's oriented crop square from (N, 5, 2) landmarks: (N, 4, 2) corners, upper-left going down first.

    NVlabs ``download_ffhq.py``: ``x = eye_to_eye - rot90(eye_to_mouth)`` scaled to
    ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``, ``y = rot90(x)``, centre ``eye_avg + 0.1 eye_to_mouth``;
    corners ``c - x - y, c - x + y, c + x + y, c + x - y``. ``eye_to_eye`` points from the subject's right eye
    to the left one (image left to right), so x points right and y down for an upright face.
    """
    eye_left, eye_right = points[:, 0], points[:, 1]
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_left - eye_right
    eye_to_mouth = (points[:, 3] + points[:, 4]) / 2 - eye_avg

    def rot90(v: torch.Tensor) -> torch.Tensor:
        return torch.stack([-v[:, 1], v[:, 0]], -1)

    x = eye_to_eye - rot90(eye_to_mouth)
    half = torch.maximum(eye_to_eye.norm(dim=1) * 2, eye_to_mouth.norm(dim=1) * 1.8)
    x = x / x.norm(dim=1, keepdim=True) * half.unsqueeze(1)
    y = rot90(x)
    c = eye_avg + 0.1 * eye_to_mouth
    return torch.stack([c - x - y, c - x + y, c + x + y, c + x - y], 1)


def _corners(h: float, w: float, like: torch.Tensor) -> torch.Tensor:
    """The outer pixel edges of an h x w image in pixel-centre coordinates, in ffhq_quad's corner order."""
    return torch.tensor([(-0.5, -0.5), (-0.5, h - 0.5), (w - 0.5, h - 0.5), (w - 0.5, -0.5)],
                        dtype=like.dtype, device=like.device)


def two_point_matrix(in_preset: str | CropPreset, out_preset: str | CropPreset) -> torch.Tensor:
    """(1, 2, 3) map from one fixed-geometry frame to another: the reframing :func:`fixed_crop` applies.

    Scale from the eyes' x distances, translation from the subject's right eye, no rotation (spec 6.4).
    """
    src, dst = get_preset(in_preset), get_preset(out_preset)
    s = (dst.eye_left[0] - dst.eye_right[0]) / (src.eye_left[0] - src.eye_right[0])
    tx = dst.eye_right[0] - s * src.eye_right[0]
    ty = dst.eye_right[1] - s * src.eye_right[1]
    return torch.tensor([[[s, 0.0, tx], [0.0, s, ty]]], dtype=torch.float64)


def ffhq_matrix(points: torch.Tensor, preset: str | CropPreset = "ffhq") -> torch.Tensor:
    """(N, 2, 3) image-to-output affines of the FFHQ alignment into an ffhq-family preset.

    The FFHQ quad maps onto the 1024 FFHQ frame's outer edges (as NVlabs' PIL QUAD transform does); a preset
    with another framing (synmultipie, sf2_feat) then gets the two-point reframing from ``ffhq``, so its own
    eye coordinates are honoured (the reference ignored them: its quirk 12).
    """
    quad = ffhq_quad(points.double())
    to_ffhq = estimate_similarity(quad, _corners(1024, 1024, quad))
    reframe = two_point_matrix("ffhq", preset).to(quad).expand(len(quad), 2, 3)
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=quad.dtype, device=quad.device).expand(len(quad), 1, 3)
    return (torch.cat([reframe, bottom], 1) @ torch.cat([to_ffhq, bottom], 1))[:, :2]


def _reflect_pad(image: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect-pad (C, H, W) by (left, right, top, bottom), repeating the reflection for pads beyond the image
    like numpy's ``np.pad(mode='reflect')`` (torch's reflect pad stops at size - 1)."""
    left, right, top, bottom = pad
    x = image.unsqueeze(0)
    if min(x.shape[-2:]) < 2:  # nothing to reflect
        return F.pad(x, pad, mode="replicate")[0]
    while left or right or top or bottom:
        h, w = x.shape[-2:]
        step = (min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1))
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = (a - b for a, b in zip((left, right, top, bottom), step, strict=True))
    return x[0]


def _ffhq_pad(image: torch.Tensor, pad: tuple[int, int, int, int], qsize: float) -> torch.Tensor:
    """NVlabs' padding: reflect, blur the padded band progressively and fade it to the median colour."""
    left, right, top, bottom = pad
    x = _reflect_pad(image, pad)
    h, w = x.shape[-2:]
    xs = torch.arange(w, dtype=x.dtype, device=x.device)
    ys = torch.arange(h, dtype=x.dtype, device=x.device)
    mask_x = 1 - torch.minimum(xs / left, (w - 1 - xs) / right)
    mask_y = 1 - torch.minimum(ys / top, (h - 1 - ys) / bottom)
    mask = torch.maximum(mask_x.view(1, w), mask_y.view(h, 1))
    sigma = qsize * 0.02
    k = 2 * math.ceil(4 * sigma) + 1  # scipy.ndimage.gaussian_filter's default 4-sigma support
    blurred = kornia.filters.gaussian_blur2d(x.unsqueeze(0), (k, k), (sigma, sigma), border_type="reflect")[0]
    x = x + (blurred - x) * (mask * 3 + 1).clamp(0, 1)
    median = x.flatten(1).median(dim=1).values.view(-1, 1, 1)
    return x + (median - x) * mask.clamp(0, 1)


def _ffhq_one(image: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int], supersample: int,
              pad: bool) -> torch.Tensor:
    """FFHQ alignment of one (C, H, W) image, given its (2, 3) image-to-output affine (float64)."""
    h_out, w_out = size
    to_image = invert_affine_transform(matrix[None])
    quad = transform_points(_corners(h_out, w_out, matrix).unsqueeze(0), to_image)[0]
    qsize = float((quad[1] - quad[0]).norm())
    # Shrink: an antialiased integer downscale when the quad is more than 4x the output.
    shrink = int(math.floor(qsize / max(size) * 0.5))
    if shrink > 1:
        h, w = image.shape[-2:]
        new = (max(round(h / shrink), 1), max(round(w / shrink), 1))
        image = F.interpolate(image[None], size=new, mode="bilinear", antialias=True, align_corners=False)[0]
        scale = torch.tensor([new[1] / w, new[0] / h], dtype=quad.dtype, device=quad.device)
        quad = (quad + 0.5) * scale - 0.5
        qsize = float((quad[1] - quad[0]).norm())
    # Crop to the quad's bounding box plus a border.
    border = max(round(qsize * 0.1), 3)
    h, w = image.shape[-2:]
    lo = torch.floor(quad.min(0).values).long().tolist()
    hi = torch.ceil(quad.max(0).values).long().tolist()
    x0, y0 = max(lo[0] - border, 0), max(lo[1] - border, 0)
    x1, y1 = min(hi[0] + border, w), min(hi[1] + border, h)
    image = image[:, y0:y1, x0:x1]
    quad = quad - torch.tensor([x0, y0], dtype=quad.dtype, device=quad.device)
    # Pad where the quad leaves the image, as NVlabs does (their enable_padding).
    h, w = image.shape[-2:]
    need = (max(border - lo[0] + x0, 0), max(hi[0] - x0 - w + border, 0),
            max(border - lo[1] + y0, 0), max(hi[1] - y0 - h + border, 0))
    if pad and max(need) > border - 4:
        widths = tuple(max(n, round(qsize * 0.3), 1) for n in need)
        image = _ffhq_pad(image, widths, qsize)
        quad = quad + torch.tensor([widths[0], widths[2]], dtype=quad.dtype, device=quad.device)
    # Transform onto a supersampled grid, then an antialiased resize to the output.
    big = (h_out * supersample, w_out * supersample)
    to_big = estimate_similarity(quad.unsqueeze(0), _corners(*big, quad))
    out = warp(image.unsqueeze(0), to_big.to(image.dtype), big)
    if supersample > 1:
        out = F.interpolate(out, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0]


def ffhq_align(images: torch.Tensor, points: torch.Tensor, preset: str | CropPreset = "ffhq", *,
               supersample: int = 4, pad: bool = True) -> torch.Tensor:
    """FFHQ-style alignment of (N, C, H, W) images with (N, 5, 2) landmarks into an ffhq-family preset.

    NVlabs' recipe, including the two steps the reference left out: the antialiased integer shrink when the
    face is far larger than the output, and the reflect padding (blurred and faded to the median colour)
    where the square leaves the photo. The transform samples a ``supersample`` times larger grid bilinearly
    and then resizes with antialiasing (NVlabs: 4096 then 1024). One image at a time: the shrink, crop and
    pad sizes differ per image. Differentiable in ``images``.
    """
    preset = get_preset(preset)
    if preset.kind != "ffhq":
        raise ValueError(f"{preset.name} is not an ffhq-family preset")
    matrices = ffhq_matrix(points, preset)
    crops = [_ffhq_one(img, m, preset.size, supersample, pad)
             for img, m in zip(images, matrices, strict=True)]
    return torch.stack(crops) if crops else images.new_zeros(0, images.shape[1], *preset.size)


# ---------------------------------------------------------------------------------------------------------
# Fixed two-point crop (generator output)


def fixed_crop_box(in_preset: str | CropPreset, out_preset: str | CropPreset) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the input region :func:`fixed_crop` resizes, truncated to ints as the reference."""
    m = two_point_matrix(in_preset, out_preset)[0]
    s, tx, ty = float(m[0, 0]), float(m[0, 2]), float(m[1, 2])
    h, w = get_preset(out_preset).size
    x0, y0 = -tx / s, -ty / s
    return int(x0), int(y0), int(x0 + w / s), int(y0 + h / s)


def fixed_crop(images: torch.Tensor, in_preset: str | CropPreset,
               out_preset: str | CropPreset) -> torch.Tensor:
    """Reframe (N, C, H, W) images from one fixed-geometry preset to another: crop, then bicubic resize.

    Reference spec 6.4: scale from the eyes' x distances, the subject's right eye as anchor, the box truncated
    to ints, an antialiased bicubic resize. Differentiable (generation backpropagates through it). Where the
    box leaves the image (e.g. ffhq -> sf2_feat) it is zero-padded instead of failing.
    """
    src, dst = get_preset(in_preset), get_preset(out_preset)
    if not (src.has_eyes and dst.has_eyes):
        raise ValueError(f"fixed crop needs eye positions in both presets: {src.name} -> {dst.name}")
    if tuple(images.shape[-2:]) != src.size:
        raise SynthdbError(f"images are {tuple(images.shape[-2:])}, preset {src.name} is {src.size}: "
                           "pick the input preset that matches the images (or --from resize)")
    x0, y0, x1, y1 = fixed_crop_box(src, dst)
    h, w = images.shape[-2:]
    padding = (max(-x0, 0), max(x1 - w, 0), max(-y0, 0), max(y1 - h, 0))
    region = F.pad(images, padding)[:, :, y0 + padding[2]: y1 + padding[2], x0 + padding[0]: x1 + padding[0]]
    if tuple(region.shape[-2:]) == dst.size:
        return region
    if not region.is_floating_point():
        region = region.float()
    rows = _resize_matrix(region.shape[-2], dst.size[0], region.dtype, region.device)
    cols = _resize_matrix(region.shape[-1], dst.size[1], region.dtype, region.device)
    return rows @ region @ cols.T


@functools.cache
def _resize_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n_out, n_in): torch's antialiased bicubic resize along one axis as a matrix, read off by resizing
    the unit vectors in ``dtype`` (float32 for half types). The resize is separable and linear, so
    ``rows @ image @ cols.T`` is the same map (to rounding) as ``F.interpolate(..., antialias=True)``, whose
    backward on the CPU cost 5x its forward: generation backpropagates through this crop for every image
    (Langevin, Dispersion), and the two matrix products are cheap both ways. Built outside any inference
    mode, so a cached matrix can be saved for a later backward; read-only to its callers."""
    with torch.inference_mode(False), torch.no_grad():
        exact = dtype if dtype in (torch.float32, torch.float64) else torch.float32  # torch's own weights
        units = torch.eye(n_in, dtype=exact).reshape(1, n_in, 1, n_in)  # one-row unit-vector images
        resized = F.interpolate(units, size=(1, n_out), mode="bicubic", align_corners=False, antialias=True)
        return resized.reshape(n_in, n_out).T.to(dtype=dtype, device=device).contiguous()


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of the whole image (the ``resize`` input preset)."""
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)


# ---------------------------------------------------------------------------------------------------------
# Cropper: (input preset, output preset) -> algorithm


def choose_algorithm(input_preset: str | CropPreset, output_preset: str | CropPreset) -> str:
    """``similarity``, ``ffhq``, ``fixed``, ``resize`` or ``nocrop`` for a preset pair (reference spec 6.3).

    Detector input: a template output gets the similarity warp onto all its points, an ffhq-family output the
    FFHQ recipe framed by its own eyes. Fixed-geometry input (any preset with eye positions): the two-point
    crop. ``resize`` input: a plain resize. ``nocrop`` output: the input unchanged.
    """
    src, dst = get_preset(input_preset), get_preset(output_preset)
    if dst.kind in ("detector", "resize"):
        raise SynthdbError(f"{dst.name} is an input preset, not an output: "
                           "pick an output such as arcface or ffhq")
    if src.kind == "nocrop":
        raise SynthdbError("nocrop is an output preset: "
                           "pick the input's geometry (a detector, resize, ffhq, ...)")
    if dst.kind == "nocrop":
        return "nocrop"
    if src.kind == "detector":
        return "similarity" if dst.kind == "template" else "ffhq"
    if src.kind == "resize":
        return "resize"
    return "fixed"


@dataclass(frozen=True)
class CropStatus:
    """How one image fared: ``ok``, else ``error``; for detector input the face count and the face used."""

    ok: bool
    error: str | None = None
    faces: int | None = None
    detection: Detection | None = None


class Cropper:
    """Crop (N, C, H, W) float images from one preset's geometry into another's.

    ``Cropper("mtcnn", "arcface", detector=zoo.detector(None, "mtcnn"))(images)`` detects, then warps;
    ``Cropper("ffhq256", "iresnet_bob")`` reframes generator output differentiably. Detector input crops the
    largest face of each image; an image with no face (or a detector error) gets a black crop and a status
    that says so: its crop is not a face. Detector input needs its ``detector`` (built by
    :func:`synthdb.zoo.detector`, which finds its weights) unless only :meth:`crop_detected` is used.
    ``value_range`` is the pixel range of ``images``: the detectors need uint8 copies, and black (outside the
    photo, failed images) is its low end.
    """

    def __init__(self, input_preset: str | CropPreset, output_preset: str | CropPreset, *,
                 detector: Detector | None = None, value_range: tuple[float, float] = (-1.0, 1.0),
                 antialias: bool = True) -> None:
        self.input, self.output = get_preset(input_preset), get_preset(output_preset)
        self.algorithm = choose_algorithm(self.input, self.output)
        self.value_range, self.antialias = value_range, antialias
        self._detector = detector

    @property
    def detector(self) -> Detector:
        """The input preset's detector, as given."""
        if self._detector is None:
            raise SynthdbError(
                f"cropping from {self.input.name} needs its detector: build the Cropper with "
                f"detector=synthdb.zoo.detector(ctx, {self.input.name!r})"
            )
        return self._detector

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, list[CropStatus]]:
        if self.algorithm in ("similarity", "ffhq"):
            return self.crop_detected(images, self.detector.detect(self._to_uint8(images)))
        done = [CropStatus(True)] * len(images)
        if self.algorithm == "nocrop":
            return images, done
        if self.algorithm == "resize":
            return resize(images, self.output.size), done
        black = self.value_range[0]  # the crop pads with zeros: shift so that zero is black
        return fixed_crop(images - black, self.input, self.output) + black, done

    def crop_detected(self, images: torch.Tensor,
                      found: Sequence[ImageFaces]) -> tuple[torch.Tensor, list[CropStatus]]:
        """Crop with detections already at hand (one ImageFaces per image), e.g. from a run on files."""
        if len(found) != len(images):
            raise ValueError(f"{len(found)} detection results for {len(images)} images")
        statuses = [_status(f) for f in found]
        black = self.value_range[0]
        crops = images.new_full((len(images), images.shape[1], *self.output.size), black)
        chosen = [i for i, s in enumerate(statuses) if s.ok]
        if chosen:
            subset = images[chosen] - black  # the warps fill with zeros: shift so that zero is black
            points = torch.as_tensor(np.stack([statuses[i].detection.points for i in chosen]))
            if self.algorithm == "similarity":
                aligned = align_to_template(subset, points, self.output, antialias=self.antialias)
            else:
                aligned = ffhq_align(subset, points.to(subset.device), self.output)
            crops[chosen] = aligned + black
        return crops, statuses

    def _to_uint8(self, images: torch.Tensor) -> list[np.ndarray]:
        lo, hi = self.value_range
        scaled = ((images.detach() - lo) * (255.0 / (hi - lo))).round().clamp(0, 255).to(torch.uint8)
        return list(scaled.permute(0, 2, 3, 1).cpu().numpy())


def _status(found: ImageFaces) -> CropStatus:
    if not found.ok:
        return CropStatus(False, found.error, None)
    if not found.faces:
        return CropStatus(False, "no face found", 0)
    return CropStatus(True, None, len(found.faces), found.largest)
