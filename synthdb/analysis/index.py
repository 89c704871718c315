"""FAISS indexes over committed embeddings (``synthdb index build``), recorded in the ``vector_index`` table.

An index holds L2-normalised vectors under inner product, so a search score is a cosine and an angle is
``arccos(score)``. ``per="sample"`` indexes every sample (ids are sample ids); ``per="identity"`` indexes
one normalised centroid per identity (ids are identity ids). The file is a plain FAISS ``IndexIDMap2``
(readable by any FAISS) written to ``store/indexes/`` by stage, fsync and rename; its row names the
shards it covers, so a later call can tell an index is stale:

- fresh: the same committed shards: reused as is;
- new shards only, per sample: extended in place (new vectors appended, trained quantiser kept);
- anything else (a shard retired, or a per-identity index whose centroids moved): rebuilt.

IVF indexes are trained on a random sample (``TRAIN_PER_LIST`` vectors per list) and their default
``nprobe`` (HNSW: ``efSearch``) is calibrated on the data itself: the smallest value whose recall@1 for
the nearest *other* vector of held-out members reaches ``target_recall`` (0.99). The value is stored in
the index file, so every later search uses it. With faiss-gpu and a visible GPU, training and search run
on the GPU (the index is cloned there); otherwise on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from synthdb.analysis.vectors import (
    committed_shards,
    identity_centroids,
    load_vectors,
    normalized,
    shared_model,
)
from synthdb.catalog import indexes
from synthdb.catalog.datasets import dataset_id as lookup_dataset_id
from synthdb.catalog.runs import recorded_run, set_summary
from synthdb.catalog.schema import RunKind, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.progress import progress_bar
from synthdb.store.layout import INDEXES, fsync_dir

PER = ("sample", "identity")
METRIC = "inner_product"
TRAIN_PER_LIST = 64
CALIBRATION_QUERIES = 1000
ADD_BATCH = 65_536
_IVF = re.compile(r"IVF(\d+)")


@dataclass
class IndexInfo:
    """One recorded index. ``action`` says what this call did: fresh (reused), built, extended or rebuilt.

    ``index`` is the index itself, in memory as this call left it (read, built or extended): a caller that
    searches it next (``check_nearest``) uses it rather than reading back the file just written, which at
    200,000 x 512 floats is 400 MB.
    """

    id: int
    dataset: str
    model: str
    factory: str
    per: str
    path: Path
    ntotal: int
    shard_ids: list[int]
    action: str
    index: faiss.Index = field(repr=False, compare=False)
    search_param: str | None = None
    search_value: int | None = None
    recall_at_1: float | None = None
    run_id: int | None = None


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu (which has no GPU code) or without a visible GPU."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def to_compute_device(index: faiss.Index) -> faiss.Index:
    """A GPU clone of ``index`` when FAISS has GPUs and supports its type, else ``index`` itself."""
    if gpu_count() == 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError:  # e.g. HNSW has no GPU implementation: search it on the CPU
        return index


def _unwrap(index: faiss.Index) -> tuple[faiss.Index, np.ndarray]:
    """The inner index and the id of each of its positions (the file stores an IndexIDMap2)."""
    mapped = faiss.downcast_index(index)
    if not isinstance(mapped, faiss.IndexIDMap2):
        raise SynthdbError(
            "index file is not a synthdb index (no id map): rebuild it with `synthdb index build`"
        )
    return faiss.downcast_index(mapped.index), faiss.vector_to_array(mapped.id_map).astype(np.int64)


def _search_param(inner: faiss.Index) -> str | None:
    if faiss.try_extract_index_ivf(inner) is not None:
        return "nprobe"
    if isinstance(inner, faiss.IndexHNSW):
        return "efSearch"
    return None


def _get_param(inner: faiss.Index, name: str | None) -> int | None:
    if name == "nprobe":
        return int(faiss.extract_index_ivf(inner).nprobe)
    if name == "efSearch":
        return int(inner.hnsw.efSearch)
    return None


def set_search_param(index: faiss.Index, name: str | None, value: int) -> None:
    """Set nprobe / efSearch on a CPU or GPU index."""
    if name is None:
        return
    space = faiss.GpuParameterSpace() if "Gpu" in type(index).__name__ else faiss.ParameterSpace()
    space.set_index_parameter(index, name, value)


class Searcher:
    """Searches a loaded index (on the GPU when FAISS has one), returning ids rather than positions."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index  # owns the inner index: keep it alive as long as the searcher
        inner, self.ids = _unwrap(index)
        param = _search_param(inner)
        self.engine = to_compute_device(inner)
        if self.engine is not inner:
            set_search_param(self.engine, param, _get_param(inner, param))
        self.ntotal = int(inner.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosines (descending) and ids of the ``k`` nearest; missing neighbours: id -1, cosine -inf."""
        k = min(k, self.ntotal)
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, positions = self.engine.search(np.ascontiguousarray(queries, np.float32), k)
        found = positions >= 0
        return np.where(found, scores, -np.inf), np.where(found, self.ids[np.maximum(positions, 0)], -1)


def _nlist(factory: str) -> int | None:
    match = _IVF.search(factory)
    return int(match.group(1)) if match else None


def _new_index(dims: int, factory: str) -> faiss.Index:
    try:
        return faiss.index_factory(dims, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1][-120:]
        raise SynthdbError(
            f"FAISS cannot build '{factory}' ({detail}): use a FAISS index_factory string such as Flat, "
            "IVF4096,Flat or HNSW32"
        ) from None


def _trained(dims: int, factory: str, unit: np.ndarray, rng: np.random.Generator) -> faiss.Index:
    """A new, trained CPU index: IVF quantisers train on a random sample (on the GPU when there is one)."""
    inner = _new_index(dims, factory)
    if inner.is_trained:
        return inner
    nlist = _nlist(factory)
    if nlist is not None and len(unit) < nlist:
        smaller = 2 ** int(math.log2(max(1, len(unit) // 39)))
        raise SynthdbError(
            f"'{factory}' needs at least {nlist} vectors to train its lists but there are {len(unit)}: "
            f"use Flat, or IVF{smaller},Flat"
        )
    want = max(TRAIN_PER_LIST * (nlist or 1), 10_000)
    sample = unit if len(unit) <= want else unit[np.sort(rng.choice(len(unit), want, replace=False))]
    engine = to_compute_device(inner)
    engine.train(np.ascontiguousarray(sample))
    return inner if engine is inner else faiss.index_gpu_to_cpu(engine)


def _add(index: faiss.IndexIDMap2, unit: np.ndarray, ids: np.ndarray, quiet: bool) -> None:
    """Add in batches of ``ADD_BATCH`` (for the progress bar), except to a flat index (Flat, SQ, PQ): it
    stores one array of codes, which batch by batch would grow by reallocation and copy (each time into
    fresh memory: 3x slower at 200,000 x 512), while the add itself is only a copy or an encoding."""
    flat = isinstance(faiss.downcast_index(index.index), faiss.IndexFlatCodes)
    batch = len(unit) if flat else ADD_BATCH
    with progress_bar(len(unit), "indexing", quiet) as advance:
        for start in range(0, len(unit), max(batch, 1)):
            stop = start + batch
            index.add_with_ids(np.ascontiguousarray(unit[start:stop]), ids[start:stop])
            advance(len(unit[start:stop]))


def calibrate(
    index: faiss.Index, unit: np.ndarray, target_recall: float = 0.99, seed: int = 0
) -> tuple[str | None, int | None, float | None]:
    """Smallest nprobe / efSearch whose recall@1 reaches ``target_recall``: ``(name, value, recall)``.

    Queries are up to ``CALIBRATION_QUERIES`` indexed vectors; the truth is each one's nearest *other*
    vector by exact search, and a hit is any result at least as close (ties count). A query finding itself
    is trivial, finding its neighbour is the real test of the probed lists.
    """
    inner, _ = _unwrap(index)
    name = _search_param(inner)
    if name is None or len(unit) < 3:
        return name, None, None
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(unit), min(CALIBRATION_QUERIES, len(unit)), replace=False))
    queries = np.ascontiguousarray(unit[picked])
    scores, positions = faiss.knn(queries, unit, 2, metric=faiss.METRIC_INNER_PRODUCT)
    truth = np.where(positions[:, 0] == picked, scores[:, 1], scores[:, 0])
    limit = faiss.extract_index_ivf(inner).nlist if name == "nprobe" else 4096
    engine = to_compute_device(inner)
    value, recall = 1, 0.0
    while True:
        set_search_param(engine, name, value)
        got_scores, got = engine.search(queries, 2)
        other = np.where(got[:, 0] == picked, got_scores[:, 1], got_scores[:, 0])
        recall = float(np.mean(other >= truth - 1e-6))
        if recall >= target_recall or value >= limit:
            break
        value = min(value * 2, limit)
    set_search_param(inner, name, value)
    return name, value, recall


def load_index(path: Path) -> faiss.Index:
    if not path.is_file():
        raise SynthdbError(f"index file {path} is missing: rebuild it with `synthdb index build --rebuild`")
    return faiss.read_index(str(path))


def _write(ctx: Context, index: faiss.Index) -> Path:
    """Stage, fsync and rename the index file into ``store/indexes/``."""
    staged = ctx.store.new_staged(".faiss")
    faiss.write_index(index, str(staged))
    fd = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    final = ctx.store.root / INDEXES / f"{uuid.uuid4().hex}.faiss"
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    fsync_dir(final.parent)
    return final


def _vectors_for(
    ctx: Context, dataset: str, model: str, per: str, only_shards: set[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The vectors to index and their ids: per sample the loaded vectors normalised in place (no 400 MB
    copy at 200,000 x 512, see :func:`normalized`), per identity the centroids read shard by shard."""
    if per == "identity":  # streamed: never every vector in memory (see identity_centroids)
        identities, means = identity_centroids(ctx, dataset, model)
        return means, identities
    loaded = load_vectors(ctx, dataset, model, only_shards=only_shards)
    return normalized(loaded.vectors, in_place=True), loaded.sample_ids


def build_index(
    ctx: Context,
    dataset: str,
    model: str | None = None,
    factory: str = "Flat",
    per: str = "sample",
    rebuild: bool = False,
    target_recall: float = 0.99,
    seed: int = 0,
    quiet: bool = False,
) -> IndexInfo:
    """Build, extend or reuse the index of ``dataset``'s ``model`` embeddings (optional when the dataset has
    one model's); see the module docstring."""
    with index_in_memory(ctx, dataset, model, factory, per, rebuild, target_recall, seed, quiet) as info:
        pass
    return info


@contextmanager
def index_in_memory(
    ctx: Context,
    dataset: str,
    model: str | None = None,
    factory: str = "Flat",
    per: str = "sample",
    rebuild: bool = False,
    target_recall: float = 0.99,
    seed: int = 0,
    quiet: bool = False,
) -> Iterator[IndexInfo]:
    """:func:`build_index` for a caller that searches the index at once: the index is yielded as soon as it
    is in memory, and a built or extended one is written and fsynced by a thread meanwhile (400 MB at
    200,000 x 512, a tenth of an exact ``check nearest``). It is recorded when the block ends, which is
    when ``id`` and ``path`` are set; if the block raises, the new file is removed and nothing recorded.
    """
    if per not in PER:
        raise SynthdbError(f"unknown --by '{per}': use sample or identity")
    model = shared_model(ctx, [dataset], model)
    did = lookup_dataset_id(ctx.catalog, dataset)
    current = [s.id for s in committed_shards(ctx, did, ShardContent.EMBEDDING, model)]
    if not current:
        load_vectors(ctx, dataset, model)  # raises the error that names the models the dataset has
    row = indexes.find(ctx.catalog, did, model, factory, per)
    covered = set(row.shard_ids) if row is not None else set()
    if row is not None and not rebuild and covered == set(current):
        index = load_index(ctx.store.abspath(row.path))
        inner, _ = _unwrap(index)
        param = _search_param(inner)
        yield IndexInfo(
            row.id,
            dataset,
            model,
            factory,
            per,
            ctx.store.abspath(row.path),
            row.ntotal,
            row.shard_ids,
            "fresh",
            index,
            param,
            _get_param(inner, param),
            run_id=row.run_id,
        )
        return
    extend = row is not None and not rebuild and per == "sample" and covered < set(current)
    action = "extended" if extend else ("rebuilt" if row is not None else "built")
    params = {
        "dataset": dataset,
        "model": model,
        "factory": factory,
        "per": per,
        "target_recall": target_recall,
    }
    with recorded_run(ctx.catalog, RunKind.INDEX, algorithm=factory, params=params, seed=seed) as run_id:
        rng = np.random.default_rng(seed)
        if extend:
            index = load_index(ctx.store.abspath(row.path))
            unit, ids = _vectors_for(ctx, dataset, model, per, set(current) - covered)
            _add(index, unit, ids, quiet)
            inner, _ = _unwrap(index)
            name = _search_param(inner)
            value, recall = _get_param(inner, name), None
        else:
            unit, ids = _vectors_for(ctx, dataset, model, per, None)
            index = faiss.IndexIDMap2(_trained(unit.shape[1], factory, unit, rng))
            _add(index, unit, ids, quiet)
            name, value, recall = calibrate(index, unit, target_recall, seed)
        del unit  # the index holds its own copy
        info = IndexInfo(
            -1,
            dataset,
            model,
            factory,
            per,
            Path(),
            int(index.ntotal),
            current,
            action,
            index,
            name,
            value,
            recall,
            run_id,
        )
        with ThreadPoolExecutor(max_workers=1) as pool:  # FAISS releases the GIL while it writes
            writing = pool.submit(_write, ctx, index)
            try:
                yield info
            except BaseException:
                with contextlib.suppress(Exception):
                    writing.result().unlink(missing_ok=True)
                raise
        info.path = writing.result()
        saved = indexes.IndexRow(
            model=model,
            dataset_ids=[did],
            shard_ids=current,
            factory=factory,
            metric=METRIC,
            per=per,
            path=ctx.store.relpath(info.path),
            ntotal=info.ntotal,
            run_id=run_id,
            id=row.id if row is not None else None,
        )
        try:
            info.id = indexes.save(ctx.catalog, saved)
        except BaseException:
            info.path.unlink(missing_ok=True)
            raise
        if row is not None:
            ctx.store.abspath(row.path).unlink(missing_ok=True)
        summary = {
            "action": action,
            "ntotal": info.ntotal,
            "search_param": name,
            "search_value": value,
            "recall_at_1": recall,
            "index_id": info.id,
        }
        set_summary(ctx.catalog, run_id, summary)
