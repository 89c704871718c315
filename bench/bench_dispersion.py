"""Dispersion throughput (issue 6 benchmark): variations/s for ``--identities`` (64) x ``--variations``
(16) at batch sizes 8 (baseline: the reference package's default chunk) and 64, in one process.

One call of :func:`synthdb.generate.variations.dispersion_unit` per batch size, on the same reference
latents: ``--iterations`` gradient passes (embedding attraction through E = FR(crop(G(w)))) plus the final
embedding pass. Prints variation-steps/s (latents x gradient passes per second), finished variations/s,
and the batch-64 / batch-8 ratio. The two runs must give the same latents (up to float noise of the
batch shapes), which is checked and printed.

Models: stylegan2-tiny (UNTRAINED, 64 px) + dlib-resnet by default; ``--generator`` names another.
The default 1 iteration keeps it to a few minutes on a 2-core CPU; the run's 20 scale linearly.
"""

from __future__ import annotations

import argparse
import time

import torch

from synthdb.generate.pipeline import load_pipeline
from synthdb.generate.references import ReferenceParams
from synthdb.generate.variations import VariationParams, dispersion_unit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="stylegan2-tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--identities", type=int, default=64)
    ap.add_argument("--variations", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=1)
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    pipeline = load_pipeline(
        None,
        ReferenceParams(
            name="bench", num_identities=args.identities, generator=args.generator, device=args.device
        )
    )
    z = torch.randn(args.identities, pipeline.generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        refs_w = pipeline.generator.mapping(z.to(dev), truncation_psi=0.7)
    refs_e = pipeline.embed(refs_w)
    labels = [f"{i:05d}" for i in range(args.identities)]
    n = args.identities * args.variations
    print(f"device {dev}, {pipeline.generator.describe()}, {pipeline.embedder.name}, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(
        f"dispersion {args.identities} x {args.variations}, {args.iterations} iteration(s) + final embedding"
    )
    seconds, latents = {}, {}
    for batch in (8, 64):
        pipeline.batch_size = batch
        params = VariationParams(
            name="b",
            references="r",
            num_variations=args.variations,
            iterations=args.iterations,
            batch_size=batch,
            generator=args.generator,
        ).resolved()
        sync()
        start = time.perf_counter()
        latents[batch], _, _ = dispersion_unit(pipeline, params, labels, refs_w, refs_e, None)
        sync()
        seconds[batch] = time.perf_counter() - start
        print(f"batch {batch:>3}: {seconds[batch]:8.2f} s, {n * args.iterations / seconds[batch]:8.1f} "
              f"variation-steps/s, {n / seconds[batch]:8.2f} finished variations/s")  # fmt: skip
    diff = float((latents[64] - latents[8]).abs().max())
    print(f"batch 64 vs batch 8: {seconds[8] / seconds[64]:.2f}x variations/s; latents max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
