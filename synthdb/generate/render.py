"""``synthdb generate image``: a generator's images, from seeds or from a saved sample's latents, in a file.

Reproducible by construction: z comes from a private ``torch.Generator`` seeded with ``seed`` (not the
global RNG, so nothing else in the process changes it), synthesis uses constant noise, and pixels are
rounded (the reference truncated), so the same seed gives a byte-identical PNG and a saved image is the
image of its saved latent. Several images are tiled into one grid, as the reference does.

EG3D renders from a camera (``fov``, ``pitch``, ``yaw`` in degrees). Seeds are mapped with the frontal
camera as their conditioning label, as NVIDIA's ``gen_samples.py`` does, so pitch and yaw change the view of
an identity and not the identity (the reference conditioned on the rendering camera). A sample file's
``c_label`` is its camera unless one is given. Depth maps are saved raw, as float32 ``.npy`` (N, h, w) next
to the image: distances along each ray at the neural rendering resolution, in the network's world units.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from synthdb import defaults, zoo
from synthdb.errors import SynthdbError
from synthdb.files import write_atomically
from synthdb.nets.eg3d import DEFAULT_FOV
from synthdb.nets.generator import Generator, to_uint8
from synthdb.store.hdf5 import H5Sample, read_sample

GRID_COLUMNS = 8
BATCH_SIZE = 32


@dataclass(frozen=True)
class GeneratedImages:
    """What :func:`generate_images` wrote: the file, how many images (tiled ``columns`` x ``rows``), the
    generator as it describes itself, and where the latents came from."""

    path: Path
    count: int
    columns: int
    rows: int
    generator: str
    source: str
    depth_path: Path | None = None


def latents_from_seed(
    generator: Generator, seed: int, num: int, truncation: float, c: Tensor | None = None
) -> Tensor:
    """w+ (num, num_ws, w_dim) of ``num`` z drawn from ``seed``, on the CPU: every device gets the same z.
    Conditional generators need their label ``c`` (1 or num rows; EG3D: a camera)."""
    if generator.c_dim and c is None:
        raise SynthdbError(
            f"{generator.describe()} is conditional (c_dim = {generator.c_dim}): generate from "
            "a sample that carries its label (--latents SAMPLE.h5 with a c_label)"
        )
    z = torch.randn(num, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.cat(
            [
                generator.mapping(chunk.to(generator.device), label, truncation_psi=truncation, w_plus=True)
                for chunk, label in zip(z.split(BATCH_SIZE), _label_chunks(c, num), strict=True)
            ]
        )


def _label_chunks(c: Tensor | None, num: int) -> list[Tensor | None]:
    chunks = -(-num // BATCH_SIZE)
    if c is None or len(c) == 1:
        return [c] * chunks
    return list(c.split(BATCH_SIZE))


def latents_from_sample(
    generator: Generator, path: str | os.PathLike, truncation: float, w_plus: bool = False
) -> tuple[Tensor, Tensor | None, str]:
    """(w or w+ with a batch of 1, label c or None, which field was used) from a reference Sample file.

    Like the reference: ``w_latent`` unless ``w_plus`` is asked for or is all there is; a sample with only
    ``z_latent`` goes through the mapping (with ``truncation``). Unlike it, an EG3D sample's ``c_label`` is
    used, not ignored.
    """
    sample = read_sample(path)
    _check_network_type(generator, sample, path)
    c = None
    if generator.c_dim:
        if sample.c_label is None or sample.c_label.shape != (generator.c_dim,):
            found = "none" if sample.c_label is None else f"shape {sample.c_label.shape}"
            raise SynthdbError(
                f"{path}: {generator.describe()} needs a c_label of shape ({generator.c_dim},), "
                f"the sample has {found}: use a sample written for this generator"
            )
        c = torch.from_numpy(sample.c_label)[None].to(generator.device)
    fields = ["w_plus_latent", "w_latent"] if w_plus else ["w_latent", "w_plus_latent"]
    for field in [*fields, "z_latent"]:
        value = getattr(sample, field)
        if value is None:
            continue
        latent = torch.from_numpy(value)[None].to(generator.device)
        expected = {
            "w_plus_latent": (generator.num_ws, generator.w_dim),
            "w_latent": (generator.w_dim,),
            "z_latent": (generator.z_dim,),
        }[field]
        if tuple(value.shape) != expected:
            raise SynthdbError(
                f"{path}: {field} has shape {value.shape}, but {generator.describe()} needs "
                f"{expected}: the sample was made with another generator"
            )
        if field == "z_latent":
            with torch.no_grad():
                latent = generator.mapping(latent, c, truncation_psi=truncation)
        return latent, c, field
    raise SynthdbError(
        f"{path} holds no latent (z_latent, w_latent or w_plus_latent): pass a sample that has one"
    )


def _check_network_type(generator: Generator, sample: H5Sample, path: str | os.PathLike) -> None:
    """A named generator must be the one the sample says it came from (reference names count too); a bare
    file only gets the shape checks."""
    stored = sample.network_type
    if not generator.name or stored is None:
        return
    if generator.name not in (stored, zoo.REFERENCE_NAMES.get(stored)):
        raise SynthdbError(
            f"{path} holds latents of {stored}, not {generator.name}: pass "
            f"--generator {zoo.REFERENCE_NAMES.get(stored, stored)}"
        )


def tile(pixels: np.ndarray, columns: int = GRID_COLUMNS) -> np.ndarray:
    """One image from N: ``min(N, columns)`` per row, no padding, empty cells black (reference layout)."""
    n, h, w, ch = pixels.shape
    cols = min(n, columns)
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * cols, h, w, ch), dtype=np.uint8)
    grid[:n] = pixels
    return grid.reshape(rows, cols, h, w, ch).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, ch)


def save_image(pixels: np.ndarray, out: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 image; the format follows the extension (PNG is lossless). Atomic."""
    out = Path(out)
    if out.suffix.lower() not in Image.registered_extensions():
        raise SynthdbError(f"{out}: unknown image extension {out.suffix!r}; use .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return write_atomically(out, Image.fromarray(pixels).save)
    except OSError as error:
        raise SynthdbError(f"cannot write {out} ({error}): check the directory is writable") from None


def render(
    generator: str, out: str | os.PathLike, *, workspace: str | os.PathLike | None = None,
    device: str | None = None, **options: Any
) -> GeneratedImages:
    """``synthdb generate image``: load ``generator`` (a card only a workspace has comes from the workspace
    at ``workspace``, found as every command finds it; anything else loads anywhere) and
    :func:`generate_images` with ``options``."""
    with zoo.workspace_for([generator], workspace) as ctx:
        network = zoo.generator(ctx, generator, device)
    return generate_images(network, out, **options)


def generate_images(
    generator: Generator,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    num: int = 1,
    truncation: float = defaults.TRUNCATION,
    latents: str | os.PathLike | None = None,
    w_plus: bool = False,
    noise_mode: str = "const",
    columns: int = GRID_COLUMNS,
    fov: float | None = None,
    pitch: float | None = None,
    yaw: float | None = None,
    save_depth: bool = False,
) -> GeneratedImages:
    """Synthesize ``num`` images from ``seed`` (or one from the sample file ``latents``) and save them to
    ``out``, tiled ``columns`` per row when there are several. EG3D: render from the camera ``fov`` /
    ``pitch`` / ``yaw`` (degrees; defaults 18 / 0 / 0) and, with ``save_depth``, write the depth maps to
    ``OUT_depth.npy``."""
    if num < 1:
        raise SynthdbError(f"--num must be at least 1, got {num}")
    posed = any(v is not None for v in (fov, pitch, yaw))
    eg3d = generator.architecture.synthesis_takes_c
    if (posed or save_depth) and not eg3d:
        raise SynthdbError(
            f"--fov/--pitch/--yaw and --save-depth need a generator that renders from a camera (EG3D); "
            f"{generator.describe()} does not: drop them"
        )
    fov = DEFAULT_FOV if fov is None else fov
    camera = generator.camera(fov, pitch or 0.0, yaw or 0.0) if eg3d else None
    if latents is not None:
        w, c, field = latents_from_sample(generator, latents, truncation, w_plus)
        source = f"{field} of {latents}"
        if eg3d and posed:
            c = camera
    else:
        w = latents_from_seed(generator, seed, num, truncation, generator.camera(fov) if eg3d else None)
        c = camera
        source = f"seed {seed}, truncation {truncation}"
    if eg3d and c is camera:
        source += f", camera fov {fov:g} pitch {pitch or 0:g} yaw {yaw or 0:g}"
    images, depths = [], []
    with torch.no_grad():
        for chunk in w.split(BATCH_SIZE):
            if eg3d:
                rendering = generator.render(chunk, c, noise_mode=noise_mode)
                images.append(rendering.image)
                depths.append(rendering.depth[:, 0].float().cpu())
            else:
                images.append(generator.synthesis(chunk, c, noise_mode=noise_mode))
    pixels = to_uint8(torch.cat(images))
    path = save_image(tile(pixels, columns), out)
    depth_path = save_depth_map(torch.cat(depths).numpy(), path) if save_depth else None
    cols = min(len(pixels), columns)
    return GeneratedImages(
        path, len(pixels), cols, math.ceil(len(pixels) / cols), generator.describe(), source, depth_path
    )


def depth_path_for(image: str | os.PathLike) -> Path:
    """Where the depth maps of ``image`` go: ``NAME_depth.npy`` beside it."""
    image = Path(image)
    return image.with_name(f"{image.stem}_depth.npy")


def save_depth_map(depth: np.ndarray, image: str | os.PathLike) -> Path:
    """Write float32 depth maps (N, h, w) beside ``image`` (see :func:`depth_path_for`). Atomic."""
    out = depth_path_for(image)
    try:
        return write_atomically(out, lambda tmp: np.save(tmp, depth.astype(np.float32)))
    except OSError as error:
        raise SynthdbError(f"cannot write {out} ({error}): check the directory is writable") from None
