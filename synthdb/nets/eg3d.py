"""EG3D generator (Chan et al. 2022) in plain torch, laid out like NVIDIA's ``TriPlaneGenerator``.

A StyleGAN2 network (``backbone``, :mod:`synthdb.nets.stylegan2`) turns w into three 32-channel feature
planes; a small MLP (``decoder``) turns features sampled from the planes into colour features and density;
the volume renderer (:mod:`synthdb.nets.eg3d_render`) integrates them along the rays of a camera given by the
25-d label c (16 cam2world + 9 normalised intrinsics) into a low-resolution feature image and a depth map;
``superresolution`` (two StyleGAN2 blocks styled by the last w row) lifts the feature image to the output
resolution. Parameter and buffer names, shapes and order are the official ``G_ema``'s, so an official state
loads 1:1; ``tests/data`` holds the names of the released FFHQ 512 network and golden outputs of the
official code that this file reproduces.

What differs from NVIDIA's code, on purpose:
- the official networks fix what the superresolution looks like by class name (input size, widths, whether
  its first block upsamples); here it is data (:class:`SuperresolutionLayout`), built from the class name
  and the pickled weights by :func:`kwargs_from_pickle`, so tiny configurations can be small too. Likewise
  the backbone's resolution (officially always 256) is a constructor argument;
- rendering randomness is explicit: ``stochastic=False`` (the default for constant noise) samples rays
  deterministically, so an image is a function of (w, c); ``stochastic=True`` draws from torch's global RNG
  exactly what the official code draws, in the same order (backbone noise, coarse jitter, importance
  samples, superresolution noise), which is how the golden outputs are reproduced;
- the superresolution's noise follows the network's ``superresolution_noise_mode`` (``none`` for the FFHQ
  release): ``random`` there means "follow the caller's noise mode", so constant noise stays constant;
- no training machinery (density regularisation, generator pose-conditioning swaps, backbone caching).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from synthdb.nets import eg3d_render, stylegan2
from synthdb.nets.pickles import PickledModule, plain

PLANE_CHANNELS = 32  # per tri-plane; fixed by the official network, as are the decoder's widths
DECODER_HIDDEN = 64
DEFAULT_FOV = 18.0  # degrees: the FFHQ cameras' field of view


class Rendering(NamedTuple):
    """One synthesis: the image (N, 3, R, R) in about [-1, 1], the neural rendering before superresolution
    (N, 3, r, r) and the depth map (N, 1, r, r): distance from the camera along each pixel's ray."""

    image: Tensor
    image_raw: Tensor
    depth: Tensor


@dataclass(frozen=True)
class SuperresolutionLayout:
    """The shape of a superresolution module: the feature image is resized to ``input_resolution`` (when it
    differs, or only when smaller), then two StyleGAN2 blocks of ``channels`` map it to the output. The first
    block upsamples x2 (``first_block_up``) or keeps the size; ``filter_buffer``: the module keeps an (unused)
    resampling filter in its state, as some official classes do."""

    input_resolution: int
    channels: tuple[int, int]
    first_block_up: bool
    filter_buffer: bool = True
    resize_only_smaller: bool = False
    conv_clamp: float | None = None

    @property
    def img_resolution(self) -> int:
        return self.input_resolution * (4 if self.first_block_up else 2)


#: The official superresolution classes (``training.superresolution``), all constructed with 32 feature
#: channels and w_dim 512. ``SuperresolutionHybridDeepfp32`` is absent: it cannot be built by
#: ``TriPlaneGenerator`` (it rejects ``sr_antialias``).
OFFICIAL_SUPERRESOLUTION: Mapping[str, SuperresolutionLayout] = {
    "SuperresolutionHybrid8XDC": SuperresolutionLayout(128, (256, 128), True, filter_buffer=False),
    "SuperresolutionHybrid8X": SuperresolutionLayout(128, (128, 64), True),
    "SuperresolutionHybrid4X": SuperresolutionLayout(128, (128, 64), False, resize_only_smaller=True),
    "SuperresolutionHybrid2X": SuperresolutionLayout(64, (128, 64), False),
}


class SynthesisBlockNoUp(stylegan2.SynthesisBlock):
    """A StyleGAN2 ``skip`` block that keeps the resolution: its first conv does not upsample and the
    incoming image is added to as is (the official ``SynthesisBlockNoUp``; same names and shapes)."""

    def __init__(self, in_channels: int, out_channels: int, **block_kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, is_last=False, architecture="skip", **block_kwargs)
        self.conv0.up = 1

    def forward(
        self, x: Tensor, img: Tensor | None, ws: Tensor, noise_mode: stylegan2.NoiseMode = "const"
    ) -> tuple[Tensor, Tensor]:
        w0, w1, w2 = ws.unbind(dim=1)
        x = self.conv0(x, w0, noise_mode=noise_mode)
        x = self.conv1(x, w1, noise_mode=noise_mode)
        y = self.torgb(x, w2).to(torch.float32)
        return x, img + y if img is not None else y


class Superresolution(nn.Module):
    """Feature image (N, 32, r, r) and its first three channels -> image (N, 3, R, R), every conv styled
    by the last w row."""

    def __init__(self, channels: int, w_dim: int, layout: SuperresolutionLayout, antialias: bool) -> None:
        super().__init__()
        self.input_resolution = layout.input_resolution
        self.resize_only_smaller = layout.resize_only_smaller
        self.sr_antialias = antialias
        c0, c1 = layout.channels
        common = {"w_dim": w_dim, "img_channels": 3, "conv_clamp": layout.conv_clamp}
        if layout.first_block_up:
            res0 = 2 * layout.input_resolution
            self.block0 = stylegan2.SynthesisBlock(channels, c0, resolution=res0, is_last=False, **common)
        else:
            res0 = layout.input_resolution
            self.block0 = SynthesisBlockNoUp(channels, c0, resolution=res0, **common)
        self.block1 = stylegan2.SynthesisBlock(c0, c1, resolution=2 * res0, is_last=True, **common)
        if layout.filter_buffer:
            self.register_buffer("resample_filter", stylegan2.make_filter())

    def forward(self, rgb: Tensor, x: Tensor, ws: Tensor, noise_mode: stylegan2.NoiseMode) -> Tensor:
        ws = ws[:, -1:].expand(-1, 3, -1)
        size = x.shape[-1]
        if size < self.input_resolution or (size != self.input_resolution and not self.resize_only_smaller):
            target = (self.input_resolution, self.input_resolution)
            resize = {"mode": "bilinear", "align_corners": False, "antialias": self.sr_antialias}
            x = nn.functional.interpolate(x, size=target, **resize)
            rgb = nn.functional.interpolate(rgb, size=target, **resize)
        x, rgb = self.block0(x, rgb, ws, noise_mode)
        _, rgb = self.block1(x, rgb, ws, noise_mode)
        return rgb


class OSGDecoder(nn.Module):
    """Plane features (N, 3, S, 32), averaged over the planes -> colour features (N, S, 32) in
    (-0.001, 1.001) and raw density (N, S, 1), by a two-layer softplus MLP."""

    def __init__(self, n_features: int, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            stylegan2.FullyConnectedLayer(n_features, DECODER_HIDDEN, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            stylegan2.FullyConnectedLayer(DECODER_HIDDEN, 1 + PLANE_CHANNELS, lr_multiplier=lr_multiplier),
        )

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        x = features.mean(1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001  # mip-NeRF's widened sigmoid
        return rgb, x[..., 0:1]


class EG3DGenerator(nn.Module):
    """Mapping + tri-plane synthesis + rendering + superresolution, from the official constructor's
    arguments (``z_dim`` ... ``rendering_kwargs``; backbone options such as ``channel_base`` flat) plus
    ``superresolution`` (a :class:`SuperresolutionLayout` as a dict), ``neural_rendering_resolution`` (rays
    per side; the released networks render 128) and ``backbone_resolution`` (plane size).

    ``rendering_kwargs`` are the official rendering options: ``depth_resolution``,
    ``depth_resolution_importance``, ``ray_start`` / ``ray_end`` (numbers or both ``'auto'``), ``box_warp``,
    ``disparity_space_sampling``, ``white_back``, ``c_gen_conditioning_zero``, ``c_scale``,
    ``superresolution_noise_mode``, ``sr_antialias``, ``decoder_lr_mul``, ``avg_camera_radius`` /
    ``avg_camera_pivot`` (the orbit of :meth:`camera`); training-only options are kept and ignored.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        mapping_kwargs: Mapping[str, Any] | None = None,
        rendering_kwargs: Mapping[str, Any] | None = None,
        superresolution: Mapping[str, Any] | None = None,
        neural_rendering_resolution: int = 64,
        backbone_resolution: int = 256,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        options = dict(rendering_kwargs or {})
        layout = SuperresolutionLayout(**{**dict(superresolution or {}), "channels": _pair(superresolution)})
        if img_channels != 3 or layout.img_resolution != img_resolution:
            raise ValueError(
                f"an EG3D generator renders 3-channel images at its superresolution's output size "
                f"({layout.img_resolution}), got img_channels={img_channels}, img_resolution={img_resolution}"
            )
        if options.get("disparity_space_sampling") and options.get("ray_start") == "auto":
            raise ValueError("disparity_space_sampling needs numeric ray_start and ray_end, not 'auto'")
        if options.get("clamp_mode", "softplus") != "softplus":
            raise ValueError(f"clamp_mode {options['clamp_mode']!r}: only softplus densities exist")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.neural_rendering_resolution = neural_rendering_resolution
        self.rendering_kwargs = options
        self.backbone = stylegan2.StyleGAN2Generator(
            z_dim,
            c_dim,
            w_dim,
            img_resolution=backbone_resolution,
            img_channels=3 * PLANE_CHANNELS,
            mapping_kwargs=mapping_kwargs,
            **backbone_kwargs,
        )
        self.superresolution = Superresolution(
            PLANE_CHANNELS, w_dim, layout, antialias=bool(options.get("sr_antialias", True))
        )
        self.decoder = OSGDecoder(PLANE_CHANNELS, lr_multiplier=options.get("decoder_lr_mul", 1))
        self.num_ws = self.backbone.num_ws

    @property
    def w_avg(self) -> Tensor:
        return self.backbone.mapping.w_avg

    def mapping(
        self,
        z: Tensor,
        c: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> Tensor:
        """w+ (N, num_ws, w_dim) from z and the conditioning camera c, scaled by ``c_scale`` (0 when the
        options leave it out, as officially) or zeroed when ``c_gen_conditioning_zero``."""
        if self.rendering_kwargs.get("c_gen_conditioning_zero", False):
            c = torch.zeros_like(c)
        c = c * self.rendering_kwargs.get("c_scale", 0)
        return self.backbone.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    def render(
        self,
        ws: Tensor,
        c: Tensor,
        noise_mode: stylegan2.NoiseMode = "const",
        stochastic: bool | None = None,
    ) -> Rendering:
        """Render w+ (N, num_ws, w_dim) from cameras c (N, 25). ``stochastic`` (default: ``noise_mode ==
        'random'``) jitters the ray samples and draws the importance samples at random, in the official
        order; otherwise sampling is deterministic (see :mod:`synthdb.nets.eg3d_render`)."""
        stochastic = noise_mode == "random" if stochastic is None else stochastic
        cam2world, intrinsics = c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)
        resolution = self.neural_rendering_resolution
        origins, directions = eg3d_render.rays(cam2world.float(), intrinsics.float(), resolution)
        planes = self.backbone.synthesis(ws, noise_mode=noise_mode)
        planes = planes.reshape(len(planes), 3, PLANE_CHANNELS, *planes.shape[-2:])
        features, depth = eg3d_render.render(
            planes, self.decoder, origins, directions, self.rendering_kwargs, stochastic
        )
        n = len(ws)
        feature_image = features.transpose(1, 2).reshape(n, -1, resolution, resolution).contiguous()
        depth_image = depth.transpose(1, 2).reshape(n, 1, resolution, resolution)
        rgb = feature_image[:, :3]
        image = self.superresolution(rgb, feature_image, ws, self._sr_noise_mode(noise_mode, stochastic))
        return Rendering(image, rgb, depth_image)

    def synthesis(
        self, ws: Tensor, c: Tensor, noise_mode: stylegan2.NoiseMode = "const", stochastic: bool | None = None
    ) -> Tensor:
        """The image of :meth:`render`."""
        return self.render(ws, c, noise_mode, stochastic).image

    def _sr_noise_mode(self, noise_mode: stylegan2.NoiseMode, stochastic: bool) -> stylegan2.NoiseMode:
        if self.rendering_kwargs.get("superresolution_noise_mode", "none") != "random":
            return "none"
        return "random" if stochastic else noise_mode

    def camera(self, fov_deg: float = DEFAULT_FOV, pitch_deg: float = 0.0, yaw_deg: float = 0.0) -> Tensor:
        """A (1, 25) label for a camera on this network's orbit (``avg_camera_radius`` around
        ``avg_camera_pivot``, by default FFHQ's 2.7 and (0, 0, 0.2)); see :func:`camera_label`."""
        radius = float(self.rendering_kwargs.get("avg_camera_radius", 2.7))
        pivot = tuple(float(v) for v in self.rendering_kwargs.get("avg_camera_pivot", (0.0, 0.0, 0.2)))
        return camera_label(fov_deg, pitch_deg, yaw_deg, radius=radius, pivot=pivot)

    def forward(
        self, z: Tensor, c: Tensor, truncation_psi: float = 1.0, noise_mode: stylegan2.NoiseMode = "const"
    ) -> Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi), c, noise_mode)


def _pair(layout: Mapping[str, Any] | None) -> tuple[int, int]:
    if not layout or "channels" not in layout:
        raise ValueError("superresolution needs a layout with input_resolution and channels")
    c0, c1 = layout["channels"]
    return int(c0), int(c1)


def camera_label(
    fov_deg: float = DEFAULT_FOV,
    pitch_deg: float = 0.0,
    yaw_deg: float = 0.0,
    radius: float = 2.7,
    pivot: Sequence[float] = (0.0, 0.0, 0.2),
) -> Tensor:
    """EG3D's 25-d camera label (1, 25): flattened cam2world (4x4) then normalised intrinsics (3x3).

    The camera sits on a sphere of ``radius`` around the origin and looks at ``pivot``; pitch and yaw are
    offsets from the frontal view (polar angle v = 90 + pitch, azimuth 90 + yaw degrees), and the polar
    angle goes through EG3D's ``arccos(1 - 2 v / pi)``. Axes: y up; the camera's x is right, y down, z
    forward (OpenCV). Focal length ``1 / (tan(fov / 2) * 1.414)`` with the 3.14159 and 1.414 of the
    official code, principal point at the centre.
    """
    v = min(max(math.pi / 2 + math.radians(pitch_deg), 1e-5), math.pi - 1e-5)
    theta = math.pi / 2 + math.radians(yaw_deg)
    phi = math.acos(1 - 2 * v / math.pi)
    origin = torch.tensor(
        [
            radius * math.sin(phi) * math.cos(math.pi - theta),
            radius * math.cos(phi),
            radius * math.sin(phi) * math.sin(math.pi - theta),
        ]
    )
    forward = nn.functional.normalize(torch.tensor(pivot, dtype=torch.float32) - origin, dim=0)
    up = torch.tensor([0.0, 1.0, 0.0])
    right = -nn.functional.normalize(torch.linalg.cross(up, forward), dim=0)
    up = nn.functional.normalize(torch.linalg.cross(forward, right), dim=0)
    cam2world = torch.eye(4)
    cam2world[:3, :3] = torch.stack([right, up, forward], dim=1)
    cam2world[:3, 3] = origin
    focal = 1 / (math.tan(fov_deg * 3.14159 / 360) * 1.414)
    intrinsics = torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]])
    return torch.cat([cam2world.reshape(16), intrinsics.reshape(9)])[None]


#: :class:`EG3DGenerator` arguments of the released FFHQ network (``ffhq512-128.pkl``: 512 px from 128x128
#: rays, 48 + 48 samples per ray, 8XDC superresolution), as :func:`kwargs_from_pickle` reads them, without
#: the training-only options: full-size random-weight networks for benchmarks and stress tests.
FFHQ_512: Mapping[str, Any] = {
    "z_dim": 512,
    "c_dim": 25,
    "w_dim": 512,
    "img_resolution": 512,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "rendering_kwargs": {
        "depth_resolution": 48,
        "depth_resolution_importance": 48,
        "ray_start": 2.25,
        "ray_end": 3.3,
        "box_warp": 1,
        "disparity_space_sampling": False,
        "clamp_mode": "softplus",
        "c_gen_conditioning_zero": False,
        "c_scale": 1.0,
        "superresolution_noise_mode": "none",
        "sr_antialias": True,
        "decoder_lr_mul": 1.0,
        "avg_camera_radius": 2.7,
        "avg_camera_pivot": [0, 0, 0.2],
    },
    "superresolution": {
        **asdict(OFFICIAL_SUPERRESOLUTION["SuperresolutionHybrid8XDC"]),
        "channels": [256, 128],
        "conv_clamp": 256,
    },
    "neural_rendering_resolution": 128,
    "backbone_resolution": 256,
    "channel_base": 32768,
    "channel_max": 512,
    "conv_clamp": None,
}


# --- NVIDIA pickles -----------------------------------------------------------------------------------------

#: ``TriPlaneGenerator``'s positional parameters, in order (NVIDIA passes keywords, but records both).
_OFFICIAL_PARAMS = (
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "sr_num_fp16_res",
    "mapping_kwargs",
    "rendering_kwargs",
    "sr_kwargs",
)
#: Backbone options that only choose fp16 blocks, memory formats or grouped convolutions.
_RUNTIME_ONLY = frozenset({"num_fp16_res", "fp16_channels_last", "channels_last", "fused_modconv_default"})


def kwargs_from_pickle(record: PickledModule) -> dict[str, Any]:
    """NVIDIA's ``TriPlaneGenerator`` record -> :class:`EG3DGenerator`'s constructor arguments.

    Sizes come from what the pickle holds, not only from its constructor arguments: the rendering options
    and ``neural_rendering_resolution`` are attributes that training changes after construction (the
    released networks render 128 rays per side, not the constructor's 64), and the superresolution's widths
    and sizes, hard-coded per official class, are read off its weights, as is the backbone's resolution.
    """
    kwargs = dict(zip(_OFFICIAL_PARAMS, record.init_args, strict=False))
    kwargs.update(record.init_kwargs)
    options = plain(record.state.get("rendering_kwargs", kwargs.get("rendering_kwargs") or {}))
    sr_fp16 = kwargs.pop("sr_num_fp16_res", 0) or 0
    rays = plain(record.state.get("neural_rendering_resolution", 64))
    if not isinstance(options, dict) or not _is_int(sr_fp16) or not _is_int(rays):
        raise ValueError("rendering_kwargs, sr_num_fp16_res or neural_rendering_resolution of the wrong type")
    module = str(options.get("superresolution_module", "")).rsplit(".", 1)[-1]
    if module not in OFFICIAL_SUPERRESOLUTION:
        raise ValueError(f"superresolution module {module or '(none)'!r} is not one synthdb knows")
    state = record.state_dict()
    blocks = [int(m.group(1)) for k in state if (m := re.match(r"backbone\.synthesis\.b(\d+)\.", k))]
    widths, sizes = [], []
    for block in ("block0", "block1"):
        weight = state.get(f"superresolution.{block}.conv1.weight")
        noise = state.get(f"superresolution.{block}.conv1.noise_const")
        if weight is None or noise is None or not blocks:
            raise ValueError(f"the state has no superresolution.{block} or backbone layers")
        widths.append(int(weight.shape[0]))
        sizes.append(int(noise.shape[-1]))
    official = OFFICIAL_SUPERRESOLUTION[module]
    layout = SuperresolutionLayout(
        input_resolution=sizes[0] // 2 if official.first_block_up else sizes[0],
        channels=(widths[0], widths[1]),
        first_block_up=official.first_block_up,
        filter_buffer=official.filter_buffer,
        resize_only_smaller=official.resize_only_smaller,
        conv_clamp=256 if sr_fp16 > 0 else None,  # as the official classes choose it
    )
    kwargs.pop("sr_kwargs", None)
    for key in _RUNTIME_ONLY:
        kwargs.pop(key, None)
    kwargs.update(
        img_resolution=sizes[1],
        rendering_kwargs=options,
        superresolution={**asdict(layout), "channels": list(layout.channels)},
        neural_rendering_resolution=rays,
        backbone_resolution=max(blocks),
    )
    return kwargs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def tiny_init(net: nn.Module) -> None:
    """Random noise strengths (NVIDIA starts them at zero), ToRGB weights scaled by 0.2 (keeps the
    superresolved image mostly inside [-1, 1]) and ``w_avg`` at the mean w of 4096 random z conditioned on
    the frontal camera, so truncation pulls towards a real centre."""
    assert isinstance(net, EG3DGenerator)
    stylegan2.liven_fresh_weights(net)
    with torch.no_grad():
        z = torch.randn(4096, net.z_dim)
        c = net.camera().expand(4096, -1)
        net.w_avg.copy_(net.mapping(z, c)[:, 0].mean(dim=0))
