"""Per-iteration statistics of a generation run (the reference's stats.h5 quantities, spec 2.5).

Fixes against the reference: every pair is counted (it dropped ``n mod 500`` rows), force norms are
taken over the latent axis (it took them over the identity/augmentation axis), and ``prop_ict`` is
computed for variations too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from synthdb.angles import angle
from synthdb.catalog.schema import ShardContent
from synthdb.store.commit import TableSpec


def pair_values(x: Tensor, kind: str) -> Tensor:
    """Distances of all unordered pairs of rows of x (N, D): ``angle`` (radians) or ``euclid``."""
    d = angle(x, x) if kind == "angle" else torch.cdist(x.double(), x.double()).float()
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    return d[i, j]


def summary(prefix: str, values: Tensor) -> dict[str, float]:
    """``{prefix}_min/avg/max`` of a 1-D tensor (NaN when empty, e.g. a single identity)."""
    if values.numel() == 0:
        nan = float("nan")
        return {f"{prefix}_min": nan, f"{prefix}_avg": nan, f"{prefix}_max": nan}
    values = values.double()
    return {
        f"{prefix}_min": float(values.min()),
        f"{prefix}_avg": float(values.mean()),
        f"{prefix}_max": float(values.max()),
    }


def force_norms(prefix: str, force: Tensor) -> dict[str, float]:
    """min/avg/max over rows of the Euclidean norm over the LATENT (last) axis of force (..., w_dim)."""
    return summary(prefix, force.reshape(-1, force.shape[-1]).norm(dim=-1))


def population(embeddings: Tensor, w: Tensor, w_avg: Tensor, ict: float) -> dict[str, float]:
    """Inter-identity statistics of a set of references (Langevin, ICT, random)."""
    d = pair_values(embeddings, "angle")
    stats = summary("dist", d)
    stats["prop_ict"] = float((d > ict).double().mean()) if d.numel() else float("nan")
    stats.update(summary("w2wd", pair_values(w, "euclid")))
    stats["wavg_avg"] = float((w - w_avg).norm(dim=-1).double().mean())
    return stats


def grouped(embeddings: Tensor, w: Tensor, w_avg: Tensor, ict: float) -> dict[str, float]:
    """Intra-identity statistics of variations (I, A, D) / (I, A, w_dim): the reference's aggregation
    (min of mins, mean of means, max of maxes), plus prop_ict over all intra pairs."""
    per_dist = [pair_values(e, "angle") for e in embeddings]
    per_w = [pair_values(x, "euclid") for x in w]
    stats: dict[str, float] = {}
    for prefix, groups in (("dist", per_dist), ("w2wd", per_w)):
        if groups[0].numel() == 0:
            stats.update(summary(prefix, torch.empty(0)))
            continue
        stats[f"{prefix}_min"] = float(min(g.min() for g in groups))
        stats[f"{prefix}_avg"] = float(torch.stack([g.double().mean() for g in groups]).mean())
        stats[f"{prefix}_max"] = float(max(g.max() for g in groups))
    all_d = torch.cat(per_dist)
    stats["prop_ict"] = float((all_d > ict).double().mean()) if all_d.numel() else float("nan")
    stats["wavg_avg"] = float((w - w_avg).norm(dim=-1).double().mean())
    return stats


def columns(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """Stats rows -> columns for a ``stats`` shard; a key missing from a row (the final pass has no
    forces) is NaN there."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: np.array([row.get(k, float("nan")) for row in rows]) for k in keys}


def table(rows: list[dict[str, float]]) -> TableSpec:
    """Per-iteration (or per-batch) statistics rows as a ``stats`` shard of the unit that made them."""
    return TableSpec(ShardContent.STATS, None, columns(rows))
