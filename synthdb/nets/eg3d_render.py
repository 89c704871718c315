"""EG3D's volume renderer: camera rays, tri-plane features, coarse + importance samples, compositing.

Functions, not modules: the official renderer holds no parameters or buffers, so nothing here appears in a
state dict. The arithmetic follows the official ``volumetric_rendering`` package, including what a cleaner
renderer would do differently but trained networks depend on:

- the third tri-plane is indexed (z, x), not (y, z) (the official plane axes project onto it that way);
- composite depth is clamped to the min and max sample depth of the whole batch, and with
  ``ray_start == ray_end == 'auto'`` rays that miss the box borrow start and end from the whole batch, so in
  those two cases an image depends on the other images of its batch when sampling is stochastic;
- importance weights are smoothed (max-pool then average-pool, plus 0.01) and only the inner bins feed the
  pdf.

Randomness (``stochastic=True``) draws, in this order and these shapes, exactly what the official renderer
draws from torch's global RNG: one ``rand`` of the coarse depths' shape, then one ``rand(rays, importance)``;
seeded identically, both give the same samples. ``stochastic=False`` replaces the draws by their
deterministic counterparts (jitter at the middle of each depth bin, importance quantiles evenly spaced, as the
official ``det=True`` branch), so an image is a function of its latent and camera, and a batch renders like
its images one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: For each tri-plane, the two coordinates it is indexed by (x=0, y=1, z=2); see the module docstring.
PLANE_COORDINATES = ((0, 1), (0, 2), (2, 0))

Decoder = Callable[[Tensor], tuple[Tensor, Tensor]]


def rays(cam2world: Tensor, intrinsics: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """Origins and unit directions (N, resolution**2, 3) of the rays through the pixel centres, row-major.

    Intrinsics are normalised by image size (principal point near 0.5) and may have skew; cameras follow
    OpenCV conventions (x right, y down, z forward), as EG3D's labels do.
    """
    device = cam2world.device
    centres = (
        torch.arange(resolution, dtype=torch.float32, device=device) * (1.0 / resolution) + 0.5 / resolution
    )
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    x, y = x.reshape(1, -1), y.reshape(1, -1)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, skew = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    x_lift = (x - cx + cy * skew / fy - skew * y / fy) / fx
    y_lift = (y - cy) / fy
    ones = torch.ones_like(x_lift)
    points = torch.stack([x_lift, y_lift, ones, ones], dim=-1)  # (N, M, 4), homogeneous, at depth 1
    world = torch.bmm(cam2world, points.transpose(1, 2)).transpose(1, 2)[..., :3]
    origin = cam2world[:, :3, 3]
    directions = F.normalize(world - origin[:, None], dim=2)
    return origin[:, None].expand(-1, directions.shape[1], -1), directions


def box_limits(origins: Tensor, directions: Tensor, side: float) -> tuple[Tensor, Tensor]:
    """Entry and exit distances (N, M, 1) of rays through the axis-aligned cube of side ``side`` centred at
    the origin (slab method); rays that miss get (-1, -2)."""
    o, d = origins.detach(), directions.detach()
    inv = 1 / d
    lo = (-side / 2 - o) * inv
    hi = (side / 2 - o) * inv
    near = torch.where(inv < 0, hi, lo)
    far = torch.where(inv < 0, lo, hi)
    tmin, tmax = near[..., 0], far[..., 0]
    valid = ~((tmin > far[..., 1]) | (near[..., 1] > tmax))
    tmin, tmax = torch.maximum(tmin, near[..., 1]), torch.minimum(tmax, far[..., 1])
    valid &= ~((tmin > far[..., 2]) | (near[..., 2] > tmax))
    tmin, tmax = torch.maximum(tmin, near[..., 2]), torch.minimum(tmax, far[..., 2])
    tmin = torch.where(valid, tmin, torch.full_like(tmin, -1.0))
    tmax = torch.where(valid, tmax, torch.full_like(tmax, -2.0))
    return tmin[..., None], tmax[..., None]


def _jitter(like: Tensor, stochastic: bool) -> Tensor:
    return torch.rand_like(like) if stochastic else torch.full_like(like, 0.5)


def coarse_depths(
    origins: Tensor, directions: Tensor, options: Mapping[str, Any], stochastic: bool
) -> Tensor:
    """Stratified depths (N, M, D, 1): D evenly spaced starts between ray start and end (or evenly spaced in
    disparity), each moved forward by a fraction of one step (random, or one half)."""
    n, m, _ = origins.shape
    count = int(options["depth_resolution"])
    start, end = options["ray_start"], options["ray_end"]
    if start == end == "auto":
        start, end = box_limits(origins, directions, options["box_warp"])
        valid = end > start
        if valid.any():
            start = torch.where(valid, start, start[valid].min())
            end = torch.where(valid, end, start[valid].max())  # sic: the official code uses the start here
        steps = torch.arange(count, dtype=torch.float32, device=origins.device) / (count - 1)
        depths = start[None] + steps[:, None, None, None] * (end - start)[None]  # (D, N, M, 1)
        # jittered in this layout, then moved: the official draws fill the (D, N, M) memory order
        depths = depths + _jitter(depths, stochastic) * ((end - start) / (count - 1))[None]
        return depths.permute(1, 2, 0, 3)
    steps = torch.linspace(0, 1, count, device=origins.device).reshape(1, 1, count, 1).repeat(n, m, 1, 1)
    if options.get("disparity_space_sampling", False):
        steps = steps + _jitter(steps, stochastic) * (1 / (count - 1))
        return 1.0 / (1.0 / start * (1.0 - steps) + 1.0 / end * steps)
    depths = (
        torch.linspace(start, end, count, device=origins.device).reshape(1, 1, count, 1).repeat(n, m, 1, 1)
    )
    return depths + _jitter(depths, stochastic) * ((end - start) / (count - 1))


def sample_planes(planes: Tensor, points: Tensor, box_warp: float) -> Tensor:
    """Bilinear features (N, 3, S, C) of the tri-planes (N, 3, C, H, W) at points (N, S, 3) in a cube of side
    ``box_warp`` (zero outside)."""
    n, count, channels, h, w = planes.shape
    points = (2 / box_warp) * points
    grid = torch.stack([points[..., list(axes)] for axes in PLANE_COORDINATES], dim=1)  # (N, 3, S, 2)
    features = F.grid_sample(
        planes.reshape(n * count, channels, h, w),
        grid.reshape(n * count, 1, -1, 2).float(),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return features.permute(0, 3, 2, 1).reshape(n, count, -1, channels)


def composite(
    colors: Tensor, densities: Tensor, depths: Tensor, white_back: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Volume rendering over sample intervals (mip-NeRF style midpoints): colour in [-1, 1] (N, M, C),
    expected depth (N, M, 1) and interval weights (N, M, S-1, 1). Densities go through ``softplus(x - 1)``.
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-densities_mid * deltas)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2), -2)
    weights = alpha * transmittance[:, :, :-1]
    rgb = torch.sum(weights * colors_mid, -2)
    total = weights.sum(2)
    depth = torch.nan_to_num(torch.sum(weights * depths_mid, -2) / total, float("inf"))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if white_back:
        rgb = rgb + 1 - total
    return rgb * 2 - 1, depth, weights


def importance_depths(depths: Tensor, weights: Tensor, count: int, stochastic: bool) -> Tensor:
    """``count`` more depths (N, M, count, 1) per ray, drawn from the smoothed coarse weights by inverse
    transform sampling between the midpoints of the coarse depths. Not differentiated (as officially)."""
    with torch.no_grad():
        n, m, samples, _ = depths.shape
        depths = depths.reshape(n * m, samples)
        weights = weights.reshape(n * m, 1, -1).float()
        weights = F.avg_pool1d(F.max_pool1d(weights, 2, 1, padding=1), 2, 1).squeeze(1) + 0.01
        bins = 0.5 * (depths[:, :-1] + depths[:, 1:])
        pdf_weights = weights[:, 1:-1] + 1e-5
        last = pdf_weights.shape[1]
        cdf = torch.cumsum(pdf_weights / pdf_weights.sum(-1, keepdim=True), -1)
        cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
        if stochastic:
            u = torch.rand(n * m, count, device=depths.device)
        else:
            u = torch.linspace(0, 1, count, device=depths.device).expand(n * m, count)
        u = u.contiguous()
        above = torch.searchsorted(cdf, u, right=True)
        below = torch.clamp_min(above - 1, 0)
        above = torch.clamp_max(above, last)
        cdf_below, cdf_above = torch.gather(cdf, 1, below), torch.gather(cdf, 1, above)
        bins_below, bins_above = torch.gather(bins, 1, below), torch.gather(bins, 1, above)
        denom = cdf_above - cdf_below
        denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
        samples = bins_below + (u - cdf_below) / denom * (bins_above - bins_below)
        return samples.reshape(n, m, count, 1)


def _evaluate(
    planes: Tensor,
    decoder: Decoder,
    origins: Tensor,
    directions: Tensor,
    depths: Tensor,
    options: Mapping[str, Any],
    stochastic: bool,
) -> tuple[Tensor, Tensor]:
    n, m, count, _ = depths.shape
    points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(n, -1, 3)
    colors, densities = decoder(sample_planes(planes, points, options["box_warp"]))
    if stochastic and options.get("density_noise", 0) > 0:
        densities = densities + torch.randn_like(densities) * options["density_noise"]
    return colors.reshape(n, m, count, -1), densities.reshape(n, m, count, 1)


def render(
    planes: Tensor,
    decoder: Decoder,
    origins: Tensor,
    directions: Tensor,
    options: Mapping[str, Any],
    stochastic: bool = False,
) -> tuple[Tensor, Tensor]:
    """Features (N, M, C) in [-1, 1] and depth (N, M, 1) of every ray: a coarse pass, then (when
    ``depth_resolution_importance`` > 0) a fine pass at importance-sampled depths, composited together."""
    depths = coarse_depths(origins, directions, options, stochastic)
    colors, densities = _evaluate(planes, decoder, origins, directions, depths, options, stochastic)
    white_back = bool(options.get("white_back", False))
    fine = int(options.get("depth_resolution_importance", 0))
    if fine > 0:
        _, _, weights = composite(colors, densities, depths, white_back)
        fine_depths = importance_depths(depths, weights, fine, stochastic)
        fine_colors, fine_densities = _evaluate(
            planes, decoder, origins, directions, fine_depths, options, stochastic
        )
        depths = torch.cat([depths, fine_depths], dim=-2)
        colors = torch.cat([colors, fine_colors], dim=-2)
        densities = torch.cat([densities, fine_densities], dim=-2)
        depths, order = torch.sort(depths, dim=-2)
        colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
        densities = torch.gather(densities, -2, order)
    rgb, depth, _ = composite(colors, densities, depths, white_back)
    return rgb, depth
