"""``synthdb demo``: the main job end to end on embedded defaults, with real faces and no download.

In a new workspace:

1. real photos (the repository's test photos, ``--photos``) are imported as a genuine dataset and embedded;
2. Langevin identity repulsion makes reference identities with the embedded, trained ``dcgan-digiface``
   generator and the embedded ``dlib-resnet`` embedder, all thresholds taken from the embedder's card;
3. Dispersion makes variations of each reference; images of both are rendered from the stored latents;
4. the references are checked for identity leakage against the genuine photos, the variations' separability
   is measured, an HTML report is written, and ``synthdb query`` answers questions over it all.

:class:`DemoResult` carries the numbers the demo prints, among them the fraction of reference pairs above the
embedder's threshold before Langevin (the random start) and after it.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from synthdb import defaults
from synthdb.admin import init_workspace
from synthdb.analysis.nearest import check_nearest
from synthdb.analysis.query import query, write_result
from synthdb.analysis.report import report
from synthdb.context import Context
from synthdb.embed_dataset import embed_dataset
from synthdb.errors import SynthdbError
from synthdb.generate import units
from synthdb.generate.dataset_images import generate_dataset_images
from synthdb.generate.references import LangevinParams, ReferenceParams, generate_references
from synthdb.generate.variations import VariationParams, generate_variations
from synthdb.sources.registry import import_named

GENUINE = "genuine"
REFERENCES = "demo-references"
VARIATIONS = "demo-variations"

SEPARATION_SQL = """
WITH e AS (SELECT sample_id, identity_id, embedding FROM embeddings WHERE dataset = '{dataset}')
SELECT CASE WHEN a.identity_id = b.identity_id THEN 'intra-class' ELSE 'inter-class' END AS pairs,
       count(*) AS n,
       round(avg(angle(a.embedding, b.embedding)), 4) AS mean_angle_rad,
       round(min(angle(a.embedding, b.embedding)), 4) AS min_angle_rad
FROM e AS a JOIN e AS b ON a.sample_id < b.sample_id
GROUP BY 1 ORDER BY 1
"""


@dataclass
class DemoResult:
    """What the demo made and measured; angles in radians."""

    workspace: Path
    identities: int
    variations: int
    images: int
    threshold_rad: float
    above_before: float
    above_after: float
    min_angle_before: float
    min_angle_after: float
    genuine_identities: int = 0
    leaking: int | None = None
    eer: float | None = None
    report: Path | None = None
    lines: list[str] = field(default_factory=list)
    queries: list[tuple[str, str]] = field(default_factory=list)


def _genuine_folder(photos: Path, target: Path) -> int:
    """Lay the labelled photos of ``photos/manifest.csv`` out as ``target/<identity>/<file>`` (an
    ImageFolder); group photos and the no-face photo have no identity and stay out. Returns the number of
    identities."""
    manifest = photos / "manifest.csv"
    if not manifest.is_file():
        raise SynthdbError(f"{manifest} is missing: pass --photos a folder of photos with its manifest.csv")
    identities = set()
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("identity"):
                (target / row["identity"]).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(photos / row["file"], target / row["identity"] / row["file"])
                identities.add(row["identity"])
    return len(identities)


def _references(ctx: Context, identities: int, iterations: int, seed: int, quiet: bool) -> int:
    params = ReferenceParams(
        name=REFERENCES,
        num_identities=identities,
        algorithm="langevin",
        seed=seed,
        batch_size=identities,
        langevin=LangevinParams(iterations=iterations),
    )
    return generate_references(ctx, params, quiet=quiet)


def run_demo(
    directory: str | os.PathLike,
    identities: int = 24,
    per_identity: int = 4,
    iterations: int = 10,
    seed: int = 0,
    photos: str | os.PathLike | None = None,
    quiet: bool = False,
) -> DemoResult:
    """Create a workspace in ``directory`` and run the demo job in it (see the module docstring).
    Without ``photos`` the genuine dataset and the leakage check are left out."""
    ctx = init_workspace(directory)
    try:
        threshold = defaults.threshold(defaults.EMBEDDER)
        genuine = 0
        if photos is not None:
            genuine = _genuine_folder(Path(photos), ctx.ws.root / "genuine")
            import_named(ctx, "imagefolder", ctx.ws.root / "genuine", name=GENUINE, quiet=quiet)
            embed_dataset(ctx, GENUINE, defaults.EMBEDDER, quiet=quiet)
        run_id = _references(ctx, identities, iterations, seed, quiet)
        stats = units.read_stats(ctx, run_id)
        first, last = stats[0], stats[-1]
        generate_variations(
            ctx,
            VariationParams(
                name=VARIATIONS,
                references=REFERENCES,
                num_variations=per_identity,
                seed=seed,
                batch_size=32,
                identities_per_unit=identities,
            ),
            quiet=quiet,
        )
        rendered = [generate_dataset_images(ctx, name, quiet=quiet) for name in (REFERENCES, VARIATIONS)]
        images = sum(part.count for part in rendered)
        result = DemoResult(
            workspace=ctx.ws.root,
            identities=identities,
            variations=identities * per_identity,
            images=images,
            threshold_rad=threshold,
            above_before=first["prop_ict"],
            above_after=last["prop_ict"],
            min_angle_before=first["dist_min"],
            min_angle_after=last["dist_min"],
            genuine_identities=genuine,
        )
        if photos is not None:
            nearest = check_nearest(ctx, REFERENCES, GENUINE, defaults.EMBEDDER, k=1, quiet=quiet)
            result.leaking = nearest.leaking_queries
        page = report(ctx, VARIATIONS, ctx.ws.root / "report", quiet=quiet)
        result.report = page.path
        eer = page.separability.eer
        result.eer = None if eer is None else (eer.fmr + eer.fnmr) / 2
        result.queries = _questions(ctx)
        return result
    finally:
        ctx.close()


def _questions(ctx: Context) -> list[tuple[str, str]]:
    """The demo's ``synthdb query`` examples with their answers."""
    questions = [
        (
            "SELECT dataset, model, count(*) AS embeddings FROM embeddings GROUP BY ALL ORDER BY 1",
            "embeddings per dataset and model",
        ),
        ("SELECT kind, algorithm, status, seed FROM catalog.run ORDER BY id", "the runs that made them"),
        (
            SEPARATION_SQL.format(dataset=VARIATIONS).strip(),
            "angles within and between identities of the variations (radians)",
        ),
    ]
    answers = [(title, sql, write_result(query(ctx, sql), "table", None)) for sql, title in questions]
    return [
        (f'{title}\n$ synthdb query "{" ".join(sql.split())}"', text or "") for title, sql, text in answers
    ]


def demo_summary(result: DemoResult) -> list[str]:
    """What the demo shows, as the lines ``synthdb demo`` prints."""
    t = result.threshold_rad
    lines = [
        f"workspace {result.workspace}: generator {defaults.GENERATOR} (trained on DigiFace-1M, embedded), "
        f"embedder {defaults.EMBEDDER} (threshold {t:.3f} rad: same person below it)",
        f"references: {result.identities} identities by Langevin repulsion; identity pairs above "
        f"{t:.3f} rad: {result.above_before:.1%} at the random start -> {result.above_after:.1%}; "
        f"closest pair {result.min_angle_before:.3f} -> {result.min_angle_after:.3f} rad",
        f"variations: {result.variations} by Dispersion; {result.images} images rendered from stored latents",
    ]
    if result.leaking is not None:
        lines.append(
            f"leakage: {result.leaking} of {result.identities} generated identities lie within {t:.3f} rad "
            f"of one of the {result.genuine_identities} real people imported as '{GENUINE}'"
        )
    if result.eer is not None:
        lines.append(f"separability of the variations: EER {result.eer:.2%}")
    lines.append(f"report: {result.report}")
    return lines
