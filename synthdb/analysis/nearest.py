"""Nearest REF identities of every QUERY identity, and leaks (``synthdb check nearest``).

The question every synthetic dataset must answer: is any of my identities a real person of the data the
generator (or the FR model) was trained on? Each QUERY identity is represented by its reference sample
(``by="sample"``), by the normalised centroid of its samples (``by="identity"``) or by all its samples
(``by="all"``):

- by identity: centroid against the REF identities' centroids (a per-identity index);
- by sample: reference sample against every REF sample (a per-sample index); the REF identity's distance
  is that of its closest sample;
- by all: every sample against every REF sample, the distance of the closest pair (near-duplicates filed
  under another identity), plus exact duplicates, image files with the same bytes
  (:mod:`synthdb.analysis.duplicates`).

The ``k`` nearest distinct REF identities are kept with their angles (radians); a match closer than
``threshold`` is a leak. Checking a dataset against itself finds duplicate identities: an identity is never
its own match. Results are committed as a ``result`` shard (one row per query identity and rank) with a
``check`` run, and read back in ``synthdb query`` through the ``nearest`` view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from synthdb import defaults
from synthdb.analysis.duplicates import (
    ExactDuplicate,
    closest_per_identity,
    content_duplicates,
    dataset_digests,
)
from synthdb.analysis.index import Searcher, index_in_memory
from synthdb.analysis.vectors import (
    NO_IDENTITY,
    centroids,
    load_vectors,
    normalized,
    shared_model,
)
from synthdb.angles import from_cosine
from synthdb.catalog.datasets import dataset_id as lookup_dataset_id
from synthdb.catalog.runs import recorded_run, set_progress, set_summary
from synthdb.catalog.samples import identity_columns, identity_labels, key_of_samples
from synthdb.catalog.schema import CheckKind, RunKind, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.progress import progress_bar
from synthdb.store.commit import TableSpec, commit

BY = ("identity", "sample", "all")
RESULT_SPACE = CheckKind.NEAREST
SEARCH_BATCH = 4096
"""Queries per search call: FAISS's flat (exact) CPU index multiplies in blocks of 4,096 queries anyway, and
a call per block lets the progress line move (one call of 10,000 queries printed "0/10000" until done)."""


@dataclass(frozen=True)
class Match:
    query_identity_id: int
    query_identity: str
    rank: int
    ref_identity_id: int
    ref_identity: str
    ref_sample_id: int
    angle_rad: float
    leak: bool
    query_sample_id: int = -1


@dataclass
class NearestReport:
    """Per query identity (rows) its ``k`` nearest REF identities (columns), angles in radians.

    Missing matches (fewer than ``k`` REF identities) have identity -1 and angle NaN. ``query_sample_ids``
    (by sample and by all) is the QUERY sample of each match; ``exact`` (by all) the pairs of samples whose
    image files are byte-identical, ``unreadable`` the image files that could not be hashed, and
    ``sample_keys`` the keys of the samples these name.
    """

    query: str
    against: str
    model: str
    by: str
    k: int
    threshold_rad: float
    query_identity_ids: np.ndarray
    ref_identity_ids: np.ndarray
    ref_sample_ids: np.ndarray
    angles_rad: np.ndarray
    labels: dict[int, str]
    run_id: int | None = None
    shard_id: int | None = None
    index_id: int | None = None
    query_sample_ids: np.ndarray | None = None
    exact: list[ExactDuplicate] = field(default_factory=list)
    unreadable: int = 0
    sample_keys: dict[int, str] = field(default_factory=dict)

    @property
    def leak_mask(self) -> np.ndarray:
        return self.angles_rad < self.threshold_rad  # NaN compares False

    @property
    def leaking_queries(self) -> int:
        """Query identities with at least one REF identity below the threshold."""
        return int(self.leak_mask.any(axis=1).sum())

    def matches(self, leaks_only: bool = False) -> list[Match]:
        mask = self.leak_mask if leaks_only else self.ref_identity_ids != NO_IDENTITY
        rows, ranks = np.nonzero(mask)
        order = np.lexsort((ranks, self.angles_rad[rows, ranks]))
        out = []
        for row, rank in zip(rows[order], ranks[order], strict=True):
            query, ref = int(self.query_identity_ids[row]), int(self.ref_identity_ids[row, rank])
            angle = float(self.angles_rad[row, rank])
            sample = -1 if self.query_sample_ids is None else int(self.query_sample_ids[row, rank])
            out.append(
                Match(
                    query,
                    self.labels.get(query, str(query)),
                    int(rank) + 1,
                    ref,
                    self.labels.get(ref, str(ref)),
                    int(self.ref_sample_ids[row, rank]),
                    angle,
                    angle < self.threshold_rad,
                    sample,
                )
            )
        return out


def representatives(sample_ids: np.ndarray, identity_ids: np.ndarray, is_reference: np.ndarray) -> np.ndarray:
    """Per sample, whether it is its identity's representative: the reference sample (role ``reference``)
    when there is one, else the identity's first sample."""
    not_reference = (~is_reference).astype(np.int8)
    order = np.lexsort((sample_ids, not_reference, identity_ids))
    first = np.ones(len(order), np.bool_)
    first[1:] = identity_ids[order][1:] != identity_ids[order][:-1]
    chosen = np.zeros(len(sample_ids), np.bool_)
    chosen[order[first]] = True
    return chosen & (identity_ids != NO_IDENTITY)


def top_identities(
    scores: np.ndarray, ids: np.ndarray, identity_of: np.ndarray, exclude: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best distinct identities per row of a search result (ids sorted by score, best first).

    ``identity_of`` maps each result id to its identity (the identity itself for per-identity indexes);
    ``exclude`` is each row's own identity. Returns ``(scores, identities, ids, complete)`` of shape (n, k)
    where ``complete`` says the row found ``k`` identities. Vectorised: one lexsort, no per-row Python.
    """
    n, m = ids.shape
    valid = (ids != -1) & (identity_of != exclude[:, None])
    row = np.repeat(np.arange(n), m)[valid.ravel()]
    col = np.tile(np.arange(m), n)[valid.ravel()]
    ident = identity_of.ravel()[valid.ravel()]
    order = np.lexsort((col, ident, row))
    row, col, ident = row[order], col[order], ident[order]
    first = np.ones(len(row), np.bool_)
    first[1:] = (row[1:] != row[:-1]) | (ident[1:] != ident[:-1])
    row, col = row[first], col[first]
    order = np.lexsort((col, row))
    row, col = row[order], col[order]
    found = np.bincount(row, minlength=n)
    rank = np.arange(len(row)) - (np.cumsum(found) - found)[row]
    keep = rank < k
    out_scores = np.full((n, k), np.nan, np.float64)
    out_identities = np.full((n, k), NO_IDENTITY, np.int64)
    out_ids = np.full((n, k), -1, np.int64)
    at = (row[keep], rank[keep])
    out_scores[at] = scores[row[keep], col[keep]]
    out_identities[at] = identity_of[row[keep], col[keep]]
    out_ids[at] = ids[row[keep], col[keep]]
    return out_scores, out_identities, out_ids, found >= k


def _search_identities(
    searcher: Searcher,
    queries: np.ndarray,
    exclude: np.ndarray,
    k: int,
    identity_of: Callable[[np.ndarray], np.ndarray],
    advance: Callable[[int], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Search in batches; rows short of ``k`` distinct identities are searched again 4x deeper."""
    n = len(queries)
    scores = np.full((n, k), np.nan)
    identities = np.full((n, k), NO_IDENTITY, np.int64)
    ids = np.full((n, k), -1, np.int64)
    for start in range(0, n, SEARCH_BATCH):
        batch = np.arange(start, min(n, start + SEARCH_BATCH))
        depth = k + 1
        while len(batch):
            found_scores, found_ids = searcher.search(queries[batch], depth)
            s, i, d, complete = top_identities(
                found_scores, found_ids, identity_of(found_ids), exclude[batch], k
            )
            scores[batch], identities[batch], ids[batch] = s, i, d
            exhausted = depth >= searcher.ntotal
            batch = batch[~complete] if not exhausted else batch[:0]
            depth = min(depth * 4, searcher.ntotal)
        advance(min(SEARCH_BATCH, n - start))
    return scores, identities, ids


def check_nearest(
    ctx: Context,
    query: str,
    against: str,
    model: str | None = None,
    k: int = 5,
    threshold: float | None = None,
    by: str = "identity",
    factory: str = "Flat",
    quiet: bool = False,
) -> NearestReport:
    """Nearest ``against`` identities of every ``query`` identity; see the module docstring.

    ``threshold`` is an angle in radians: a match below it is a leak (None: the embedder's verification
    threshold). ``model`` may be None when the two datasets share the embeddings of one model only.
    """
    if by not in BY:
        raise SynthdbError(f"unknown --by '{by}': use {', '.join(BY)}")
    if k < 1:
        raise SynthdbError(f"--k {k} asks for no neighbour: use --k 1 or more")
    if threshold is not None and not 0 <= threshold <= np.pi:
        raise SynthdbError(
            f"--threshold {threshold} is not an angle in radians in [0, pi]: e.g. --threshold 0.6"
        )
    model = shared_model(ctx, [query, against], model)
    loaded = load_vectors(ctx, query, model)
    threshold = defaults.threshold(model) if threshold is None else threshold
    keep = loaded.identity_ids != NO_IDENTITY
    if not keep.any():
        raise SynthdbError(f"no embedded sample of '{query}' belongs to an identity: nothing to check")
    unit = normalized(loaded.vectors if keep.all() else loaded.vectors[keep], in_place=True)
    sample_ids, identity_ids = loaded.sample_ids[keep], loaded.identity_ids[keep]
    query_samples = None
    if by == "identity":
        query_identities, queries = centroids(unit, identity_ids)
    elif by == "all":
        query_identities, queries = identity_ids, unit
    else:
        ids, _, is_reference = identity_columns(ctx.catalog, loaded.dataset_id)
        chosen = representatives(sample_ids, identity_ids, is_reference[np.searchsorted(ids, sample_ids)])
        order = np.argsort(identity_ids[chosen], kind="stable")
        query_identities, queries = identity_ids[chosen][order], unit[chosen][order]
        query_samples = np.repeat(sample_ids[chosen][order][:, None], k, axis=1)
    per = "identity" if by == "identity" else "sample"
    params = {
        "query": query,
        "against": against,
        "model": model,
        "k": k,
        "threshold_rad": threshold,
        "by": by,
    }
    with recorded_run(
        ctx.catalog, RunKind.CHECK, algorithm=RESULT_SPACE, params={**params, "factory": factory}
    ) as run_id:
        # The index is searched in memory while its file is written: not read back, not waited for.
        with index_in_memory(ctx, against, model, factory, per, quiet=quiet) as info:
            searcher = Searcher(info.index)
            identity_of, ref_sample_of = _ref_maps(ctx, against, per)
            with progress_bar(len(queries), f"nearest in {against}", quiet) as advance:
                scores, ref_identities, ref_ids = _search_identities(
                    searcher, queries, query_identities, k, identity_of, advance
                )
        if by == "all":
            query_identities, scores, ref_identities, ref_ids, query_samples = closest_per_identity(
                query_identities, sample_ids, scores, ref_identities, ref_ids, k
            )
        angles = from_cosine(scores)
        ref_samples = ref_ids if per == "sample" else ref_sample_of(ref_ids)
        set_progress(ctx.catalog, run_id, 0.9)
        report = NearestReport(
            query,
            against,
            model,
            by,
            k,
            threshold,
            query_identities,
            ref_identities,
            ref_samples,
            angles,
            identity_labels(ctx.catalog, np.concatenate([query_identities, ref_identities.ravel()])),
            run_id=run_id,
            index_id=info.id,
            query_sample_ids=query_samples,
        )
        if by == "all":
            _add_exact_duplicates(ctx, report, quiet)
        report.shard_id = _commit_results(ctx, loaded.dataset_id, run_id, report)
        finite = angles[np.isfinite(angles)]
        set_summary(
            ctx.catalog,
            run_id,
            {
                "queries": len(query_identities),
                "leaking_queries": report.leaking_queries,
                "leak_pairs": int(report.leak_mask.sum()),
                "threshold_rad": threshold,
                "min_angle_rad": float(finite.min()) if len(finite) else None,
                "shard_id": report.shard_id,
                "index_id": info.id,
                **(
                    {"exact_duplicates": len(report.exact), "unreadable_images": report.unreadable}
                    if by == "all"
                    else {}
                ),
            },
        )
    return report


def _add_exact_duplicates(ctx: Context, report: NearestReport, quiet: bool) -> None:
    """Hash both datasets' image files, add the byte-identical pairs, and the keys of every sample named."""
    same = report.query == report.against
    with progress_bar(None, "hashing images", quiet) as advance:
        query = dataset_digests(ctx, report.query, advance)
        ref = query if same else dataset_digests(ctx, report.against, advance)
    report.exact = content_duplicates(query, ref, same)
    report.unreadable = query.unreadable + (0 if same else ref.unreadable)
    named = [m.query_sample_id for m in report.matches()] + [m.ref_sample_id for m in report.matches()]
    named += [i for d in report.exact for i in (d.query_sample_id, d.ref_sample_id)]
    report.sample_keys = key_of_samples(ctx.catalog, named)


def _ref_maps(ctx: Context, against: str, per: str):  # noqa: ANN202 - two closures
    """``identity_of(ids)``: the identity of each index id; ``sample_of(identities)``: each REF identity's
    representative sample, what a per-identity result row points to so the view can join the catalog."""
    ids, identity_ids, is_reference = identity_columns(ctx.catalog, lookup_dataset_id(ctx.catalog, against))
    if per == "identity":
        chosen = representatives(ids, identity_ids, is_reference)
        identities, samples = identity_ids[chosen], ids[chosen]
        order = np.argsort(identities)
        identities, samples = identities[order], samples[order]

        def sample_of(found: np.ndarray) -> np.ndarray:
            where = np.clip(np.searchsorted(identities, found), 0, max(len(identities) - 1, 0))
            return np.where((found != NO_IDENTITY) & (identities[where] == found), samples[where], -1)

        return (lambda found: found), sample_of

    def identity_of(found: np.ndarray) -> np.ndarray:
        where = np.clip(np.searchsorted(ids, found), 0, max(len(ids) - 1, 0))
        return np.where((found != -1) & (ids[where] == found), identity_ids[where], NO_IDENTITY)

    return identity_of, None


def _commit_results(ctx: Context, dataset_id: int, run_id: int, report: NearestReport) -> int:
    """One row per (query identity, rank): ``identity_id`` is the query identity, ``sample_id`` the REF
    sample, then ``rank`` (int32, from 1), ``angle_rad`` (float64) and ``leak`` (bool), typed columns
    (result layout :data:`synthdb.catalog.shards.TYPED_RESULTS`)."""
    rows, ranks = np.nonzero(report.ref_identity_ids != NO_IDENTITY)
    angles = report.angles_rad[rows, ranks].astype(np.float64)
    columns = {
        "sample_id": report.ref_sample_ids[rows, ranks].astype(np.int64),
        "identity_id": report.query_identity_ids[rows].astype(np.int64),
        "rank": (ranks + 1).astype(np.int32),
        "angle_rad": angles,
        "leak": angles < report.threshold_rad,
    }
    committed = commit(
        ctx.catalog,
        ctx.store,
        dataset_id=dataset_id,
        run_id=run_id,
        tables=[TableSpec(ShardContent.RESULT, RESULT_SPACE, columns)],
    )
    return committed.shard_ids[0]
