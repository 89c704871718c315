"""Projection (GAN inversion): the latent, and the noise, that make a generator draw a given aligned face.

Algorithm (reference spec 9.1): W statistics from ``w_avg_samples`` random z; start every target at
w_avg; Adam over its latent (W, or W+ with one row per synthesis layer) and its own noise images; at
step ``s`` of ``steps`` (``t = s / steps``) the learning rate ramps up over the first 5 % and down by a
half cosine over the last 25 %, the latent is shaken by ``sigma_w * 0.05 * max(0, 1 - t / 0.75)^2``
Gaussian noise, and the loss is a perceptual distance plus a pixel distance plus the noise
regulariser (squared autocorrelation of every noise image at every pyramid level down to 8x8,
weight 1e5); after each step every noise image is renormalised to zero mean and unit variance.

Perceptual distance (``perceptual``): ``lpips``, as the reference, or ``embedder``. The reference
called NVIDIA's ``vgg16.pkl`` (LPIPS v0.1 on VGG16) on images mapped to [0, 255] and area-resized to
256x256 when larger, and took the squared L2 distance of its ``return_lpips`` features, which is the
LPIPS distance. synthdb's ``lpips`` computes the same with its own LPIPS (:mod:`synthdb.nets.lpips`,
whose features are that form: distance = squared L2) from the user-registered cards
``vgg16-imagenet`` and ``lpips-vgg-v0.1``: the same area resize, in [-1, 1] (LPIPS's own input
range; the map to [0, 255] and back is affine, so it commutes with the resize). ``embedder`` uses the
embedder's own intermediate features (dlib-resnet by default: the outputs of its residual blocks) on
the crop the embedder reads, each feature vector normalised over channels as LPIPS does, squared
differences averaged over positions and summed over layers. The default is ``lpips`` when both LPIPS
files are in the workspace, else ``embedder``; the choice is made when a run starts and stored in its
params. The pixel distance is the mean squared error in [-1, 1] over the whole image (the FR crop
sees only the face). The reference's loss had no pixel term (``--pixel-weight 0`` drops it).

Noise images start as copies of the generator's constant noise buffers, one copy per target. The
reference drew fresh N(0, 1) images (the same distribution); starting from the constant noise keeps
the optimised noise near the noise that stored latents render with (the optimised noise is not
stored: every latent in the catalog renders with the generator's constant noise).

Batched: several targets are optimised together, each with its own latent, noise images and random
draws (seeded by the run seed and the target's key), and the loss is a sum of per-target terms, so
each target's trajectory is the one it would have alone (Adam is elementwise); batching only fills
the convolutions.

Output: a ``synthetic`` dataset of source ``projection``; one sample per projected source sample or
image, role ``projection``, key the source's key (or file name), identity the source's, attributes
``source_sample_id``, ``source_key``, ``final_loss``, ``steps``; the latents as a ``latent`` shard
(column ``w``, or ``w_plus`` with ``--space w+``) in the generator's space; the per-step losses as a
``stats`` shard. Work units are fixed batches of the selection; a job-array shard takes every
``num_shards``-th unit. Resume is per sample: a target whose key is already in the output dataset
(or whose file could not be used, recorded as a sample issue) is not projected again.

Fixed against the reference: W statistics use the untruncated mapping (psi 1, not the Generator's
default 0.5); ``--group all`` selects every group of the protocols (it passed protocol names as
groups); noise is optimised for any generator that has noise buffers (not only one named
``stylegan2``); targets are batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from synthdb import defaults, seeds, zoo
from synthdb.catalog import datasets, issues, runs, samples
from synthdb.catalog import protocols as protocol_rows
from synthdb.catalog.datasets import dataset_id, get_dataset
from synthdb.catalog.schema import RunKind, SampleRole, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.faces.align import Cropper, CropPreset, fixed_crop, generator_preset, resize
from synthdb.faces.detect import load_image
from synthdb.faces.embed import Embedder
from synthdb.latent.params import ProjectionParams
from synthdb.nets import lpips
from synthdb.nets.generator import Generator, to_uint8
from synthdb.progress import progress_bar
from synthdb.store.commit import NewSamples, ShardSpec, TableSpec, commit

#: images larger than this are area-resized to it before LPIPS (reference spec 9.1, step 6)
LPIPS_SIZE = 256
#: per-step loss terms recorded in the stats shard, per target
TERMS = ("loss", "perceptual", "pixel", "noise_reg")
VIDEO_FRAMES = 100
VIDEO_HEIGHT = 256


def learning_rate(params: ProjectionParams, t: float) -> float:
    """The reference schedule at progress ``t`` in [0, 1): linear ramp-up, half-cosine ramp-down."""
    if params.constant_learning_rate:
        return params.initial_learning_rate
    down = min(1.0, (1.0 - t) / params.lr_rampdown_length)
    ramp = (0.5 - 0.5 * math.cos(down * math.pi)) * min(1.0, t / params.lr_rampup_length)
    return params.initial_learning_rate * ramp


def w_statistics(generator: Generator, samples: int, seed: int) -> tuple[Tensor, float]:
    """(mean w, sigma_w) of ``samples`` untruncated mappings: sigma_w = sqrt(mean ||w - mean||^2)."""
    z = torch.randn(samples, generator.z_dim, generator=seeds.rng(seed, "w_stats"))
    with torch.no_grad():
        w = torch.cat([generator.mapping(c.to(generator.device)) for c in z.split(4096)]).double()
    mean = w.mean(0)
    return mean.float(), float((w - mean).square().sum(1).mean().sqrt())


def feature_layers(net: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the perceptual features: dlib-resnet's residual blocks, or the
    four stages of an (i)ResNet."""
    if isinstance(getattr(net, "blocks", None), nn.ModuleList):
        return list(net.blocks)
    stages = [getattr(net, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(s, nn.Module) for s in stages):
        return stages
    raise SynthdbError(
        f"{type(net).__name__} has no residual stages synthdb can read features from: "
        "use --embedder dlib-resnet for the perceptual loss"
    )


class EmbedderFeatures:
    """Channel-normalised intermediate features of an embedder on its crop of generator-framed images."""

    def __init__(self, embedder: Embedder, native: CropPreset) -> None:
        self.embedder = embedder
        self.native = native
        self.layers = feature_layers(embedder.net)
        embedder.net.requires_grad_(False).eval()

    def __call__(self, images: Tensor) -> list[Tensor]:
        """Features of images (N, 3, R, R) in [-1, 1]; differentiable."""
        captured: list[Tensor] = []
        hooks = [
            layer.register_forward_hook(lambda _m, _i, out: captured.append(out)) for layer in self.layers
        ]
        try:
            crops = fixed_crop((images + 1) * 127.5, self.native, self.embedder.preset)
            self.embedder.embed(crops)
        finally:
            for hook in hooks:
                hook.remove()
        return [f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10) for f in captured]

    #: squared differences summed over channels, averaged over positions, summed over layers (as LPIPS)
    distance = staticmethod(lpips.distance)


class LpipsFeatures:
    """LPIPS VGG16 features of generator images, as the reference's projector took them: images larger
    than 256x256 area-resized to 256x256 first."""

    def __init__(self, net: lpips.LPIPS) -> None:
        self.net = net

    def __call__(self, images: Tensor) -> list[Tensor]:
        """Features of images (N, 3, R, R) in [-1, 1]; differentiable."""
        if images.shape[2] > LPIPS_SIZE:
            images = F.interpolate(images, size=(LPIPS_SIZE, LPIPS_SIZE), mode="area")
        return self.net(images)

    #: their squared L2 distance is the LPIPS distance
    distance = staticmethod(lpips.distance)


Perceptual = EmbedderFeatures | LpipsFeatures


def lpips_ready(ctx: Context) -> bool:
    """Whether the workspace has both LPIPS files (its VGG16 trunk and its heads)."""
    return all(zoo.weights_path(ctx, name) is not None for name in zoo.LPIPS_CARDS)


def choose_perceptual(ctx: Context, params: ProjectionParams) -> ProjectionParams:
    """``params`` with its perceptual loss decided: by default lpips when both its files are in the
    workspace, else embedder; an explicit lpips without them is an error."""
    if params.perceptual is None:
        return replace(params, perceptual="lpips" if lpips_ready(ctx) else "embedder")
    if params.perceptual == "lpips" and not lpips_ready(ctx):
        missing = [name for name in zoo.LPIPS_CARDS if zoo.weights_path(ctx, name) is None]
        raise SynthdbError(
            f"--perceptual lpips needs the weights of {' and '.join(missing)}: add them with "
            f"`synthdb models add {missing[0]} --file PATH` (the card, `synthdb models show {missing[0]}`, "
            "says where to get it), or use --perceptual embedder"
        )
    return params


def load_perceptual(ctx: Context, params: ProjectionParams, generator: Generator) -> Perceptual:
    """The feature extractor of a run whose perceptual loss is decided (:func:`choose_perceptual`), its
    networks from the workspace ``ctx``."""
    if params.perceptual == "lpips":
        return LpipsFeatures(zoo.perceptual(ctx, params.device))
    return EmbedderFeatures(
        zoo.embedder(ctx, params.embedder, params.device),
        generator_preset(generator.framing, generator.img_resolution),
    )


def noise_regularization(noise: Sequence[Tensor]) -> Tensor:
    """Per-image (N,) sum of squared one-pixel autocorrelations (x and y) of every noise image (N, 1,
    H, W), at every level of its 2x2-average pyramid down to 8x8."""
    reg = noise[0].new_zeros(noise[0].shape[0])
    for n in noise:
        while True:
            reg = reg + (n * n.roll(1, dims=3)).mean((1, 2, 3)).square()
            reg = reg + (n * n.roll(1, dims=2)).mean((1, 2, 3)).square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return reg


@dataclass
class Projection:
    """Result of :meth:`Projector.project` for N targets: final latents (N, w_dim) or (N, num_ws,
    w_dim), the loss terms per step (steps + 1, N) (the last row at the final latents, without the
    latent shake), the final images (N, 3, R, R) and, when asked, video frames (F, N, H, 2H, 3) uint8."""

    w: Tensor
    history: dict[str, np.ndarray]
    images: Tensor
    frames: np.ndarray | None = None

    @property
    def final_loss(self) -> np.ndarray:
        return self.history["loss"][-1]


class Projector:
    """Projects batches of aligned targets into one generator's W or W+ space."""

    def __init__(
        self, generator: Generator, perceptual: Embedder | Perceptual, params: ProjectionParams
    ) -> None:
        """``perceptual``: the features of the perceptual loss, or an embedder whose features they are."""
        if generator.c_dim:
            raise SynthdbError(
                f"{generator.describe()} is conditional (c_dim {generator.c_dim}): projection needs a "
                "camera label for it, which synthdb cannot estimate yet"
            )
        self.generator, self.params = generator, params
        self.features = (
            EmbedderFeatures(perceptual, generator_preset(generator.framing, generator.img_resolution))
            if isinstance(perceptual, Embedder)
            else perceptual
        )
        self.w_avg, self.w_std = w_statistics(generator, params.w_avg_samples, params.seed)
        self.noise_const = {  # StyleGAN2's per-layer noise; StyleGAN3 and DCGAN have none
            name.removeprefix("synthesis.").removesuffix(".noise_const"): buf.detach()
            for name, buf in generator.network.named_buffers()
            if name.endswith(".noise_const")
        }

    def _synthesize(self, w: Tensor, noise: dict[str, Tensor]) -> Tensor:
        """Images of w (N, w_dim) or w+ with per-target noise (StyleGAN2), or with none (StyleGAN3)."""
        if not noise:
            return self.generator.synthesis(w, noise_mode="const")
        ws = w if w.ndim == 3 else w.unsqueeze(1).expand(-1, self.generator.num_ws, -1)
        return self.generator.network.synthesis(ws, noise_mode="const", noise=noise)

    def _terms(
        self, images: Tensor, target: Tensor, target_features: list[Tensor], noise: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Every loss term per target (N,), and their weighted sum ``loss``."""
        p, n = self.params, len(images)
        terms = {
            "perceptual": (
                self.features.distance(self.features(images), target_features)
                if p.perceptual_weight
                else images.new_zeros(n)
            ),
            "pixel": (images - target).square().mean((1, 2, 3)),
            "noise_reg": noise_regularization(list(noise.values())) if noise else images.new_zeros(n),
        }
        terms["loss"] = (
            p.perceptual_weight * terms["perceptual"]
            + p.pixel_weight * terms["pixel"]
            + p.regularize_noise_weight * terms["noise_reg"]
        )
        return terms

    def project(
        self,
        targets: Tensor,
        keys: Sequence[str],
        on_step: Callable[[int], None] | None = None,
        frames: int = 0,
    ) -> Projection:
        """Project targets (N, 3, R, R) in [-1, 1]; ``keys`` name their random draws; ``on_step(N)``
        follows progress (target-steps done); ``frames`` > 0 keeps about that many video frames."""
        p, gen = self.params, self.generator
        dev = gen.device
        target = targets.to(dev, torch.float32)
        draws = [seeds.rng(p.seed, "project", key) for key in keys]
        n = len(keys)
        with torch.no_grad():
            target_features = self.features(target) if p.perceptual_weight else []
            if p.start_wavg:
                start = self.w_avg.to(dev).expand(n, -1).clone()
            else:
                z = torch.cat([torch.randn(1, gen.z_dim, generator=g) for g in draws]).to(dev)
                start = gen.mapping(z, truncation_psi=p.truncation)
        w = (start.unsqueeze(1).repeat(1, gen.num_ws, 1) if p.space == "w+" else start).requires_grad_(True)
        noise = {
            name: buf.expand(n, 1, *buf.shape).clone().requires_grad_(True)
            for name, buf in self.noise_const.items()
        }
        optimizer = torch.optim.Adam([w, *noise.values()], betas=(0.9, 0.999), lr=p.initial_learning_rate)
        history: dict[str, list[np.ndarray]] = {term: [] for term in TERMS}
        every = max(1, p.steps // frames) if frames else 0
        kept: list[np.ndarray] = []
        for step in range(p.steps):
            t = step / p.steps
            scale = self.w_std * p.initial_noise_factor * max(0.0, 1.0 - t / p.noise_ramp_length) ** 2
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(p, t)
            shake = torch.stack([torch.randn(w.shape[1:], generator=g) for g in draws]).to(dev)
            images = self._synthesize(w + scale * shake, noise)
            terms = self._terms(images, target, target_features, noise)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].sum().backward()
            optimizer.step()
            with torch.no_grad():
                for buf in noise.values():
                    buf -= buf.mean((1, 2, 3), keepdim=True)
                    buf *= buf.square().mean((1, 2, 3), keepdim=True).rsqrt()
            for term in TERMS:
                history[term].append(terms[term].detach().cpu().numpy())
            if every and step % every == 0:
                kept.append(_frame(target, images.detach()))
            if on_step is not None:
                on_step(n)
        with torch.no_grad():
            images = self._synthesize(w, noise)
            terms = self._terms(images, target, target_features, noise)
        for term in TERMS:
            history[term].append(terms[term].cpu().numpy())
        if every:
            kept.append(_frame(target, images))
        return Projection(
            w.detach(),
            {term: np.stack(rows) for term, rows in history.items()},
            images,
            np.stack(kept) if kept else None,
        )


def _frame(target: Tensor, images: Tensor) -> np.ndarray:
    """Target | synthesis side by side, (N, H, 2H, 3) uint8, at most VIDEO_HEIGHT pixels high."""
    pair = torch.cat([target, images], dim=3)
    if pair.shape[2] > VIDEO_HEIGHT:
        pair = F.interpolate(pair, size=(VIDEO_HEIGHT, 2 * VIDEO_HEIGHT), mode="area")
    return to_uint8(pair)


def write_video(path: Path, frames: np.ndarray, duration_ms: int = 40) -> Path:
    """An animated GIF of frames (F, H, W, 3) uint8: no video encoder is a synthdb dependency, PIL
    writes GIF."""
    first, *rest = [Image.fromarray(f) for f in frames]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        first.save(path, save_all=True, append_images=rest, duration=duration_ms, loop=0)
    except OSError as error:
        raise SynthdbError(
            f"cannot write the projection video {path} ({error.strerror or error}): pass a writable --video "
            "directory; projections committed so far are kept"
        ) from None
    return path


# --- targets ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One thing to project: a source sample (``sample_id`` set) or an image file."""

    key: str
    path: Path
    sample_id: int | None = None
    identity: str | None = None


def image_targets(paths: Sequence[str]) -> list[Target]:
    """Targets of image files, keyed by file name (names must be unique: they are the sample keys)."""
    targets = [Target(Path(p).name, Path(p)) for p in paths]
    seen: set[str] = set()
    for t in targets:
        if t.key in seen:
            raise SynthdbError(f"two images are named {t.key}: rename one (file names are the sample keys)")
        seen.add(t.key)
    return targets


def dataset_targets(ctx: Context, name: str, protocols: Sequence[str], group: str | None) -> list[Target]:
    """The samples of ``name`` to project, by sample id: all of them, or the members of ``group``
    (default ``train``; ``all``: every group) of ``protocols`` (default: every protocol of the
    dataset when only a group is given)."""
    dataset = get_dataset(ctx.catalog, name)
    in_groups = _chosen_groups(ctx, dataset.id, name, protocols, group) if protocols or group else None
    rows = list(samples.listing(ctx.catalog, dataset.id, in_groups))
    if not rows:
        raise SynthdbError(f"the selection of dataset {name} holds no samples: check --protocol / --group")
    if dataset.root is None or any(r.path is None for r in rows):
        raise SynthdbError(
            f"dataset {name} has samples without image files (latent-only): render them first "
            "(`synthdb generate images`) or project a dataset of images"
        )
    return [Target(r.key, Path(dataset.root) / r.path, r.id, r.identity) for r in rows]


def _chosen_groups(
    ctx: Context, dataset: int, name: str, protocols: Sequence[str], group: str | None
) -> list[int]:
    """Ids of the protocol groups whose members are projected (see :func:`dataset_targets`)."""
    known = protocol_rows.protocols_of(ctx.catalog, dataset)
    if missing := [p for p in protocols if p not in known]:
        raise SynthdbError(
            f"dataset {name} has no protocol {', '.join(missing)} "
            f"(it has: {', '.join(sorted(known)) or 'none'}): check --protocol"
        )
    chosen = [known[p] for p in protocols] if protocols else list(known.values())
    groups = protocol_rows.groups_of(ctx.catalog, chosen)
    wanted = group or "train"
    if wanted == "all":
        return [group_id for ids in groups.values() for group_id in ids]
    if wanted not in groups:
        raise SynthdbError(
            f"the protocols of {name} have no group {wanted!r} "
            f"(they have: {', '.join(sorted(groups)) or 'none'}, or all): check --group"
        )
    return groups[wanted]


def load_targets(
    targets: Sequence[Target], resolution: int, cropper: Cropper | None
) -> tuple[Tensor, list[Target], list[tuple[Target, dict[str, Any]]]]:
    """(images (M, 3, R, R) in [-1, 1], the M targets that loaded, (target, issue) of the others).

    Without a cropper an image must be square (an aligned face); it is resized to ``resolution``."""
    images, ok, failed = [], [], []
    for target in targets:
        try:
            pixels = torch.from_numpy(load_image(target.path).copy()).permute(2, 0, 1)[None].float()
        except SynthdbError as exc:
            failed.append((target, {"kind": "unreadable", "detail": {"error": str(exc)}}))
            continue
        if cropper is not None:
            with torch.no_grad():
                crops, statuses = cropper(pixels)
            if not statuses[0].ok:
                kind = "no_face" if statuses[0].faces == 0 else "detector_error"
                failed.append((target, {"kind": kind, "detail": {"error": statuses[0].error}}))
                continue
            pixels = crops
        elif pixels.shape[2] != pixels.shape[3]:
            h, w = pixels.shape[2:]
            error = f"{target.path} is {w}x{h}, not a square aligned face: pass --crop to align photos"
            failed.append((target, {"kind": "not_aligned", "detail": {"error": error}}))
            continue
        if pixels.shape[2] != resolution:
            pixels = resize(pixels, (resolution, resolution))
        images.append(pixels / 127.5 - 1)
        ok.append(target)
    empty = torch.zeros(0, 3, resolution, resolution)
    return (torch.cat(images) if images else empty), ok, failed


# --- runs ---------------------------------------------------------------------------------------------------


def _done(ctx: Context, dataset: int, source: int | None, name: str) -> set[str]:
    """Keys already projected into the output dataset, and source keys with a recorded issue."""
    keys = samples.sample_keys(ctx.catalog, dataset)
    if source is not None:
        found = issues.details_by_key(ctx.catalog, source)
        keys |= {key for key, detail in found if detail.get("projection") == name}
    return keys


def _params_key(params: ProjectionParams) -> dict[str, Any]:
    """What makes two runs' projections the same (a re-run may add to the dataset): all but the
    work split, the device and the video."""
    data = asdict(params)
    for name in ("batch_size", "device", "video"):
        data.pop(name)
    return data


@dataclass(frozen=True)
class ProjectionRun:
    """What :func:`project` did: its run, this shard's targets, how many it projected (the others were
    done before) and the perceptual loss it used (chosen when the run started)."""

    run_id: int
    targets: int
    projected: int
    perceptual: str


def project(
    ctx: Context,
    params: ProjectionParams,
    run_id: int | None = None,
    shard: tuple[int, int] = (0, 1),
    quiet: bool = True,
) -> ProjectionRun:
    """Run (or, with ``run_id``, resume) one shard of a projection run."""
    params.check()
    params = replace(choose_perceptual(ctx, params), device=defaults.device(params.device))
    source = dataset_id(ctx.catalog, params.dataset) if params.dataset else None
    targets = (
        dataset_targets(ctx, params.dataset, params.protocols, params.group)
        if params.dataset
        else image_targets(params.images)
    )
    size = params.batch_size
    units = [(j, targets[j : j + size]) for j in range(0, len(targets), size)][shard[0] :: shard[1]]
    total = sum(len(batch) for _, batch in units)
    attributes = {"projection_of": params.dataset or "images", "params": _params_key(params)}
    with runs.recorded_run(
        ctx.catalog, RunKind.PROJECT, params.space, asdict(params), params.seed, shard, resume=run_id
    ) as run_id:
        dataset = datasets.output_dataset(
            ctx.catalog, params.name, run_id, attributes, shared=True, source="projection"
        )
        done = _done(ctx, dataset, source, params.name)
        pending = [(start, [t for t in batch if t.key not in done], len(batch)) for start, batch in units]
        projected = 0
        if any(todo for _, todo, _ in pending):  # models load only when there is something to project
            projected = _project_units(ctx, params, run_id, dataset, pending, total, quiet)
        runs.set_progress(ctx.catalog, run_id, 1.0)
        runs.set_summary(
            ctx.catalog, run_id, {"dataset": params.name, "targets": total, "projected": projected}
        )
    return ProjectionRun(run_id, total, projected, str(params.perceptual))


def _project_units(
    ctx: Context,
    params: ProjectionParams,
    run_id: int,
    dataset: int,
    pending: list[tuple[int, list[Target], int]],
    total: int,
    quiet: bool,
) -> int:
    """Project and commit each unit's pending targets; return how many were projected."""
    generator = zoo.generator(ctx, params.generator, params.device)
    projector = Projector(generator, load_perceptual(ctx, params, generator), params)
    cropper = (
        Cropper(
            params.detector,
            generator_preset(generator.framing, generator.img_resolution),
            detector=zoo.detector(ctx, params.detector, params.device),
            value_range=(0.0, 255.0),
        )
        if params.crop
        else None
    )
    finished = projected = 0
    with progress_bar(total * params.steps, "projection target-steps", quiet) as advance:
        for start, todo, count in pending:
            finished += count
            if not todo:
                advance(count * params.steps)
                continue
            images, ok, failed = load_targets(todo, generator.img_resolution, cropper)
            if failed and params.images:
                target, issue = failed[0]
                raise SynthdbError(f"cannot project {target.path}: {issue['detail']['error']}")
            result = None
            if ok:
                frames = VIDEO_FRAMES if params.video else 0
                result = projector.project(images, [t.key for t in ok], advance, frames)
            if result is not None and result.frames is not None:  # before the commit: a resume redoes them
                for i, target in enumerate(ok):
                    name = Path(target.key.replace("/", "_")).stem
                    write_video(Path(params.video) / f"{name}.gif", result.frames[:, i])
            _commit_unit(ctx, params, generator, dataset, run_id, f"targets/{start:06d}", ok, result, failed)
            advance((count - len(ok)) * params.steps)
            projected += len(ok)
            runs.set_progress(ctx.catalog, run_id, finished / max(total, 1))
    return projected


def _commit_unit(
    ctx: Context,
    params: ProjectionParams,
    generator: Generator,
    dataset: int,
    run_id: int,
    unit: str,
    ok: list[Target],
    result: Projection | None,
    failed: list[tuple[Target, dict[str, Any]]],
) -> None:
    """One unit's projections (samples, latent shard, per-step losses) and the issues of the targets
    that could not be projected, in one transaction."""
    problems = [
        issues.Issue(
            target.sample_id,
            issue["kind"],
            {**issue["detail"], "projection": params.name},
            generator.name,
            run_id,
        )
        for target, issue in failed
        if target.sample_id is not None
    ]
    if result is None:
        issues.record(ctx.catalog, problems)
        return
    steps = result.history["loss"].shape[0]
    keys = [t.key for t in ok]
    stats = {
        "key": np.repeat(np.array(keys, dtype=object), steps),
        "step": np.tile(np.arange(steps), len(keys)),
        **{term: result.history[term].T.reshape(-1).astype(np.float64) for term in TERMS},
    }
    with_identity = all(t.identity is not None for t in ok)
    column = "w_plus" if params.space == "w+" else "w"
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=dataset,
        run_id=run_id,
        unit=unit,
        samples=NewSamples(
            keys=keys,
            role=SampleRole.PROJECTION,
            identity_labels=[t.identity for t in ok] if with_identity else None,
            labels=["projection"] * len(ok),
            attributes=[
                {
                    "source_sample_id": t.sample_id,
                    "source_key": t.key,
                    "final_loss": float(loss),
                    "steps": params.steps,
                }
                for t, loss in zip(ok, result.final_loss, strict=True)
            ],
        ),
        shards=[ShardSpec(ShardContent.LATENT, generator.name, {column: result.w.cpu().numpy()})],
        tables=[TableSpec(ShardContent.STATS, generator.name, stats)],
        issues=problems,
    )
