"""``synthdb generate images DATASET``: the images of a generated dataset's stored latents.

Each sample's image is rendered from its stored ``w`` with constant noise, so it is exactly the image
of the saved latent (the reference re-rendered with random noise), optionally reframed into a crop
preset (``--crop arcface``), and written as ``<root>/<key>.png`` (``00042/augmentation_3.png``).
Paths are recorded on the samples batch by batch in one transaction each; a re-run skips samples
that have a path and a file, so an interrupted run just continues.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthdb import zoo
from synthdb.analysis.vectors import load_vectors
from synthdb.catalog.datasets import dataset_id, get_dataset, latent_spaces, set_root
from synthdb.catalog.runs import recorded_run, set_progress, set_summary
from synthdb.catalog.samples import sample_columns, set_paths
from synthdb.catalog.schema import RunKind, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.faces.align import fixed_crop, generator_preset, get_preset
from synthdb.generate.render import save_image
from synthdb.nets.generator import to_uint8
from synthdb.progress import progress_bar


@dataclass(frozen=True)
class RenderedImages:
    """What ``synthdb generate images`` did: how many images it wrote, and the folder they are in."""

    count: int
    root: Path


def generate_dataset_images(
    ctx: Context,
    name: str,
    generator: str | None = None,
    crop: str | None = None,
    root: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    quiet: bool = True,
) -> RenderedImages:
    """Render every stored latent of dataset ``name`` into its root; return how many images this call
    wrote and where. ``generator`` defaults to the one whose latents the dataset holds.

    What a stored latent gives back: the same pixels, bit for bit, for the same ``batch_size`` on the
    same machine and torch build; with another batching or CPU the float kernels may round differently,
    so a pixel may differ by one level (1/255) - never more (``tests/cli/test_generate_cmds.py``)."""
    ds = dataset_id(ctx.catalog, name)
    if generator is None:
        spaces = latent_spaces(ctx.catalog, ds)
        if len(spaces) != 1:
            found = f"latents of {', '.join(spaces)}" if spaces else "no latents"
            raise SynthdbError(f"dataset {name} has {found}: pass --generator")
        generator = spaces[0]
    gen = zoo.generator(ctx, generator, device)
    native = generator_preset(gen.framing, gen.img_resolution)
    if crop is not None:
        preset = get_preset(crop)
        if not preset.has_eyes or preset.size is None:
            raise SynthdbError(f"--crop {crop} has no fixed eye positions: use arcface, dlib150 or ffhq*")
    latents = load_vectors(ctx, name, gen.name, ShardContent.LATENT, "w").by_sample()
    sample_ids, w = latents.sample_ids, latents.vectors
    current = get_dataset(ctx.catalog, name).root
    target = Path(root or current or ctx.ws.root / "datasets" / name).resolve()
    if current is not None and Path(current).resolve() != target:
        raise SynthdbError(f"dataset {name} has its images in {current}: drop --root or pass that directory")
    set_root(ctx.catalog, ds, str(target))
    listed = sample_columns(ctx.catalog, ds)
    rows = dict(zip(listed.id.tolist(), zip(listed.key, listed.path, strict=True), strict=True))
    todo = [
        k
        for k, sid in enumerate(sample_ids)
        if rows[int(sid)][1] is None or not (target / rows[int(sid)][1]).is_file()
    ]
    params = {"dataset": name, "generator": generator, "crop": crop, "root": str(target)}
    with recorded_run(ctx.catalog, RunKind.IMAGES, algorithm="render", params=params) as run_id:
        with progress_bar(len(todo), f"render {name}", quiet, unit="images") as advance:
            for start in range(0, len(todo), batch_size):
                picked = todo[start : start + batch_size]
                with torch.no_grad():
                    images = gen.synthesis(torch.from_numpy(np.ascontiguousarray(w[picked])).to(gen.device))
                    if crop is not None:
                        pixels = fixed_crop((images + 1) * 127.5, native, crop)
                        images = pixels / 127.5 - 1
                paths: dict[int, str] = {}
                for k, pixels in zip(picked, to_uint8(images), strict=True):
                    rel = f"{rows[int(sample_ids[k])][0]}.png"
                    save_image(pixels, target / rel)
                    paths[int(sample_ids[k])] = rel
                set_paths(ctx.catalog, paths)
                set_progress(ctx.catalog, run_id, (start + len(picked)) / len(todo))
                advance(len(picked))
        set_summary(ctx.catalog, run_id, {"dataset": name, "images": len(todo), "root": str(target)})
    return RenderedImages(len(todo), target)
