"""All-samples near-duplicates and exact duplicates (``synthdb check nearest --by all``).

``--by sample`` compares one representative sample per identity and ``--by identity`` the centroids, so a
copy of one photo filed under another identity is missed unless it happens to be that identity's
representative. ``--by all`` searches every QUERY sample against every REF sample: per QUERY identity, the
nearest REF identity is the one with the closest pair of samples, whichever samples they are
(:func:`closest_per_identity`). Independently of any embedding, :func:`content_duplicates` finds image
files with the same bytes (SHA-256): a copy is found even where no face was detected and nothing was
embedded.

The files hashed are the datasets' own images, read the way imports read them (:mod:`synthdb.untrusted`):
only regular files that resolve inside the dataset's root, at most ``MAX_IMAGE_BYTES`` each; a file that
cannot be read is counted, never followed elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthdb.catalog.datasets import get_dataset
from synthdb.catalog.samples import NO_IDENTITY, sample_columns
from synthdb.context import Context
from synthdb.untrusted import MAX_IMAGE_BYTES, Refused, open_regular, resolve_inside

HASH_THREADS = 4
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExactDuplicate:
    """Two samples whose image files hold the same bytes (``sha256``); ``same_identity`` when both are
    filed under one identity (a repeated photo, not a leak)."""

    query_sample_id: int
    query_key: str
    query_identity_id: int
    ref_sample_id: int
    ref_key: str
    ref_identity_id: int
    sha256: str
    same_identity: bool


@dataclass(frozen=True)
class Digests:
    """SHA-256 of a dataset's image files by sample, and the samples whose file could not be read."""

    sample_ids: np.ndarray
    identity_ids: np.ndarray
    keys: np.ndarray
    digests: list[str]
    unreadable: int


def closest_per_identity(
    identities: np.ndarray,
    sample_ids: np.ndarray,
    scores: np.ndarray,
    ref_identities: np.ndarray,
    ref_ids: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From each QUERY sample's ``k`` best REF identities (rows aligned with ``identities`` and
    ``sample_ids``; cosine ``scores``, best first), each QUERY identity's ``k`` best: a REF identity's score
    is its best over the identity's samples. That is exact: a REF identity among an identity's ``k`` best is
    among the ``k`` best of the sample that reaches it.

    Returns ``(query identities, scores, ref identities, ref ids, query sample ids)``, (n,) then (n, k) each,
    identities in increasing order, missing entries NaN / NO_IDENTITY / -1.
    """
    n, width = scores.shape
    rows = np.repeat(np.arange(n), width)
    valid = (ref_identities != NO_IDENTITY).ravel()
    flat_scores = np.nan_to_num(scores.ravel(), nan=-np.inf)
    rows, flat_scores = rows[valid], flat_scores[valid]
    owner, ref = identities[rows], ref_identities.ravel()[valid]
    ids, query_samples = ref_ids.ravel()[valid], sample_ids[rows]
    order = np.lexsort((-flat_scores, ref, owner))  # per (owner, ref): the best pair first
    first = np.ones(len(order), np.bool_)
    first[1:] = (owner[order][1:] != owner[order][:-1]) | (ref[order][1:] != ref[order][:-1])
    pick = order[first]
    order = np.lexsort((ref[pick], -flat_scores[pick], owner[pick]))  # per owner: best REF identity first
    pick = pick[order]
    out_identities = np.unique(identities)
    at = np.searchsorted(out_identities, owner[pick])
    counts = np.bincount(at, minlength=len(out_identities))
    rank = np.arange(len(pick)) - (np.cumsum(counts) - counts)[at]
    keep = rank < k
    shape = (len(out_identities), k)
    best = np.full(shape, np.nan)
    best_ref, best_ids, best_query = (np.full(shape, fill, np.int64) for fill in (NO_IDENTITY, -1, -1))
    where = (at[keep], rank[keep])
    chosen = pick[keep]
    best[where], best_ref[where] = flat_scores[chosen], ref[chosen]
    best_ids[where], best_query[where] = ids[chosen], query_samples[chosen]
    return out_identities, best, best_ref, best_ids, best_query


def dataset_digests(ctx: Context, dataset: str, advance: Callable[[int], None] = lambda n: None) -> Digests:
    """SHA-256 of the image file of every sample of ``dataset`` that has one (read in threads)."""
    row = get_dataset(ctx.catalog, dataset)
    columns = sample_columns(ctx.catalog, row.id, with_path=True)
    if row.root is None or not len(columns.id):
        empty = np.zeros(0, np.int64)
        return Digests(empty, empty, np.zeros(0, object), [], 0)
    root = Path(row.root).resolve()

    def digest(rel: str) -> str | None:
        try:
            return _file_sha256(resolve_inside(root, rel))
        except Refused:
            return None
        finally:
            advance(1)

    with ThreadPoolExecutor(HASH_THREADS) as pool:
        found = list(pool.map(digest, columns.path))
    readable = np.array([d is not None for d in found], np.bool_)
    return Digests(
        columns.id[readable],
        columns.identity_id[readable],
        columns.key[readable],
        [d for d in found if d is not None],
        int((~readable).sum()),
    )


def _file_sha256(path: Path) -> str:
    """The SHA-256 of a regular file, refused past the image size cap (hashlib releases the GIL)."""
    hasher = hashlib.sha256()
    read = 0
    with open_regular(path, "image") as fh:
        while chunk := fh.read(_CHUNK):
            read += len(chunk)
            if read > MAX_IMAGE_BYTES:
                raise Refused("too_large", f"image {path} holds more than {MAX_IMAGE_BYTES} bytes")
            hasher.update(chunk)
    return hasher.hexdigest()


def content_duplicates(query: Digests, ref: Digests, same_dataset: bool) -> list[ExactDuplicate]:
    """Every (QUERY sample, REF sample) pair whose files have equal SHA-256, a sample never paired with
    itself (and, within one dataset, each unordered pair once), in (query, ref) sample-id order."""
    by_digest: dict[str, list[int]] = {}
    for j, digest in enumerate(ref.digests):
        by_digest.setdefault(digest, []).append(j)
    out = []
    for i, digest in enumerate(query.digests):
        for j in by_digest.get(digest, ()):
            a, b = int(query.sample_ids[i]), int(ref.sample_ids[j])
            if same_dataset and a >= b:
                continue
            qi, ri = int(query.identity_ids[i]), int(ref.identity_ids[j])
            out.append(
                ExactDuplicate(
                    a, str(query.keys[i]), qi, b, str(ref.keys[j]), ri, digest, qi == ri != NO_IDENTITY
                )
            )
    return sorted(out, key=lambda d: (d.query_sample_id, d.ref_sample_id))
