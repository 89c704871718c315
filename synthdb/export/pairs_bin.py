"""Verification pairs as insightface's evaluation ``.bin``: ``pickle((bins, issame_list))``, and their CSV.

``bins`` holds 2N encoded images, the two of each pair one after the other; ``issame_list`` N booleans.
insightface's ``eval/verification.py`` (``load_bin``) decodes them at 112x112 (pass ``--size 112``, or
``--crop arcface``) and scores 10-fold cross-validation over the pairs in file order. The file is
``OUT/<dataset>.bin``, so ``val_targets = ['<dataset>']`` with ``rec = OUT`` finds it; ``pairs.csv`` beside
it says which samples form each pair (position, fold, same, then key, sample id and identity of each side).

The pairs come from a protocol group of the catalog (``--protocol``/``--group``: LFW's pairs, in the
protocol's order; a pair whose image cannot be read is left out and counted, since the protocol fixes
them) or are sampled with ``--seed``: ``--pairs`` N, half from one identity and half from two, distinct,
laid out as 10 folds of genuine then impostor pairs, as LFW's files are. Sampled pairs are drawn from
usable samples only: a sample whose image cannot be used (unreadable, no face) is found when its pair is
encoded, and every pair touching it is replaced by a fresh draw, so the set keeps the balance asked for.

Only the pairs' samples are held: the selection streams past to count each identity's samples and, per
round of draws, to fetch the drawn ones by position.
"""

from __future__ import annotations

import csv
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthdb.catalog import protocols
from synthdb.errors import SynthdbError
from synthdb.export.bob import protocol_id
from synthdb.export.folder import safe_name, write_atomic
from synthdb.export.image_source import Skip
from synthdb.export.job import FormatSpec, Job
from synthdb.export.selection import SampleRecord

DEFAULT_PAIRS = 6000
FOLDS = 10
TRIES_PER_PAIR = 20
MAX_ROUNDS = 50
Pair = tuple[int, int, bool, int | None]
"""Two samples (positions in the selection, or sample ids for protocol pairs), whether they match, and
the fold of a sampled pair (None for a protocol's)."""


def _records(job: Job, wanted: set[int], by_id: bool) -> dict[int, SampleRecord]:
    """The selected samples at the ``wanted`` positions (or with the ``wanted`` ids), in one pass."""
    found = {}
    for position, sample in enumerate(job.selection.samples()):
        key = sample.id if by_id else position
        if key in wanted:
            found[key] = sample
    return found


def _encode(job: Job, records: dict[int, SampleRecord], images: dict[int, bytes], bad: set[int]) -> int:
    """Encode the records not seen yet into ``images`` or ``bad``; return how many turned out bad."""
    todo = [(k, s) for k, s in records.items() if k not in images and k not in bad]
    newly = 0
    for (key, sample), result in job.encoded(todo, lambda item: item[1].path):
        if isinstance(result, Skip):
            job.skips.add(sample, result)
            bad.add(key)
            newly += 1
        else:
            images[key] = result.data
        job.advance(1)
    return newly


# ---------------------------------------------------------------------------------------- protocol pairs


def protocol_pairs(job: Job) -> list[Pair]:
    """(first sample id, second sample id, same, None) of the protocol group, in the protocol's order."""
    pid = protocol_id(job, job.options.protocol)
    assert pid is not None
    names = protocols.groups_with_pairs(job.ctx.catalog, pid)
    group = job.options.group or (names[0] if len(names) == 1 else None)
    if group not in names:
        raise SynthdbError(
            f"protocol '{job.options.protocol}' has pairs in groups {', '.join(names) or 'none'}: "
            "pass one of them with --group"
        )
    rows = protocols.pairs(job.ctx.catalog, pid, group)
    if any(r.first_sample_id is None or r.second_sample_id is None for r in rows):
        raise SynthdbError(
            f"group '{group}' compares templates (sets of images): a .bin holds image "
            "pairs only; export a group of image pairs"
        )
    if any(r.genuine is None for r in rows):
        raise SynthdbError(f"group '{group}' has pairs without a same/different flag: a .bin needs them")
    return [(int(r.first_sample_id), int(r.second_sample_id), bool(r.genuine), None) for r in rows]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- sampled pairs


@dataclass
class Pool:
    """Each identity's samples as a range of selection positions (samples arrive grouped by identity)."""

    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of(cls, job: Job) -> Pool:
        sizes = np.zeros(job.selection.classes, np.int64)
        starts = np.zeros(job.selection.classes, np.int64)
        for position, sample in enumerate(job.selection.samples()):
            if sample.cls >= 0:
                if sizes[sample.cls] == 0:
                    starts[sample.cls] = position
                sizes[sample.cls] += 1
        return cls(starts, sizes)


class Drawer:
    """Distinct pairs drawn with one random generator, never touching a sample known to be unusable."""

    def __init__(self, pool: Pool, seed: int) -> None:
        self.pool, self.rng = pool, np.random.default_rng(seed)
        self.multi = np.flatnonzero(pool.sizes >= 2)
        self.seen: set[tuple[int, int]] = set()

    def genuine(self) -> tuple[int, int] | None:
        if not len(self.multi):
            return None
        c = int(self.multi[int(self.rng.integers(len(self.multi)))])
        a, b = self.rng.choice(int(self.pool.sizes[c]), size=2, replace=False)
        return int(self.pool.starts[c] + a), int(self.pool.starts[c] + b)

    def impostor(self) -> tuple[int, int] | None:
        if len(self.pool.sizes) < 2:
            return None
        c1, c2 = (int(c) for c in self.rng.choice(len(self.pool.sizes), size=2, replace=False))
        first = self.pool.starts[c1] + self.rng.integers(self.pool.sizes[c1])
        second = self.pool.starts[c2] + self.rng.integers(self.pool.sizes[c2])
        return int(first), int(second)

    def fill(self, pairs: list[tuple[int, int]], want: int, draw: Callable[[], Any], bad: set[int]) -> None:
        """Add distinct pairs free of ``bad`` samples until ``want``, giving up after TRIES_PER_PAIR each."""
        for _ in range(TRIES_PER_PAIR * (want - len(pairs))):
            if len(pairs) >= want:
                return
            pair = draw()
            if pair is None:
                return
            if pair[0] in bad or pair[1] in bad:
                continue
            if (key := (min(pair), max(pair))) not in self.seen:
                self.seen.add(key)
                pairs.append(pair)


def sample_pairs(
    job: Job, count: int, seed: int
) -> tuple[list[Pair], dict[int, bytes], dict[int, SampleRecord]]:
    """``count`` distinct usable pairs (half genuine) drawn with ``seed``, in LFW's layout of 10 folds; with
    their images and records, by selection position."""
    drawer = Drawer(Pool.of(job), seed)
    want = (count // 2, count - count // 2)
    genuine: list[tuple[int, int]] = []
    impostor: list[tuple[int, int]] = []
    images: dict[int, bytes] = {}
    records: dict[int, SampleRecord] = {}
    bad: set[int] = set()
    for _ in range(MAX_ROUNDS):
        drawer.fill(genuine, want[0], drawer.genuine, bad)
        drawer.fill(impostor, want[1], drawer.impostor, bad)
        needed = {p for pair in genuine + impostor for p in pair} - records.keys()
        records.update(_records(job, needed, by_id=False))
        if not _encode(job, records, images, bad):
            break
        genuine = [p for p in genuine if p[0] not in bad and p[1] not in bad]
        impostor = [p for p in impostor if p[0] not in bad and p[1] not in bad]
    if (len(genuine), len(impostor)) != want:
        raise SynthdbError(
            f"the selection yields only {len(genuine)} distinct same-identity and {len(impostor)} "
            f"different-identity pairs of usable samples, {count} were asked: lower --pairs or select more "
            "samples"
        )
    ordered: list[tuple[int, int, bool]] = []  # each tenth: a tenth of the same and of the different pairs
    split = (np.array_split(np.arange(n), FOLDS) for n in want)
    for g, i in zip(*split, strict=True):
        ordered += [(*genuine[k], True) for k in g] + [(*impostor[k], False) for k in i]
    # the fold a reader uses: insightface cuts the pairs in order into FOLDS contiguous parts (KFold)
    folds = np.empty(len(ordered), dtype=int)
    for fold, part in enumerate(np.array_split(np.arange(len(ordered)), FOLDS), 1):
        folds[part] = fold
    out = [(a, b, same, int(fold)) for (a, b, same), fold in zip(ordered, folds, strict=True)]
    return out, images, records


# ------------------------------------------------------------------------------------------------ output


def _pairs_csv(pairs: list[Pair], records: dict[int, SampleRecord]) -> bytes:
    """``pairs.csv``: which samples form each pair of the ``.bin``, in its order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    side = ["key", "sample_id", "identity"]
    writer.writerow(["pair", "fold", "same", *(f"first_{c}" for c in side), *(f"second_{c}" for c in side)])
    for n, (a, b, same, fold) in enumerate(pairs):
        first, second = records[a], records[b]
        writer.writerow([n, "" if fold is None else fold, int(same), first.key, first.id, first.identity,
                         second.key, second.id, second.identity])  # fmt: skip
    return buffer.getvalue().encode()


def write(job: Job) -> dict[str, Any]:
    dropped = 0
    if job.options.protocol is not None:
        wanted = protocol_pairs(job)
        records = _records(job, {i for a, b, *_ in wanted for i in (a, b)}, by_id=True)
        pairs = [p for p in wanted if p[0] in records and p[1] in records]
        dropped = len(wanted) - len(pairs)
        images: dict[int, bytes] = {}
        _encode(job, records, images, set())
    else:
        pairs, images, records = sample_pairs(job, job.options.pairs or DEFAULT_PAIRS, job.options.seed)
    usable = [p for p in pairs if p[0] in images and p[1] in images]
    if not usable:
        raise SynthdbError("no pair has both images readable: see the skipped samples in the run summary")
    bins = [images[k] for a, b, *_ in usable for k in (a, b)]
    issame = [same for _, _, same, _ in usable]
    name = f"{safe_name(job.selection.dataset.name)}.bin"
    write_atomic(job.out / name, pickle.dumps((bins, issame), protocol=4))
    write_atomic(job.out / "pairs.csv", _pairs_csv(usable, records))
    return {
        "pairs": len(issame),
        "genuine": sum(issame),
        "impostor": len(issame) - sum(issame),
        "pairs_not_selected": dropped,
        "pairs_unreadable": len(pairs) - len(usable),
        "images": len(bins),
        "file": name,
        "pairs_csv": "pairs.csv",
    }


FORMAT = FormatSpec(
    "pairs-bin", write, needs_identity=False, needs_image=True, encoding="jpeg", default_size=112
)
