"""``synthdb demo``: the main job end to end on embedded defaults, as far as the project goes today.

Today that is: create a workspace, register a synthetic dataset whose identities are clusters of
vectors (made with a fixed seed; no face generator is involved yet, and the demo says so), commit
its embeddings and latents through the crash-safe commit protocol in work units, then answer
questions about it with ``synthdb query``: counts per dataset and the mean angle within and between
identities. Later issues extend it with real faces, generators and analysis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthdb.admin import init_workspace
from synthdb.analysis.query import query, write_result
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.runs import recorded_run, set_progress
from synthdb.progress import progress_bar
from synthdb.store.commit import NewSamples, ShardSpec, commit

DATASET = "demo-clusters"
EMBED_SPACE = "demo-vectors-128d"
LATENT_SPACE = "demo-vectors-512d"

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
    dataset: str
    identities: int
    samples: int
    shards: int
    queries: list[tuple[str, str]] = field(default_factory=list)


def make_clusters(
    identities: int, per_identity: int, dim: int, spread: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm identity centres plus Gaussian noise: separable identities with intra-class spread."""
    centres = rng.standard_normal((identities, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((identities, per_identity, dim)).astype(np.float32) * spread / np.sqrt(dim)
    return centres, (centres[:, None, :] + noise).reshape(-1, dim)


def run_demo(
    directory: str | os.PathLike,
    identities: int = 200,
    per_identity: int = 8,
    unit_identities: int = 50,
    seed: int = 0,
    quiet: bool = False,
) -> DemoResult:
    """Create a workspace in ``directory`` and run the demo job in it (see the module docstring)."""
    ctx = init_workspace(directory)
    try:
        rng = np.random.default_rng(seed)
        _, embeddings = make_clusters(identities, per_identity, 128, spread=0.6, rng=rng)
        latents = rng.standard_normal((identities * per_identity, 512)).astype(np.float32)
        params = {
            "identities": identities,
            "per_identity": per_identity,
            "note": "random clusters, no generator",
        }
        shards = 0
        with recorded_run(
            ctx.catalog, "import", algorithm="demo-clusters", params=params, seed=seed
        ) as run_id:
            dataset_id = create_dataset(
                ctx.catalog,
                DATASET,
                "synthetic",
                "demo",
                run_id=run_id,
                description="Clusters of random vectors standing in for identities "
                "(no face generator involved)",
            )
            with progress_bar(identities, "committing identities", quiet) as advance:
                for start in range(0, identities, unit_identities):
                    ids = range(start, min(start + unit_identities, identities))
                    rows = slice(ids.start * per_identity, ids.stop * per_identity)
                    labels = [f"{i:05d}" for i in ids for _ in range(per_identity)]
                    variants = [f"variation_{k}" for _ in ids for k in range(per_identity)]
                    commit(
                        ctx.catalog,
                        ctx.store,
                        dataset_id=dataset_id,
                        run_id=run_id,
                        unit=f"identities:{ids.start}",
                        samples=NewSamples(
                            keys=[
                                f"{ident}/{variant}" for ident, variant in zip(labels, variants, strict=True)
                            ],
                            role="variation",
                            identity_labels=labels,
                            labels=variants,
                        ),
                        shards=[
                            ShardSpec("embedding", EMBED_SPACE, {"embedding": embeddings[rows]}),
                            ShardSpec("latent", LATENT_SPACE, {"w": latents[rows]}),
                        ],
                    )
                    shards += 2
                    set_progress(ctx.catalog, run_id, ids.stop / identities)
                    advance(len(ids))
        questions = [
            (
                "SELECT dataset, model, count(*) AS embeddings FROM embeddings GROUP BY ALL ORDER BY 1",
                "embeddings per dataset and model",
            ),
            (
                SEPARATION_SQL.format(dataset=DATASET).strip(),
                "angles within and between identities (radians)",
            ),
        ]
        answers = [(title, sql, write_result(query(ctx, sql), "table", None)) for sql, title in questions]
        return DemoResult(
            workspace=ctx.ws.root,
            dataset=DATASET,
            identities=identities,
            samples=identities * per_identity,
            shards=shards,
            queries=[
                (f'{title}\n$ synthdb query "{" ".join(sql.split())}"', text or "")
                for title, sql, text in answers
            ],
        )
    finally:
        ctx.close()
