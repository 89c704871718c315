"""How separable a dataset's identities are under an embedder (``synthdb stats separability``).

All numbers come from one tiled pass over all pairs (see ``histogram``), in radians:

- closest inter-class pair (min angle, exact: the extreme of the tiles), mean inter- and intra-class angle
  (from the 2^20 fine cells, with a stated error bound), and the fraction of inter-class pairs below the
  ICT (counted exactly on an edge placed at the ICT);
- intra-class spread per identity: mean and max angle of its samples to its normalised centroid;
- verification: genuine scores are intra-class angles, impostor scores inter-class ones; a pair is
  accepted when its angle is at most the threshold. FMR/FNMR are evaluated at every fine cell boundary
  (a threshold resolution of about 2e-6 in cosine), which gives the EER, the FMR at a given FNMR and the
  FNMR at a given FMR, and the DET/ROC curves, without sorting 10^10 scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from synthdb import defaults
from synthdb.analysis.histogram import (
    ANGLE,
    ClassHistogram,
    EdgeBinner,
    PairScan,
    resolve_space,
    scan,
    uniform_edges,
)
from synthdb.analysis.vectors import identity_blocks, load_vectors, normalized
from synthdb.angles import from_cosine
from synthdb.catalog.schema import ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError

FNMR_TARGETS = (0.1, 0.01, 0.001)
FMR_TARGETS = (0.01, 0.001, 0.0001)
_CURVE_POINTS = 2000


@dataclass
class Operating:
    """One operating point: the accepted-angle threshold (rad) and both error rates there."""

    threshold_rad: float
    fmr: float
    fnmr: float


@dataclass
class Spread:
    """Per identity: samples, and mean/max angle (rad) of its samples to its normalised centroid."""

    identity_ids: np.ndarray
    samples: np.ndarray
    mean_rad: np.ndarray
    max_rad: np.ndarray


@dataclass
class Separability:
    dataset: str
    model: str
    samples: int
    identities: int
    inter_pairs: int
    intra_pairs: int
    ict_rad: float
    edges: np.ndarray
    inter: ClassHistogram
    intra: ClassHistogram
    min_inter_rad: float | None
    closest_pair: tuple[int, int] | None  # sample ids
    mean_inter_rad: float | None
    mean_intra_rad: float | None
    mean_bound_rad: float
    below_ict: int
    below_ict_fraction: float | None
    ict_edge_pairs: int
    spread: Spread
    eer: Operating | None
    fmr_at_fnmr: dict[float, Operating] = field(default_factory=dict)
    fnmr_at_fmr: dict[float, Operating] = field(default_factory=dict)
    curve_fmr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curve_fnmr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curve_threshold_rad: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unit: str = "rad"
    notes: list[str] = field(default_factory=list)

    def headline(self, with_spread: bool = False) -> dict[str, str]:
        """The headline numbers as the report page and ``synthdb stats separability`` show them (every
        distance with its unit); ``with_spread`` adds the median intra-class spread."""
        out = {
            "samples": f"{self.samples:,}",
            "identities": f"{self.identities:,}",
            "inter-class pairs": f"{self.inter_pairs:,}",
            "intra-class pairs": f"{self.intra_pairs:,}",
            "min inter-class angle": rad_text(self.min_inter_rad),
            "mean inter-class angle": rad_text(self.mean_inter_rad) + f" (± {self.mean_bound_rad:.1e} rad)",
            "mean intra-class angle": rad_text(self.mean_intra_rad),
            f"inter-class pairs below ICT {self.ict_rad:g} rad": (
                f"{self.below_ict:,} ({_rate(self.below_ict_fraction)}; "
                f"{self.ict_edge_pairs} within float32 error of it)"
            ),
            "EER": _operating_text(self.eer),
        }
        for target, point in self.fmr_at_fnmr.items():
            out[f"FMR at FNMR {target:g}"] = f"{_rate(point.fmr)} at {rad_text(point.threshold_rad)}"
        for target, point in self.fnmr_at_fmr.items():
            out[f"FNMR at FMR {target:g}"] = f"{_rate(point.fnmr)} at {rad_text(point.threshold_rad)}"
        if with_spread and len(self.spread.mean_rad):
            median = float(np.median(self.spread.mean_rad))
            out["intra-class spread (median mean angle to centroid)"] = f"{median:.4f} rad"
        return out


    def as_json(self) -> dict[str, Any]:
        """The numbers as numbers, for ``stats separability --json``: every angle in radians (keys end in
        ``_rad``), rates as fractions in [0, 1], None where there is no value; the keys are the same for
        every dataset (operating points keyed by their target, e.g. ``"0.01"``)."""
        spread = self.spread.mean_rad
        return {
            "dataset": self.dataset,
            "model": self.model,
            "unit": self.unit,
            "samples": self.samples,
            "identities": self.identities,
            "inter_pairs": self.inter_pairs,
            "intra_pairs": self.intra_pairs,
            "ict_rad": self.ict_rad,
            "min_inter_rad": self.min_inter_rad,
            "closest_pair_sample_ids": None if self.closest_pair is None else list(self.closest_pair),
            "mean_inter_rad": self.mean_inter_rad,
            "mean_intra_rad": self.mean_intra_rad,
            "mean_error_bound_rad": self.mean_bound_rad,
            "below_ict": self.below_ict,
            "below_ict_fraction": self.below_ict_fraction,
            "ict_edge_pairs": self.ict_edge_pairs,
            "eer": _operating_json(self.eer),
            "fmr_at_fnmr": {f"{t:g}": _operating_json(p) for t, p in self.fmr_at_fnmr.items()},
            "fnmr_at_fmr": {f"{t:g}": _operating_json(p) for t, p in self.fnmr_at_fmr.items()},
            "spread_median_mean_rad": float(np.median(spread)) if len(spread) else None,
            "notes": list(self.notes),
        }


def _operating_json(point: Operating | None) -> dict[str, float] | None:
    return None if point is None else asdict(point)


def _operating_text(point: Operating | None) -> str:
    return "n/a" if point is None else f"{_rate(point.fmr)} at {rad_text(point.threshold_rad)}"


def rad_text(value: float | None) -> str:
    """An angle as synthdb prints it everywhere: radians, 4 decimals, ``n/a`` when there is none."""
    return "n/a" if value is None else f"{value:.4f} rad"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4%}"


def _cell_angles(binner: EdgeBinner) -> tuple[np.ndarray, np.ndarray]:
    """Per fine cell, the angle at its middle and half its angular width (widened by the float32 rounding
    of the cell index, a quarter cell), for means with an error bound."""
    width = 1.0 / binner.scale
    lo = np.clip(binner.cell_lo - 0.25 * width, -1.0, 1.0)
    hi = np.clip(binner.cell_lo + 1.25 * width, -1.0, 1.0)
    mid = np.clip(binner.cell_lo + 0.5 * width, -1.0, 1.0)
    return from_cosine(mid), (from_cosine(lo) - from_cosine(hi)) / 2


def _mean(fine: np.ndarray, angles: np.ndarray, half: np.ndarray) -> tuple[float | None, float]:
    total = fine.sum()
    if total == 0:
        return None, 0.0
    return float(fine @ angles / total), float(fine @ half / total)


def _rates(inter: np.ndarray, intra: np.ndarray, binner: EdgeBinner) -> tuple[np.ndarray, ...]:
    """FMR and FNMR when accepting cosines >= the lower bound of cell j, for every j (and j = CELLS)."""
    n_inter, n_intra = inter.sum(), intra.sum()
    accepted_impostors = np.concatenate([np.cumsum(inter[::-1])[::-1], [0]])
    rejected_genuine = np.concatenate([[0], np.cumsum(intra)])
    fmr = accepted_impostors / n_inter
    fnmr = rejected_genuine / n_intra
    bounds = np.concatenate([binner.cell_lo, [binner.cell_lo[-1] + 1.0 / binner.scale]])
    return fmr, fnmr, from_cosine(bounds)


def _operating(fmr: np.ndarray, fnmr: np.ndarray, thresholds: np.ndarray, j: int) -> Operating:
    return Operating(float(thresholds[j]), float(fmr[j]), float(fnmr[j]))


def verification(
    scan_result: PairScan, fnmr_targets: Sequence[float], fmr_targets: Sequence[float]
) -> tuple[Operating | None, dict, dict, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """EER, FMR at FNMR targets, FNMR at FMR targets and a thinned DET curve, from the fine cell counts."""
    empty = np.zeros(0)
    inter, intra = scan_result.inter, scan_result.intra
    if inter is None or inter.fine.sum() == 0 or intra.fine.sum() == 0:
        return None, {}, {}, (empty, empty, empty)
    fmr, fnmr, thresholds = _rates(inter.fine, intra.fine, scan_result.binner)
    crossing = int(np.argmax(fnmr >= fmr))  # FMR falls and FNMR rises with j: the first j where they cross
    candidates = [j for j in (crossing - 1, crossing) if j >= 0]
    best = min(candidates, key=lambda j: abs(fmr[j] - fnmr[j]))
    rate = float((fmr[best] + fnmr[best]) / 2)
    eer = Operating(float(thresholds[best]), rate, rate)
    at_fnmr = {}
    for target in fnmr_targets:  # the strictest threshold that still keeps FNMR <= target
        j = int(np.searchsorted(fnmr, target, side="right")) - 1
        at_fnmr[target] = _operating(fmr, fnmr, thresholds, j)
    at_fmr = {}
    for target in fmr_targets:  # the loosest threshold that keeps FMR <= target
        j = int(np.argmax(fmr <= target))
        at_fmr[target] = _operating(fmr, fnmr, thresholds, j)
    changes = np.flatnonzero((np.diff(fmr) != 0) | (np.diff(fnmr) != 0))
    keep = np.unique(np.concatenate([changes, changes + 1]))
    if len(keep) > _CURVE_POINTS:
        keep = keep[np.linspace(0, len(keep) - 1, _CURVE_POINTS).astype(np.int64)]
    return eer, at_fnmr, at_fmr, (fmr[keep], fnmr[keep], thresholds[keep])


def intra_spread(unit: np.ndarray, identity_ids: np.ndarray) -> Spread:
    """Angles of every sample to its identity's normalised centroid, summarised per identity."""
    order, identities, starts = identity_blocks(identity_ids)
    ordered = unit[order]
    sizes = np.diff(starts)
    sums = np.add.reduceat(ordered.astype(np.float64), starts[:-1], axis=0) if len(ordered) else ordered
    centres = normalized(sums.astype(np.float32)) if len(ordered) else sums
    owner = np.repeat(np.arange(len(identities)), sizes)
    cosines = np.einsum("ij,ij->i", ordered, centres[owner], dtype=np.float64)
    angles = from_cosine(cosines)
    mean = np.add.reduceat(angles, starts[:-1]) / sizes if len(angles) else angles
    peak = np.maximum.reduceat(angles, starts[:-1]) if len(angles) else angles
    return Spread(identities, sizes, mean, peak)


def separability_of(
    vectors: np.ndarray,
    identity_ids: np.ndarray,
    ict: float,
    bins: int = 1024,
    fnmr_targets: Sequence[float] = FNMR_TARGETS,
    fmr_targets: Sequence[float] = FMR_TARGETS,
    device: str | None = None,
    quiet: bool = True,
    dataset: str = "",
    model: str = "",
    sample_ids: np.ndarray | None = None,
) -> Separability:
    """Array-level separability of embeddings (rows) labelled by identity; see the module docstring."""
    if not 0 < ict < math.pi:
        raise SynthdbError(
            f"--ict {ict} is not an angle in radians in (0, pi): e.g. 0.609 for dlib-resnet, 1.4 for ArcFace"
        )
    if len(vectors) < 2:
        raise SynthdbError(f"{len(vectors)} embedded samples: separability needs at least two")
    uniform = uniform_edges(bins, (0.0, math.pi))
    edges = np.unique(np.concatenate([uniform, [ict]]))
    result = scan(vectors, identity_ids, ANGLE, edges=edges, device=device, quiet=quiet)
    inter_counts, intra_counts = result.inter, result.intra
    inter_split, intra_split = result.histogram(inter_counts), result.histogram(intra_counts)
    at_ict = int(np.searchsorted(edges, ict))
    angles, half = _cell_angles(result.binner)
    mean_inter, bound_inter = _mean(inter_counts.fine, angles, half)
    mean_intra, bound_intra = _mean(intra_counts.fine, angles, half)
    eer, at_fnmr, at_fmr, (fmr, fnmr, thresholds) = verification(result, fnmr_targets, fmr_targets)
    ids = np.arange(len(vectors)) if sample_ids is None else sample_ids
    closest = None if result.extreme is None else (int(ids[result.extreme[1]]), int(ids[result.extreme[2]]))
    notes = []
    if intra_split.pairs == 0:
        notes.append("no identity has two samples: no genuine scores, so no EER or intra-class histogram")
    below = int(inter_split.below + inter_split.counts[:at_ict].sum())
    return Separability(
        dataset=dataset,
        model=model,
        samples=result.samples,
        identities=result.identities,
        inter_pairs=inter_split.pairs,
        intra_pairs=intra_split.pairs,
        ict_rad=ict,
        edges=uniform,
        inter=_merge_ict(inter_split, edges, uniform),
        intra=_merge_ict(intra_split, edges, uniform),
        min_inter_rad=result.extreme_distance(),
        closest_pair=closest,
        mean_inter_rad=mean_inter,
        mean_intra_rad=mean_intra,
        mean_bound_rad=max(bound_inter, bound_intra),
        below_ict=below,
        below_ict_fraction=below / inter_split.pairs if inter_split.pairs else None,
        ict_edge_pairs=int(inter_split.near_edges[at_ict]),
        spread=intra_spread(normalized(vectors), identity_ids),
        eer=eer,
        fmr_at_fnmr=at_fnmr,
        fnmr_at_fmr=at_fmr,
        curve_fmr=fmr,
        curve_fnmr=fnmr,
        curve_threshold_rad=thresholds,
        notes=notes,
    )


def _merge_ict(split: ClassHistogram, edges: np.ndarray, uniform: np.ndarray) -> ClassHistogram:
    """Back to the uniform bins: the two bins either side of the inserted ICT edge become one again."""
    if len(edges) == len(uniform):
        return split
    owner = np.searchsorted(uniform, edges[:-1], side="right") - 1
    counts = np.bincount(owner, weights=split.counts, minlength=len(uniform) - 1).astype(np.int64)
    return ClassHistogram(
        counts, split.below, split.above, split.pairs, split.near_edges[np.isin(edges, uniform)]
    )


def separability(
    ctx: Context,
    dataset: str,
    model: str | None = None,
    ict: float | None = None,
    bins: int = 1024,
    fnmr_targets: Sequence[float] = FNMR_TARGETS,
    fmr_targets: Sequence[float] = FMR_TARGETS,
    device: str | None = None,
    quiet: bool = False,
) -> Separability:
    """Separability of ``dataset`` under embedder ``model`` (optional when it has one); see the module doc.
    ``ict`` defaults to the embedder's verification threshold."""
    _, model = resolve_space(ctx, dataset, ShardContent.EMBEDDING, model)
    ict = defaults.threshold(model) if ict is None else ict
    loaded = load_vectors(ctx, dataset, model)
    data = loaded.with_identity()
    out = separability_of(
        data.vectors,
        data.identity_ids,
        ict,
        bins,
        fnmr_targets,
        fmr_targets,
        device,
        quiet,
        dataset,
        model,
        data.sample_ids,
    )
    if len(data) < len(loaded):
        out.notes.append(f"{len(loaded) - len(data)} embedded samples without an identity were left out")
    return out
