"""Verification pairs as insightface's evaluation ``.bin``: ``pickle((bins, issame_list))``.

``bins`` holds 2N encoded images, the two of each pair one after the other; ``issame_list`` N booleans.
insightface's ``eval/verification.py`` (``load_bin``) decodes them at 112x112 (the default ``--size``)
and scores 10-fold cross-validation over the pairs in file order. The pairs come from a protocol group
of the catalog (``--protocol``/``--group``: LFW's pairs, in the protocol's order) or are sampled with
``--seed``: ``--pairs`` N, half from one identity and half from two, drawn without repeats and laid out
as 10 folds of genuine then impostor pairs, as LFW's files are. The file is ``OUT/<dataset>.bin``, so
``val_targets = ['<dataset>']`` with ``rec = OUT`` finds it. A pair whose image cannot be read is left
out and counted, never replaced.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
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


def protocol_pairs(job: Job) -> tuple[list[tuple[int, int, bool]], int]:
    """(first sample id, second sample id, same) of the protocol group, and how many the filter dropped."""
    pid = protocol_id(job, job.options.protocol)
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
    selected = {s.id for s in job.selection.samples}
    kept = [
        (r.first_sample_id, r.second_sample_id, bool(r.genuine))
        for r in rows
        if r.first_sample_id in selected and r.second_sample_id in selected
    ]
    return kept, len(rows) - len(kept)


def sample_pairs(samples: list[SampleRecord], count: int, seed: int) -> list[tuple[int, int, bool]]:
    """``count`` distinct pairs (half genuine) drawn with ``seed``, in LFW's layout of 10 folds."""
    by_class: dict[int, list[int]] = {}
    for s in samples:
        by_class.setdefault(s.cls, []).append(s.id)
    classes = [ids for cls, ids in sorted(by_class.items()) if cls >= 0]
    multi = [ids for ids in classes if len(ids) >= 2]
    rng = np.random.default_rng(seed)
    want_genuine = count // 2
    genuine = _draw(want_genuine, lambda: _genuine(rng, multi) if multi else None)
    impostor = _draw(count - want_genuine, lambda: _impostor(rng, classes) if len(classes) >= 2 else None)
    if len(genuine) < want_genuine or len(impostor) < count - want_genuine:
        raise SynthdbError(
            f"the selection yields only {len(genuine)} distinct same-identity and {len(impostor)} "
            f"different-identity pairs, {count} were asked: lower --pairs or select more samples"
        )
    out: list[tuple[int, int, bool]] = []
    for g, i in zip(
        np.array_split(np.arange(len(genuine)), FOLDS),
        np.array_split(np.arange(len(impostor)), FOLDS),
        strict=True,
    ):
        out += [(*genuine[k], True) for k in g] + [(*impostor[k], False) for k in i]
    return out


def _genuine(rng: np.random.Generator, multi: list[list[int]]) -> tuple[int, int]:
    ids = multi[int(rng.integers(len(multi)))]
    a, b = rng.choice(len(ids), size=2, replace=False)
    return ids[int(a)], ids[int(b)]


def _impostor(rng: np.random.Generator, classes: list[list[int]]) -> tuple[int, int]:
    c1, c2 = rng.choice(len(classes), size=2, replace=False)
    first, second = classes[int(c1)], classes[int(c2)]
    return first[int(rng.integers(len(first)))], second[int(rng.integers(len(second)))]


def _draw(count: int, draw: Callable[[], tuple[int, int] | None]) -> list[tuple[int, int]]:
    """Up to ``count`` distinct unordered pairs from ``draw()``, giving up after 20 tries per pair."""
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    for _ in range(20 * count):
        if len(out) == count:
            break
        pair = draw()
        if pair is None:
            break
        if (key := (min(pair), max(pair))) not in seen:
            seen.add(key)
            out.append(pair)
    return out


def write(job: Job) -> dict[str, Any]:
    dropped = 0
    if job.options.protocol is not None:
        pairs, dropped = protocol_pairs(job)
    else:
        pairs = sample_pairs(job.selection.samples, job.options.pairs or DEFAULT_PAIRS, job.options.seed)
    by_id = {s.id: s for s in job.selection.samples}
    needed = list(dict.fromkeys(i for a, b, _ in pairs for i in (a, b)))
    images: dict[int, bytes] = {}
    for sample, result in job.encoded([by_id[i] for i in needed]):
        if isinstance(result, Skip):
            job.skips.add(sample, result)
        else:
            images[sample.id] = result.data
        job.advance(1)
    bins: list[bytes] = []
    issame: list[bool] = []
    for a, b, same in pairs:
        if a in images and b in images:
            bins += [images[a], images[b]]
            issame.append(same)
    if not issame:
        raise SynthdbError("no pair has both images readable: see the skipped samples in the run summary")
    name = f"{safe_name(job.selection.dataset.name)}.bin"
    write_atomic(job.out / name, pickle.dumps((bins, issame), protocol=4))
    return {
        "pairs": len(issame),
        "genuine": sum(issame),
        "impostor": len(issame) - sum(issame),
        "pairs_not_selected": dropped,
        "pairs_unreadable": len(pairs) - len(issame),
        "images": len(bins),
        "file": name,
    }


FORMAT = FormatSpec(
    "pairs-bin", write, needs_identity=False, needs_image=True, encoding="jpeg", default_size=112
)
