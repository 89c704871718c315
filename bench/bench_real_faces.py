"""Real faces on the CPU: dcgan-digiface throughput (batch 1 vs 32) and the main job's acceptance figures.

Throughput (goal: batching pays off, ratio > 1), rounds interleaved (see ``timing.py``):
- synthesis: 128 images, image by image vs batches of 32;
- generation: synthesis + crop + dlib-resnet embedding of the same 128 images, batch 1 vs 32;
- Langevin: one iteration of 32 identities (forward and backward through generator, crop and embedder),
  batch 1 vs 32, as identities/s.

Acceptance on real faces (default settings, dlib-resnet's threshold from its card; skipped with --quick), in
a temporary workspace through the library API:
- Langevin vs random references from the same seed (32 identities): pairs above the threshold, the closest
  pair, and the fraction of rendered references in which MTCNN finds exactly one face;
- ICT (24 identities): time, candidates drawn, the smallest accepted angle;
- Dispersion (24 references x 8 variations): variations nearest their own reference, intra-class angles
  below the threshold, the latent spread before and after;
- projection of three real photos (100 steps): their embedder angle to the photo before and after.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import check_spread, environment, interleaved  # noqa: E402

from synthdb import defaults, zoo  # noqa: E402
from synthdb.admin import init_workspace  # noqa: E402
from synthdb.analysis.vectors import load_vectors  # noqa: E402
from synthdb.angles import angle  # noqa: E402
from synthdb.catalog.samples import identity_labels  # noqa: E402
from synthdb.faces.align import Cropper, generator_preset  # noqa: E402
from synthdb.faces.detect import MtcnnDetector, load_image  # noqa: E402
from synthdb.generate import units  # noqa: E402
from synthdb.generate.pipeline import Pipeline  # noqa: E402
from synthdb.generate.references import ReferenceParams, generate_references, langevin_step  # noqa: E402
from synthdb.generate.variations import VariationParams, generate_variations  # noqa: E402
from synthdb.latent.project import ProjectionParams, Projector  # noqa: E402
from synthdb.nets.generator import Generator  # noqa: E402

FACES = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"
ISSUE_THRESHOLD = 2 * math.asin(0.3)  # dlib's 0.6 taken as a distance between unit vectors


def throughput(pipeline: Pipeline, rounds: int) -> None:
    gen = pipeline.generator
    w = gen.mapping(
        torch.randn(128, gen.z_dim, generator=torch.Generator().manual_seed(0)), truncation_psi=0.7
    )

    def chunks(fn, batch: int):  # noqa: ANN001, ANN202
        return lambda: [fn(chunk) for chunk in w.split(batch)]

    with torch.inference_mode():
        for what, fn in (("synthesis", gen.synthesis), ("synthesis + crop + embedding", pipeline.forward)):
            timings = interleaved({f"{what}, batch {b}": chunks(fn, b) for b in (1, 32)}, rounds)
            check_spread(timings)
            for t in timings.values():
                print(t.line(len(w), "images/s"))
            one, many = timings.values()
            print(f"{what}: batch 32 / batch 1 = x{one.median / many.median:.2f}")
    params = ReferenceParams(name="bench", num_identities=32).resolved()
    lang = {}
    for batch in (1, 32):
        pipe = Pipeline(gen, pipeline.embedder, batch)
        lang[f"Langevin iteration, batch {batch}"] = lambda p=pipe: langevin_step(p, w[:32], 0, params, None)
    timings = interleaved(lang, max(2, rounds // 2))
    check_spread(timings)
    for t in timings.values():
        print(t.line(32, "identities/s"))
    one, many = timings.values()
    print(f"Langevin: batch 32 / batch 1 = x{one.median / many.median:.2f}")


def pair_angles(e: np.ndarray) -> np.ndarray:
    d = angle(torch.from_numpy(e), torch.from_numpy(e)).numpy()
    return d[np.triu_indices(len(e), 1)]


def one_face(generator: Generator, w: np.ndarray, mtcnn: MtcnnDetector) -> float:
    with torch.no_grad():
        pixels = (generator.synthesis(torch.from_numpy(w)).clamp(-1, 1) + 1) * 127.5
    big = F.interpolate(pixels, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 255)
    found = mtcnn.detect([img.round().byte().permute(1, 2, 0).numpy() for img in big])
    return float(np.mean([len(f.faces) == 1 for f in found]))


def acceptance(pipeline: Pipeline, workdir: Path) -> None:
    ctx = init_workspace(workdir / "ws")
    thr, emb, gen = defaults.threshold(defaults.EMBEDDER), defaults.EMBEDDER, defaults.GENERATOR
    mtcnn = zoo.detector(None, "mtcnn")

    def vectors(name: str, content: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
        space, column = (emb, "embedding") if content == "embedding" else (gen, "w")
        found = load_vectors(ctx, name, space, content, column).by_sample()
        labels = identity_labels(ctx.catalog, found.identity_ids)
        return np.array([labels[int(i)] for i in found.identity_ids]), found.vectors

    print(f"threshold {thr:.4f} rad ({emb}'s card); also: {ISSUE_THRESHOLD:.4f} rad (0.6 on unit vectors)")
    for algorithm in ("random", "langevin"):
        start = time.perf_counter()
        generate_references(
            ctx, ReferenceParams(name=algorithm, algorithm=algorithm, num_identities=32, batch_size=32)
        )
        seconds = time.perf_counter() - start
        d = pair_angles(vectors(algorithm)[1])
        faces = one_face(pipeline.generator, vectors(algorithm, "latent")[1], mtcnn)
        print(
            f"{algorithm:<9} 32 identities in {seconds:6.1f} s: pairs above {thr:.3f} rad "
            f"{(d > thr).mean():6.1%}, above {ISSUE_THRESHOLD:.3f} rad {(d > ISSUE_THRESHOLD).mean():6.1%}, "
            f"closest pair {d.min():.4f} rad, mean {d.mean():.4f} rad, one face (MTCNN) in {faces:.0%}"
        )
    start = time.perf_counter()
    run_id = generate_references(ctx, ReferenceParams(name="ict", algorithm="ict", num_identities=24))
    drawn = sum(row["candidates"] for row in units.read_stats(ctx, run_id))
    d = pair_angles(vectors("ict")[1])
    print(
        f"ict       24 identities in {time.perf_counter() - start:6.1f} s from {drawn} candidates: "
        f"smallest accepted angle {d.min():.4f} rad (threshold {thr:.4f})"
    )
    start = time.perf_counter()
    generate_references(ctx, ReferenceParams(name="refs", num_identities=24, batch_size=24))
    run_id = generate_variations(
        ctx,
        VariationParams(
            name="vars", references="refs", num_variations=8, batch_size=32, identities_per_unit=24
        ),
    )
    (ref_labels, ref_e), (var_labels, var_e) = vectors("refs"), vectors("vars")
    d = angle(torch.from_numpy(var_e), torch.from_numpy(ref_e)).numpy()
    to_own = d[np.arange(len(var_labels)), [int(np.flatnonzero(ref_labels == x)[0]) for x in var_labels]]
    stats = units.read_stats(ctx, run_id)
    print(
        f"dispersion 24 x 8 in {time.perf_counter() - start:6.1f} s: nearest their own reference "
        f"{(ref_labels[d.argmin(axis=1)] == var_labels).mean():.1%}, angle to it below {thr:.3f} rad "
        f"{(to_own < thr).mean():.1%} (mean {to_own.mean():.4f} rad), latent spread (mean pair distance "
        f"in w) {stats[0]['w2wd_avg']:.2f} -> {stats[-1]['w2wd_avg']:.2f}"
    )
    ctx.close()
    projection(pipeline)


def projection(pipeline: Pipeline) -> None:
    gen, emb = pipeline.generator, pipeline.embedder
    names = ["obama_01.jpg", "biden_02.jpg", "angelina_01.jpg"]
    photos = [torch.from_numpy(load_image(FACES / n).copy()).permute(2, 0, 1)[None].float() for n in names]
    mtcnn = zoo.detector(None, "mtcnn")
    frame = generator_preset(gen.framing, gen.img_resolution)
    native = Cropper("mtcnn", frame, detector=mtcnn, value_range=(0.0, 255.0))
    to_embedder = Cropper("mtcnn", emb.preset, detector=mtcnn, value_range=(0.0, 255.0))
    targets = torch.cat([native(p)[0] for p in photos]) / 127.5 - 1
    truth = torch.cat([emb.embed(to_embedder(p)[0]) for p in photos])
    start = time.perf_counter()
    result = Projector(gen, emb, ProjectionParams(name="p", steps=100)).project(targets, names)
    with torch.no_grad():
        before = angle(pipeline.forward(gen.w_avg.expand(len(names), -1)), truth).diagonal()
        after = angle(pipeline.forward(result.w), truth).diagonal()
    pairs = ", ".join(
        f"{n} {b:.3f} -> {a:.3f}" for n, b, a in zip(names, before.tolist(), after.tolist(), strict=True)
    )
    seconds = time.perf_counter() - start
    print(f"projection 3 photos x 100 steps in {seconds:6.1f} s, angle to the photo (rad): {pairs}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Throughput only.")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    pipeline = Pipeline(zoo.generator(None, defaults.GENERATOR), zoo.embedder(None, defaults.EMBEDDER), 32)
    print(f"{pipeline.generator.describe()} + {pipeline.embedder.name}; {environment()}")
    throughput(pipeline, args.rounds)
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            acceptance(pipeline, Path(tmp))


if __name__ == "__main__":
    main()
