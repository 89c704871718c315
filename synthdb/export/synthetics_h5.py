"""The reference ``synthetics`` package's ``samples.h5`` (SampleCollection, format 2.0) from our shards.

So that the reference package's own tools (distance histograms, latent edits, its database generator)
read a synthdb dataset: one group per identity, one group per sample label inside, each holding the
sample's latents (``z_latent``, ``w_latent``, ``w_plus_latent``, ``c_label``, ``bfm_model/``) from the
dataset's committed latent shards and its raw ``embedding`` from the embedding shards, with
``network_type`` / ``embedding_type`` set to the shards' spaces. Written by
:class:`synthdb.store.hdf5.SampleCollection`, under a temporary name renamed at the end.

What the reference accepts: its loader asserts every field's full shape, with a batch dimension of 1:
``z_latent`` and ``w_latent`` (1, 512), ``w_plus_latent`` (1, num_ws, 512), ``c_label`` (1, 25),
``embedding`` (1, 512) and the 3DMM coefficients of ``bfm_model/``; one field of another shape aborts the
whole load, not just that sample. So by default only what it accepts is written: embeddings of a
512-wide space (ArcFace-type IResNets, AdaFace); the 128-d descriptors of ``dlib-resnet`` (the default
embedder) and 100-d latents of ``dcgan-digiface`` are left out, each with a note that says why.
``--embeddings MODEL`` picks the embedding space (of any width: the note then says the reference will
refuse it), ``--embeddings none`` leaves embeddings out.

Identity groups are named by the identity label when every label is a distinct integer (synthetic
datasets: ``00042``), else by the contiguous class id; ``classes.csv`` maps them back either way. Label
groups are the sample's label (``reference``, ``augmentation_3``), else its key's last part, made unique
within the identity.

Streamed: samples go in export order, ``CHUNK`` at a time; a sorted index of (sample id, shard, row) per
shard family (16 bytes a sample) finds their vectors, and the few shards a chunk touches are read once
and kept while the next chunks need them.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa

from synthdb.catalog import shards
from synthdb.catalog.schema import ShardContent
from synthdb.errors import SynthdbError
from synthdb.export.folder import unique_name
from synthdb.export.job import CLASSES_NAME, ClassTable, FormatSpec, Job
from synthdb.export.selection import SampleRecord
from synthdb.store.hdf5 import BFM_DIMS, C_LABEL_DIM, LATENT_DIM, H5Sample, SampleCollection, normalize_label
from synthdb.store.parquet import read_table

LATENT_FIELDS = {"z": "z_latent", "w": "w_latent", "w_plus": "w_plus_latent", "c": "c_label"}
REFERENCE_EMBEDDING = 512
"""The embedding width the reference's loader asserts (its ``EMB``)."""
NO_EMBEDDINGS = "none"
CHUNK = 20_000
CACHED_SHARDS = 4


def reference_accepts(column: str, shape: tuple[int, ...]) -> bool:
    """Whether the reference's loader accepts a shard column of this per-row shape."""
    if column in ("z", "w"):
        return shape == (LATENT_DIM,)
    if column == "w_plus":
        return len(shape) == 2 and shape[1] == LATENT_DIM
    if column == "c":
        return shape == (C_LABEL_DIM,)
    if column == "embedding":
        return shape == (REFERENCE_EMBEDDING,)
    if column.startswith("bfm_"):
        return shape == (BFM_DIMS.get(column[4:], -1),)
    return False


def _width(shard: shards.ShardRow) -> tuple[int, ...]:
    return tuple(shard.columns.get("embedding", ()))


def embedding_shards(job: Job) -> list[shards.ShardRow]:
    """The embedding shards of the chosen space (see the module doc), with a note for what is left out."""
    found = shards.committed(
        job.ctx.catalog, dataset_id=job.selection.dataset.id, contents=[ShardContent.EMBEDDING]
    )
    widths = {s.space or "": _width(s) for s in found}
    chosen, name = job.options.embedding_model, job.selection.dataset.name
    if chosen == NO_EMBEDDINGS:
        return []
    if chosen is not None:
        if chosen not in widths:
            raise SynthdbError(
                f"dataset '{name}' has no embeddings of '{chosen}' (it has: "
                f"{', '.join(sorted(widths)) or 'none'}): pass one of those to --embeddings, or "
                f"--embeddings {NO_EMBEDDINGS}"
            )
        if not reference_accepts("embedding", widths[chosen]):
            job.notes.append(
                f"embeddings of {chosen} are {widths[chosen]}-wide: the reference's loader asserts "
                f"({REFERENCE_EMBEDDING},) and will refuse the file; its other readers (h5py) read them"
            )
        return [s for s in found if (s.space or "") == chosen]
    accepted = sorted(space for space, width in widths.items() if reference_accepts("embedding", width))
    refused = sorted(set(widths) - set(accepted))
    if refused:
        listed = ", ".join(f"{space} ({'x'.join(map(str, widths[space]))})" for space in refused)
        job.notes.append(
            f"embeddings of {listed} left out: the reference's loader reads {REFERENCE_EMBEDDING}-d "
            "embeddings only; pass --embeddings MODEL to write them anyway"
        )
    if len(accepted) > 1:
        raise SynthdbError(
            f"dataset '{name}' has embeddings of {', '.join(accepted)}: a collection holds one per sample; "
            f"pick it with --embeddings (or --embeddings {NO_EMBEDDINGS})"
        )
    return [s for s in found if (s.space or "") in accepted]


def latent_columns(job: Job) -> list[tuple[shards.ShardRow, list[str]]]:
    """The latent shards and the columns of each the reference accepts; a note names the others."""
    found = shards.committed(
        job.ctx.catalog, dataset_id=job.selection.dataset.id, contents=[ShardContent.LATENT]
    )
    out, refused = [], set()
    for shard in found:
        columns = []
        for column, shape in shard.columns.items():
            if column in LATENT_FIELDS or column.startswith("bfm_"):
                if reference_accepts(column, tuple(shape)):
                    columns.append(column)
                else:
                    refused.add(f"{column} of {shard.space} ({'x'.join(map(str, shape))})")
        if columns:
            out.append((shard, columns))
    if refused:
        job.notes.append(
            f"latents {', '.join(sorted(refused))} left out: the reference's loader reads "
            f"{LATENT_DIM}-d z/w/w_plus and {C_LABEL_DIM}-d c only"
        )
    return out


class ShardIndex:
    """Where each sample's vectors are among some shards: sorted sample ids with their shard and row.

    16 bytes a sample; the shards' tables are read when a chunk needs them and the last CACHED_SHARDS
    kept (a chunk of samples in export order touches few shards). A sample in several shards takes the
    newest one (a re-run that committed it again).
    """

    def __init__(self, job: Job, found: list[tuple[shards.ShardRow, list[str]]]) -> None:
        self.job, self.found = job, found
        ids, where, rows = [], [], []
        for number, (shard, _) in enumerate(found):
            sample_ids = read_table(job.ctx.store.abspath(shard.path), ["sample_id"]).column(0).to_numpy()
            ids.append(sample_ids.astype(np.int64))
            where.append(np.full(len(sample_ids), number, np.int32))
            rows.append(np.arange(len(sample_ids), dtype=np.int32))
        self.ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.lexsort((np.concatenate(where) if where else np.zeros(0, np.int32), self.ids))
        self.ids = self.ids[order]
        self.shard = (np.concatenate(where) if where else np.zeros(0, np.int32))[order]
        self.row = (np.concatenate(rows) if rows else np.zeros(0, np.int32))[order]
        last = np.ones(len(self.ids), np.bool_)
        last[:-1] = self.ids[1:] != self.ids[:-1]  # the newest shard of each sample comes last
        self.ids, self.shard, self.row = self.ids[last], self.shard[last], self.row[last]
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()

    def vectors(self, sample_ids: np.ndarray) -> Iterator[tuple[int, shards.ShardRow, str, np.ndarray]]:
        """(sample id, shard, column, vector) for every vector of the given samples the shards hold."""
        at = np.minimum(np.searchsorted(self.ids, sample_ids), max(len(self.ids) - 1, 0))
        hit = (self.ids[at] == sample_ids) if len(self.ids) else np.zeros(len(sample_ids), np.bool_)
        for number in np.unique(self.shard[at[hit]]):
            shard, columns = self.found[int(number)]
            mine = hit & (self.shard[at] == number)
            table = self._table(int(number)).take(pa.array(self.row[at[mine]]))
            if shard.run_id is not None:
                self.job.extra_source_runs.add(shard.run_id)
            for column in columns:
                values = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
                values = values.reshape(len(table), *shard.columns[column]).astype(np.float32, copy=False)
                for sample_id, vector in zip(sample_ids[mine], values, strict=True):
                    yield int(sample_id), shard, column, vector

    def _table(self, number: int) -> pa.Table:
        if number not in self._cache:
            shard, columns = self.found[number]
            self._cache[number] = read_table(self.job.ctx.store.abspath(shard.path), columns)
            while len(self._cache) > CACHED_SHARDS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(number)
        return self._cache[number]


def _fields(chunk: list[SampleRecord], latents: ShardIndex, embeddings: ShardIndex) -> dict[int, dict]:
    """sample id -> H5Sample fields, for one chunk of samples."""
    ids = np.fromiter((s.id for s in chunk), np.int64, len(chunk))
    fields: dict[int, dict[str, Any]] = {}
    for sample_id, shard, column, vector in latents.vectors(ids):
        entry = fields.setdefault(sample_id, {})
        entry.setdefault("latents", {})[column] = vector
        if entry.setdefault("network_type", shard.space) != shard.space:
            raise SynthdbError(
                f"sample {sample_id} has latents of two generators ({entry['network_type']}, {shard.space}): "
                "a collection holds one; export a part with --where"
            )
    for sample_id, shard, _, vector in embeddings.vectors(ids):
        entry = fields.setdefault(sample_id, {})
        entry["embedding"], entry["embedding_type"] = vector, shard.space
    return fields


def _sample(entry: dict[str, Any]) -> H5Sample:
    latents = entry.get("latents", {})
    kwargs: dict[str, Any] = {LATENT_FIELDS[k]: v for k, v in latents.items() if k in LATENT_FIELDS}
    bfm = {k: latents[f"bfm_{k}"] for k in BFM_DIMS if f"bfm_{k}" in latents}
    if len(bfm) == len(BFM_DIMS):
        kwargs["bfm_model"] = bfm
    if kwargs:
        kwargs["network_type"] = entry["network_type"]
    if "embedding" in entry:
        kwargs["embedding"], kwargs["embedding_type"] = entry["embedding"], entry["embedding_type"]
    return H5Sample(**kwargs)


def _by_identity(samples: Iterator[SampleRecord]) -> Iterator[list[SampleRecord]]:
    """The samples of each identity together (they arrive grouped), at most CHUNK at a time."""
    for _, members in itertools.groupby(samples, key=lambda s: s.cls):
        while part := list(itertools.islice(members, CHUNK)):
            yield part


def write(job: Job) -> dict[str, Any]:
    latents = ShardIndex(job, latent_columns(job))
    embeddings = ShardIndex(job, [(s, ["embedding"]) for s in embedding_shards(job)])
    numeric = job.selection.numeric_labels
    target, tmp = job.out / "samples.h5", job.out / ".samples.h5.tmp"
    classes = ClassTable(job.out / CLASSES_NAME, None)
    with_vectors = 0
    try:
        with SampleCollection(tmp, "w") as collection:
            used: tuple[int, set[str]] = (-1, set())
            for part in _by_identity(job.selection.samples()):
                fields = _fields(part, latents, embeddings)
                cls = part[0].cls
                if used[0] != cls:
                    used = (cls, set())
                number = int(part[0].identity) if numeric else cls  # type: ignore[arg-type]
                for s, label in zip(part, _labels(part, used[1]), strict=True):
                    collection.add(number, label, _sample(fields.get(s.id, {})))
                    classes.image(s)
                    with_vectors += s.id in fields
                job.advance(len(part))
            collection.flush()
        classes.finish()
    finally:
        classes.close()
    os.replace(tmp, target)
    return {
        "samples": job.selection.count,
        "with_vectors": with_vectors,
        "identities": job.selection.classes,
        "identity_groups": "label" if numeric else "class",
        "embedding_type": sorted({s.space or "" for s, _ in embeddings.found}) or None,
    }


def _labels(part: list[SampleRecord], used: set[str]) -> list[str]:
    """Label group names of ``part``, unique within the identity (``used``: its names so far)."""
    return [unique_name(normalize_label(s.label or PurePosixPath(s.key).name), used) for s in part]


FORMAT = FormatSpec("synthetics-h5", write, needs_identity=True, needs_image=False, encoding=None)
