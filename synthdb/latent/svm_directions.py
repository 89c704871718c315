"""Covariate directions from projected Multi-PIE latents: one linear SVM per covariate (spec 8.1).

Each covariate has a protocol and two classes, read from the Multi-PIE key of the projected image:

* ``pose`` (protocol ``P_center_lit``): cameras 11_0, 12_0, 09_0, 08_0, 13_0, 14_0 ("left") vs
  05_0, 04_1, 19_0, 20_0, 01_0, 24_0 ("right"); the frontal 05_1 is left out;
* ``illumination`` (``U``): flash shots 1-3 ("left") vs 11-13 ("right");
* ``smile``, ``scream``, ``disgust``, ``squint``, ``surprise`` (``E_lit``): ``neutral`` vs that
  expression (from the session and recording).

Only the protocol's ``train`` group is used. Membership follows from the key by the Multi-PIE
importer's own rules (:func:`synthdb.sources.multipie.parse_path`), which are the rules that made the
catalog's protocol groups, so a projections dataset needs nothing but its source keys.

The SVM is the reference's: ``LinearSVC(fit_intercept=False, max_iter=10000, dual="auto")`` seeded by
``seed``, on the raw 512-d w. The normal is the unit coefficient vector (pointing to the second
class); ``neg``/``pos`` statistics are over the projections of all training latents of both classes,
split by the sign of the projection.

A projections dataset (``synthdb project``) holds samples of role ``projection`` whose
attributes carry ``source_key`` (the Multi-PIE key) and a latent shard with column ``w``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from synthdb.analysis.vectors import load_vectors
from synthdb.catalog import runs, samples, shards
from synthdb.catalog.datasets import dataset_id
from synthdb.catalog.directions import check_name_free
from synthdb.catalog.schema import RunKind, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.latent.directions import EXPRESSIONS, Direction, DirectionSet, SideStats
from synthdb.progress import progress_bar
from synthdb.sources import multipie
from synthdb.sources.entries import Entry

PROTOCOLS = ("U", "E_lit", "P_center_lit", "all")
COVARIATE_PROTOCOL = {"pose": "P_center_lit", "illumination": "U", **dict.fromkeys(EXPRESSIONS, "E_lit")}
"""The protocol whose ``train`` group each covariate is fitted on."""

POSE_CLASSES = (
    frozenset({"11_0", "12_0", "09_0", "08_0", "13_0", "14_0"}),
    frozenset({"05_0", "04_1", "19_0", "20_0", "01_0", "24_0"}),
)
ILLUMINATION_CLASSES = (frozenset({1, 2, 3}), frozenset({11, 12, 13}))


def covariates_of(protocol: str) -> list[str]:
    """The covariates a ``--protocol`` choice analyses, in storage order."""
    if protocol not in PROTOCOLS:
        raise SynthdbError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    return [c for c, p in COVARIATE_PROTOCOL.items() if protocol in (p, "all")]


def parse_key(key: str) -> Entry | None:
    """The Multi-PIE sample a key names (``session03_multiview_241_01_05_0_241_03_01_050_07``), or None."""
    parts = key.split("_")
    if len(parts) != 11:
        return None
    session, view, subject, recording, cam_major, cam_minor, *name = parts
    return multipie.parse_path(
        f"{session}/{view}/{subject}/{recording}/{cam_major}_{cam_minor}/{'_'.join(name)}.png"
    )


def class_names(covariate: str) -> tuple[str, str]:
    return ("left", "right") if covariate in ("pose", "illumination") else ("neutral", covariate)


def label(covariate: str, entry: Entry) -> int | None:
    """0 or 1 when the sample is a training sample of one of the covariate's two classes, else None."""
    if (COVARIATE_PROTOCOL[covariate], "train", "train") not in entry.groups:
        return None
    attrs = entry.attributes
    if covariate == "pose":
        value, classes = attrs["camera"], POSE_CLASSES
    elif covariate == "illumination":
        value, classes = attrs["shot"], ILLUMINATION_CLASSES
    else:
        value, classes = attrs["expression"], ({"neutral"}, {covariate})
    return next((k for k, members in enumerate(classes) if value in members), None)


def fit_direction(covariate: str, w: np.ndarray, y: np.ndarray, seed: int) -> Direction:
    """One covariate's SVM on latents ``w`` (N, D) with 0/1 labels ``y``."""
    counts = (int((y == 0).sum()), int((y == 1).sum()))
    if min(counts) == 0:
        raise SynthdbError(
            f"{covariate}: the projections hold {counts[0]} {class_names(covariate)[0]} and {counts[1]} "
            f"{class_names(covariate)[1]} training samples: project the {COVARIATE_PROTOCOL[covariate]} "
            "train group of Multi-PIE (both classes are needed)"
        )
    svm = LinearSVC(fit_intercept=False, max_iter=10000, dual="auto", random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(w.astype(np.float64), y)
    converged = not any(issubclass(c.category, ConvergenceWarning) for c in caught)
    coef = svm.coef_[0]
    normal = (coef / np.linalg.norm(coef)).astype(np.float32)  # as stored; the statistics are of it
    p = w.astype(np.float64) @ normal.astype(np.float64)
    if not ((p < 0).any() and (p > 0).any()):
        raise SynthdbError(
            f"{covariate}: every training latent projects onto one side of the fitted hyperplane, so the "
            "fit found no direction (the classes do not separate through the origin): check the projections"
        )
    return Direction(
        name=covariate,
        normal=normal,
        classes=class_names(covariate),
        counts=counts,
        accuracy=float(svm.score(w.astype(np.float64), y)),
        converged=converged,
        neg=SideStats.of(p[p < 0]),
        pos=SideStats.of(p[p > 0]),
    )


def analyze(
    w: np.ndarray, keys: Sequence[str], protocol: str = "all", seed: int = 0, quiet: bool = True
) -> list[Direction]:
    """Directions of the covariates of ``protocol`` from latents ``w`` (N, D) of the Multi-PIE samples
    ``keys``; samples outside a covariate's train group or classes are ignored for it."""
    covariates = covariates_of(protocol)
    entries = [parse_key(k) for k in keys]
    out = []
    with progress_bar(len(covariates), "fitting directions", quiet) as advance:
        for covariate in covariates:
            labels = [label(covariate, e) if e is not None else None for e in entries]
            rows = np.array([i for i, y in enumerate(labels) if y is not None], dtype=np.int64)
            y = np.array([labels[i] for i in rows], dtype=np.int64)
            out.append(fit_direction(covariate, w[rows], y, seed))
            advance(1)
    return out


def projections(
    ctx: Context, dataset: int, name: str, generator: str | None
) -> tuple[str, np.ndarray, list[str]]:
    """(generator, w (N, D), source keys) of a projections dataset, in sample-id order."""
    found = shards.committed(ctx.catalog, dataset_id=dataset, contents=[ShardContent.LATENT])
    spaces = sorted({row.space for row in found if row.space})
    if generator is None:
        if len(spaces) != 1:
            raise SynthdbError(
                f"dataset {name} holds latents of {', '.join(spaces) or 'no generator'}: "
                + ("pass --generator to pick one" if spaces else "pass a projections dataset")
            )
        generator = spaces[0]
    if any("w" not in row.columns for row in found if row.space == generator):
        raise SynthdbError(
            f"dataset {name} holds {generator} latents without a w column (W+ projections?): the "
            "directions live in W, so project with --space w"
        )
    latents = load_vectors(ctx, name, generator, ShardContent.LATENT, "w").by_sample()
    ids, w = latents.sample_ids, latents.vectors
    attrs = samples.sample_attributes(ctx.catalog, ids)
    keys = [(attrs.get(int(i)) or {}).get("source_key") for i in ids]
    if not any(keys):
        raise SynthdbError(
            f"dataset {name} has no samples with a source_key attribute: pass a projections dataset of "
            "Multi-PIE (`synthdb project --dataset MULTIPIE --protocol U ...`)"
        )
    return generator, w, [k or "" for k in keys]


def analyze_projections(
    ctx: Context,
    projections_dataset: str,
    name: str,
    protocol: str = "all",
    seed: int = 0,
    generator: str | None = None,
    quiet: bool = True,
) -> DirectionSet:
    """Fit the directions of ``protocol`` on a projections dataset and save them as set ``name``."""
    covariates_of(protocol)
    check_name_free(ctx.catalog, name)
    dataset = dataset_id(ctx.catalog, projections_dataset)
    generator, w, keys = projections(ctx, dataset, projections_dataset, generator)
    params = {"projections": projections_dataset, "name": name, "protocol": protocol, "generator": generator}
    with runs.recorded_run(
        ctx.catalog, RunKind.LATENT_ANALYSIS, algorithm="linear-svm", params=params, seed=seed
    ) as run_id:
        directions = analyze(w, keys, protocol, seed, quiet)
        found = DirectionSet(name, generator, protocol, directions, dataset_id=dataset, run_id=run_id)
        found.save(ctx.catalog)
        fits = {d.name: {"counts": list(d.counts), "accuracy": d.accuracy} for d in directions}
        runs.set_summary(ctx.catalog, run_id, {"direction_set": name, **fits})
    return found
