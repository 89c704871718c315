"""``synthdb demo``: the main job end to end on embedded defaults, as far as the project goes today.

A workspace is created; Langevin identity repulsion makes reference identities with the untrained
``stylegan2-tiny`` generator and the embedded dlib-resnet face embedder; Dispersion makes variations
of each; their images are rendered from the stored latents; then ``synthdb query`` answers questions
over the catalog and the shards. No face-generator weights ship with synthdb, so the "faces" are
the output of a random-initialised network: the demo shows the machinery, not face quality, and says
so. With real weights (``synthdb models add stylegan2-ffhq-256 --file ...``) the same commands make a
real dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from synthdb.admin import init_workspace
from synthdb.analysis.query import query, write_result
from synthdb.generate.images import generate_dataset_images
from synthdb.generate.references import LangevinParams, ReferenceParams, generate_references
from synthdb.generate.variations import VariationParams, generate_variations

REFERENCES = "demo-references"
VARIATIONS = "demo-variations"
# The untrained tiny generator's faces sit 0.2-0.4 rad apart under dlib-resnet (real faces: ~1 rad), so
# the thresholds are scaled down accordingly.
ICT, RADIUS = 0.25, 0.5

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
    workspace: Path
    identities: int
    variations: int
    images: int
    queries: list[tuple[str, str]] = field(default_factory=list)


def run_demo(
    directory: str | os.PathLike,
    identities: int = 16,
    per_identity: int = 4,
    iterations: int = 6,
    seed: int = 0,
    quiet: bool = False,
) -> DemoResult:
    """Create a workspace in ``directory`` and run the demo job in it (see the module docstring)."""
    ctx = init_workspace(directory)
    try:
        generate_references(
            ctx,
            ReferenceParams(
                name=REFERENCES,
                num_identities=identities,
                algorithm="langevin",
                ict=ICT,
                seed=seed,
                langevin=LangevinParams(iterations=iterations, repulsion_radius=RADIUS),
            ),
            quiet=quiet,
        )
        generate_variations(
            ctx,
            VariationParams(
                name=VARIATIONS,
                references=REFERENCES,
                num_variations=per_identity,
                iterations=max(1, iterations // 2),
                ict=ICT,
                seed=seed,
            ),
            quiet=quiet,
        )
        images = sum(generate_dataset_images(ctx, name, quiet=quiet) for name in (REFERENCES, VARIATIONS))
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
        return DemoResult(
            workspace=ctx.ws.root,
            identities=identities,
            variations=identities * per_identity,
            images=images,
            queries=[
                (f'{title}\n$ synthdb query "{" ".join(sql.split())}"', text or "")
                for title, sql, text in answers
            ],
        )
    finally:
        ctx.close()
