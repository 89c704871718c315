"""Verification accuracy of an embedder on a dataset's pairs (``synthdb evaluate pairs``).

The pairs are a protocol's (LFW's View 1 and View 2, IJB-C's test1 template pairs, any imported protocol
with pairs) or those of a ``.bin`` made by the pairs-bin export (its ``pairs.csv`` says which samples form
each pair, in the ``.bin``'s order). A side of a pair is one sample, or a template: the samples sharing the
template's id (IJB-C), represented by the normalised mean of their unit embeddings. A pair whose side has no
embedding (no face found, say) cannot be scored: it is counted and left out.

Accuracy, as insightface's ``eval/verification.py`` reports it on a ``.bin``: the pairs, in order, are cut
into ``folds`` contiguous runs (LFW's ten View 2 folds); for each fold the threshold on the squared L2
distance between unit embeddings is the one of insightface's grid (0 to 4 by 0.01, the first best) that is
most accurate on the other folds, and the fold's accuracy is measured at it (a pair is "same" below the
threshold); the result is the mean and the (population) standard deviation over folds. Thresholds are
reported as angles in radians (a squared distance d is the angle ``arccos(1 - d / 2)``).

TAR at FAR, as bob.measure reports it: scores are cosine similarities (higher: more alike), the threshold
is ``bob.measure.far_threshold``'s, the lowest impostor score at which at most the target fraction of
impostor scores is at or above it, and TAR is the fraction of genuine scores at or above it. A target below
one impostor pair (FAR < 1 / impostors) cannot be estimated and is left out, said so.

``scores`` writes every scored pair as bob reads it (``bob.bio.base.score.load.split``): ``FILE.csv`` in
bob's CSV score format (a header, then ``bio_ref_template_id, bio_ref_subject_id, probe_template_id,
probe_subject_id, score``; any characters in labels), any other name in the 4-column format (``claimed_id
real_id test_label score``, whitespace-separated). The first side of a pair is the reference, the second the
probe; bob tells genuine from impostor pairs by the subjects (the identities), so they must agree with the
pairs' own flags.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthdb.analysis.params import EvaluateParams
from synthdb.analysis.vectors import load_vectors, normalized, shared_model
from synthdb.catalog import protocols
from synthdb.catalog.datasets import dataset_id as lookup_dataset_id
from synthdb.catalog.samples import NO_IDENTITY, SampleFacts, sample_facts, samples_by_label
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.sources.csv_rows import csv_rows

DISTANCE_GRID = np.arange(0, 4, 0.01)
"""insightface's thresholds: squared L2 distances between unit embeddings."""
FAR_TARGETS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
PAIRS_CSV_COLUMNS = ("first_sample_id", "second_sample_id", "same")
CSV_HEADER = ("bio_ref_template_id", "bio_ref_subject_id", "probe_template_id", "probe_subject_id", "score")


@dataclass(frozen=True)
class TarAtFar:
    """One operating point: the FAR asked for, the cosine threshold as an angle, the FAR and TAR there."""

    far_target: float
    threshold_rad: float
    far: float
    tar: float


@dataclass
class PairEvaluation:
    """What ``evaluate pairs`` measured; ``fold_accuracy`` and ``fold_threshold_rad`` per fold."""

    dataset: str
    model: str
    source: str
    pairs: int
    genuine: int
    impostor: int
    unscored: int
    accuracy: float
    accuracy_std: float
    fold_accuracy: list[float]
    fold_threshold_rad: list[float]
    tar_at_far: list[TarAtFar]
    not_estimable: list[float] = field(default_factory=list)
    scores_file: Path | None = None

    def as_json(self) -> dict[str, Any]:
        """The numbers as numbers (angles in radians, rates in [0, 1]), with stable keys."""
        out = asdict(self)
        out["tar_at_far"] = [asdict(point) for point in self.tar_at_far]
        out["scores_file"] = None if self.scores_file is None else str(self.scores_file)
        return out


@dataclass
class PairSet:
    """Pairs in order; each side indexes ``units`` (a sample's id, or a template's sample ids), and each
    unit has a name (sample key or template id) and a subject (identity label) for the score file."""

    source: str
    first: np.ndarray
    second: np.ndarray
    genuine: np.ndarray
    units: list[list[int]]
    names: list[str]
    subjects: list[str | None]


class _Units:
    """Sides of pairs as unit indices: one per distinct sample or template, in order of appearance."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, Any], int] = {}

    def of(self, kind: str, value: Any) -> int:
        return self.index.setdefault((kind, value), len(self.index))


def evaluate_pairs(ctx: Context, params: EvaluateParams) -> PairEvaluation:
    """Score the pairs ``params`` names with the embedder and cross-validate; see the module docstring."""
    params.check()
    did = lookup_dataset_id(ctx.catalog, params.dataset)
    model = shared_model(ctx, [params.dataset], params.model)
    if params.pairs_csv:
        pair_set = _csv_pairs(ctx, did, Path(params.pairs_csv))
    else:
        pair_set = _protocol_pairs(ctx, did, params.dataset, params.protocol, params.group)
    if len(pair_set.genuine) < params.folds:
        raise SynthdbError(
            f"{pair_set.source} has {len(pair_set.genuine)} pairs, fewer than --folds {params.folds}"
        )
    cosine, scored = _score(ctx, params.dataset, model, pair_set)
    genuine = pair_set.genuine
    same, other = int((genuine & scored).sum()), int((~genuine & scored).sum())
    if same < 1 or other < 2:
        raise SynthdbError(
            f"{pair_set.source}: {same} genuine and {other} impostor pairs have embeddings of {model}; "
            "accuracy needs one genuine and two impostor pairs "
            f"(embed the dataset: `synthdb embed {params.dataset} --model {model}`)"
        )
    folds = _fold_of(len(genuine), params.folds)[scored]
    fold_accuracy, fold_threshold = cross_validated_accuracy(cosine[scored], genuine[scored], folds)
    points, not_estimable = tar_at_far(cosine[scored & ~genuine], cosine[scored & genuine])
    written = None
    if params.scores:
        written = write_scores(Path(params.scores), pair_set, cosine, scored)
    return PairEvaluation(
        dataset=params.dataset,
        model=model,
        source=pair_set.source,
        pairs=int(scored.sum()),
        genuine=same,
        impostor=other,
        unscored=int((~scored).sum()),
        accuracy=float(np.mean(fold_accuracy)),
        accuracy_std=float(np.std(fold_accuracy)),
        fold_accuracy=fold_accuracy,
        fold_threshold_rad=fold_threshold,
        tar_at_far=points,
        not_estimable=not_estimable,
        scores_file=written,
    )


# ------------------------------------------------------------------------------------------------ pairs


TRAINING_GROUPS = ("train", "training")
"""Protocol groups whose pairs are for tuning, left out of the score unless asked for by ``--group``."""


def _protocol_pairs(ctx: Context, did: int, dataset: str, protocol: str | None, group: str | None) -> PairSet:
    """The pairs of a protocol's groups (``group``, else every group with pairs but the training ones, in
    name order)."""
    found = protocols.protocols_of(ctx.catalog, did)
    with_pairs = {name: pid for name, pid in found.items() if protocols.groups_with_pairs(ctx.catalog, pid)}
    if protocol is None:
        if len(with_pairs) != 1:
            listed = ", ".join(with_pairs) or "none"
            raise SynthdbError(
                f"dataset '{dataset}' has protocols with pairs: {listed}; pass one with --protocol "
                "(or --pairs-csv, the pairs.csv of a pairs-bin export)"
            )
        protocol = next(iter(with_pairs))
    if protocol not in with_pairs:
        raise SynthdbError(
            f"dataset '{dataset}' has no protocol '{protocol}' with pairs: use one of "
            f"{', '.join(with_pairs) or 'none (import a protocol, or pass --pairs-csv)'}"
        )
    groups = protocols.groups_with_pairs(ctx.catalog, with_pairs[protocol])
    if group is not None and group not in groups:
        raise SynthdbError(f"protocol '{protocol}' has pairs in groups {', '.join(groups)}: pick one of them")
    # without --group: every group but the training ones (LFW View 1's train pairs are for tuning)
    chosen = [group] if group else [g for g in groups if g not in TRAINING_GROUPS] or groups
    rows = (row for name in chosen for row in protocols.iter_pairs(ctx.catalog, with_pairs[protocol], name))
    source = f"protocol {protocol}" + (f" group {', '.join(chosen)}" if chosen != groups else "")
    return _pair_set(ctx, did, source, _sides(rows))


def _sides(
    rows: Iterator[protocols.PairRow],
) -> Iterator[tuple[tuple[str, Any], tuple[str, Any], bool | None]]:
    """Each pair row as two sides, ``("sample", id)`` or ``("template", label)``, and its flag."""
    for row in rows:
        first = (
            ("sample", row.first_sample_id)
            if row.first_sample_id is not None
            else ("template", row.first_template)
        )
        second = (
            ("sample", row.second_sample_id)
            if row.second_sample_id is not None
            else ("template", row.second_template)
        )
        yield first, second, row.genuine


def _csv_pairs(ctx: Context, did: int, path: Path) -> PairSet:
    """The pairs of a pairs-bin export's ``pairs.csv`` (read as untrusted input), checked against the
    catalog: every sample must be one of this dataset's, with the key the file names."""
    real = path.expanduser().resolve()
    fix = "pass the pairs.csv that `synthdb export DATASET OUT --format pairs-bin` wrote for this dataset"
    if not real.is_file():
        raise SynthdbError(f"{path} is not a file: {fix}")
    rows = list(csv_rows(real.parent, real, PAIRS_CSV_COLUMNS, fix, "pairs file"))
    ids: list[tuple[int, int, bool]] = []
    for line, row in rows:
        try:
            pair = (int(row["first_sample_id"]), int(row["second_sample_id"]), row["same"].strip())
        except ValueError:
            raise SynthdbError(f"{path}:{line}: sample ids must be whole numbers; {fix}") from None
        if pair[2] not in ("0", "1"):
            raise SynthdbError(f"{path}:{line}: same is {pair[2]!r}, not 0 or 1; {fix}")
        ids.append((pair[0], pair[1], pair[2] == "1"))
    facts = sample_facts(ctx.catalog, {i for a, b, _ in ids for i in (a, b)})
    for (line, row), (a, b, _) in zip(rows, ids, strict=True):
        for side, sid in (("first", a), ("second", b)):
            fact = facts.get(sid)
            key = row.get(f"{side}_key")
            if fact is None or fact.dataset_id != did or (key is not None and key != fact.key):
                raise SynthdbError(
                    f"{path}:{line}: sample {sid} is not {key or 'a sample'} of this dataset; {fix}"
                )
    sides = ((("sample", a), ("sample", b), same) for a, b, same in ids)
    return _pair_set(ctx, did, f"{path.name} ({len(ids)} pairs)", sides, facts)


def _pair_set(
    ctx: Context,
    did: int,
    source: str,
    sides: Iterator[tuple[tuple[str, Any], tuple[str, Any], bool | None]],
    facts: dict[int, SampleFacts] | None = None,
) -> PairSet:
    """Units, names and subjects of the pairs' sides; a flag the catalog lacks is the subjects' equality."""
    units = _Units()
    first, second, flags = [], [], []
    for a, b, same in sides:
        first.append(units.of(*a))
        second.append(units.of(*b))
        flags.append(same)
    if not first:
        raise SynthdbError(f"{source} holds no pairs")
    keys = list(units.index)
    sample_ids = {v for kind, v in keys if kind == "sample"}
    members = samples_by_label(ctx.catalog, did, {v for kind, v in keys if kind == "template"})
    missing = [v for kind, v in keys if kind == "template" and v not in members]
    if missing:
        raise SynthdbError(f"{source}: template {missing[0]} has no sample in the dataset; re-import it")
    wanted = sample_ids | {i for ids in members.values() for i in ids[:1]}
    facts = {**(facts or {}), **sample_facts(ctx.catalog, wanted - set(facts or {}))}
    unit_samples = [[v] if kind == "sample" else members[v] for kind, v in keys]
    names = [facts[v].key if kind == "sample" else str(v) for kind, v in keys]
    subjects = [facts[ids[0]].identity for ids in unit_samples]
    identity = np.array([facts[ids[0]].identity_id for ids in unit_samples], np.int64)
    first_a, second_a = np.array(first, np.int64), np.array(second, np.int64)
    same_identity = (identity[first_a] == identity[second_a]) & (identity[first_a] != NO_IDENTITY)
    genuine = np.array([s if s is not None else bool(d) for s, d in zip(flags, same_identity, strict=True)])
    return PairSet(source, first_a, second_a, genuine.astype(np.bool_), unit_samples, names, subjects)


# ------------------------------------------------------------------------------------------------ scores


def _score(ctx: Context, dataset: str, model: str, pairs: PairSet) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity, scored) per pair: a unit is the normalised mean of its samples' unit embeddings."""
    loaded = load_vectors(ctx, dataset, model).by_sample()
    normalized(loaded.vectors)  # refuses zero and non-finite vectors, which have no direction
    raw = loaded.vectors.astype(np.float64)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)  # float64: scores as exact as the embeddings
    flat = np.array([i for ids in pairs.units for i in ids], np.int64)
    owner = np.repeat(np.arange(len(pairs.units)), [len(ids) for ids in pairs.units])
    at = np.clip(np.searchsorted(loaded.sample_ids, flat), 0, max(len(loaded.sample_ids) - 1, 0))
    present = (loaded.sample_ids[at] == flat) if len(loaded.sample_ids) else np.zeros(len(flat), np.bool_)
    sums = np.zeros((len(pairs.units), unit.shape[1]))
    np.add.at(sums, owner[present], unit[at[present]])
    counts = np.bincount(owner[present], minlength=len(pairs.units))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    embedded = sums / np.where(norms > 0, norms, 1.0)
    cosine = np.einsum("ij,ij->i", embedded[pairs.first], embedded[pairs.second])
    scored = (counts[pairs.first] > 0) & (counts[pairs.second] > 0)
    return np.clip(cosine, -1.0, 1.0), scored


def _fold_of(n: int, folds: int) -> np.ndarray:
    """The fold of each of ``n`` pairs in order: contiguous runs, the first ``n % folds`` one longer
    (sklearn's ``KFold`` without shuffling, which insightface uses)."""
    sizes = [len(part) for part in np.array_split(np.arange(n), folds)]
    return np.repeat(np.arange(folds), sizes)


def _accuracy(thresholds: np.ndarray, distance: np.ndarray, genuine: np.ndarray) -> np.ndarray:
    """insightface's accuracy at each threshold: pairs below it called the same, counted exactly."""
    same = np.sort(distance[genuine])
    other = np.sort(distance[~genuine])
    true_accepts = np.searchsorted(same, thresholds, side="left")
    true_rejects = len(other) - np.searchsorted(other, thresholds, side="left")
    return (true_accepts + true_rejects) / len(distance)


def cross_validated_accuracy(
    cosine: np.ndarray, genuine: np.ndarray, folds: np.ndarray
) -> tuple[list[float], list[float]]:
    """Per fold, the accuracy at the grid threshold best on the other folds, and that threshold (rad)."""
    distance = 2.0 - 2.0 * cosine
    accuracy, threshold = [], []
    for fold in np.unique(folds):
        test = folds == fold
        best = int(np.argmax(_accuracy(DISTANCE_GRID, distance[~test], genuine[~test])))
        chosen = DISTANCE_GRID[best : best + 1]
        accuracy.append(float(_accuracy(chosen, distance[test], genuine[test])[0]))
        threshold.append(math.acos(max(-1.0, 1.0 - float(chosen[0]) / 2)))
    return accuracy, threshold


def far_threshold(negatives: np.ndarray, far: float) -> float:
    """bob.measure's ``far_threshold``: the lowest impostor score at which the fraction of impostor scores
    at or above it is at most ``far`` (just above the highest impostor score when none may be)."""
    ordered = np.sort(negatives)
    at_or_above = len(ordered) - np.searchsorted(ordered, ordered, side="left")
    allowed = at_or_above / len(ordered) <= far
    if not allowed.any():
        return float(np.nextafter(ordered[-1], np.inf))
    return float(ordered[allowed].min())


def tar_at_far(
    negatives: np.ndarray, positives: np.ndarray, targets: tuple[float, ...] = FAR_TARGETS
) -> tuple[list[TarAtFar], list[float]]:
    """TAR at each FAR target that the impostor pairs can estimate, and the targets they cannot."""
    points, not_estimable = [], []
    for target in targets:
        if target * len(negatives) < 1:
            not_estimable.append(target)
            continue
        threshold = far_threshold(negatives, target)
        angle = math.acos(min(1.0, max(-1.0, threshold)))
        far = float(np.mean(negatives >= threshold))
        points.append(TarAtFar(target, angle, far, float(np.mean(positives >= threshold))))
    return points, not_estimable


# ------------------------------------------------------------------------------------------------ bob


def write_scores(path: Path, pairs: PairSet, cosine: np.ndarray, scored: np.ndarray) -> Path:
    """Write the scored pairs as bob reads them (see the module docstring), atomically; return the path."""
    path = path.expanduser().absolute()
    rows = []
    for n in np.flatnonzero(scored):
        reference, probe = int(pairs.first[n]), int(pairs.second[n])
        subjects = pairs.subjects[reference], pairs.subjects[probe]
        if None in subjects:
            raise SynthdbError(
                f"pair {n + 1} of {pairs.source} has a sample without an identity: bob tells genuine from "
                "impostor pairs by identity, so no score file can say which it is"
            )
        if (subjects[0] == subjects[1]) != bool(pairs.genuine[n]):
            raise SynthdbError(
                f"pair {n + 1} of {pairs.source} is flagged {'genuine' if pairs.genuine[n] else 'impostor'} "
                f"but compares identities {subjects[0]!r} and {subjects[1]!r}: bob would read it the other "
                "way"
            )
        rows.append(
            (pairs.names[reference], subjects[0], pairs.names[probe], subjects[1], repr(float(cosine[n])))
        )
    text = _csv_text(rows) if path.suffix == ".csv" else _four_column_text(rows, path)
    _write_atomic(path, text)
    return path


def _csv_text(rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def _four_column_text(rows: list[tuple[str, ...]], path: Path) -> str:
    """``claimed_id real_id test_label score`` lines; labels with whitespace cannot be written so."""
    for _, reference, probe_name, probe, _ in rows:
        for label in (reference, probe, probe_name):
            if not label or any(c.isspace() for c in label):
                raise SynthdbError(
                    f"label {label!r} cannot go in a 4-column score file (whitespace separates its columns): "
                    f"name the file {path.with_suffix('.csv').name} for bob's CSV score format"
                )
    return "".join(f"{ref} {probe} {name} {score}\n" for _, ref, name, probe, score in rows)


def _write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file beside it, or a one-line error saying why not."""
    if path.is_dir():
        raise SynthdbError(f"{path} is a folder: pass a file name for --scores")
    staged = path.with_name(f".{path.name}.partial")
    try:
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
        raise SynthdbError(
            f"cannot write {path} ({exc.strerror or exc}): pass a writable --scores file"
        ) from None
