"""The reference ``synthetics`` package's ``samples.h5`` (SampleCollection, format 2.0) from our shards.

So that the reference package's own tools (distance histograms, latent edits, its database generator)
read a synthdb dataset: one group per identity, one group per sample label inside, each holding the
sample's latents (``z_latent``, ``w_latent``, ``w_plus_latent``, ``c_label``, ``bfm_model/``) from the
dataset's committed latent shards and its raw ``embedding`` from the embedding shards, with
``network_type`` / ``embedding_type`` set to the shards' spaces. Written by
:class:`synthdb.store.hdf5.SampleCollection`, under a temporary name renamed at the end.

Identity groups are named by the identity label when every label is a distinct integer (synthetic
datasets: ``00042``), else by the contiguous class id; ``classes.csv`` maps them back either way. Label
groups are the sample's label (``reference``, ``augmentation_3``), else its key's last part, made unique
within the identity. With several embedding spaces, ``--embedding-model`` picks one.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from synthdb.catalog import shards
from synthdb.catalog.schema import ShardContent
from synthdb.errors import SynthdbError
from synthdb.export.folder import unique_names
from synthdb.export.job import FormatSpec, Job, write_classes_csv
from synthdb.store.hdf5 import BFM_DIMS, H5Sample, SampleCollection, normalize_label
from synthdb.store.parquet import read_table

LATENT_FIELDS = {"z": "z_latent", "w": "w_latent", "w_plus": "w_plus_latent", "c": "c_label"}


def _shards(job: Job) -> list[shards.ShardRow]:
    contents = [ShardContent.LATENT, ShardContent.EMBEDDING]
    return shards.committed(job.ctx.catalog, dataset_id=job.selection.dataset.id, contents=contents)


def _embedding_space(job: Job, found: list[shards.ShardRow]) -> str | None:
    spaces = sorted({s.space or "" for s in found if s.content == ShardContent.EMBEDDING})
    chosen = job.options.embedding_model
    if chosen is not None and chosen not in spaces:
        raise SynthdbError(
            f"dataset '{job.selection.dataset.name}' has no embeddings of '{chosen}' "
            f"(it has: {', '.join(spaces) or 'none'}): pass one of those to --embedding-model"
        )
    if chosen is None and len(spaces) > 1:
        raise SynthdbError(
            f"dataset '{job.selection.dataset.name}' has embeddings of {', '.join(spaces)}: "
            "a collection holds one per sample; pick it with --embedding-model"
        )
    return chosen if chosen is not None else (spaces[0] if spaces else None)


def _vectors(job: Job) -> dict[int, dict[str, Any]]:
    """sample id -> Sample fields, from the latent shards and the chosen embedding space."""
    found = _shards(job)
    space = _embedding_space(job, found)
    wanted = {s.id for s in job.selection.samples}
    fields: dict[int, dict[str, Any]] = defaultdict(dict)
    for shard in found:
        if shard.content == ShardContent.EMBEDDING and (shard.space or "") != space:
            continue
        columns = [c for c in shard.columns if c == "embedding" or c in LATENT_FIELDS or c.startswith("bfm_")]
        table = read_table(job.ctx.store.abspath(shard.path), ["sample_id", *columns])
        ids = table.column("sample_id").to_numpy()
        rows = np.flatnonzero(np.isin(ids, np.fromiter(wanted, np.int64, len(wanted))))
        if not len(rows):
            continue
        if shard.run_id is not None:
            job.extra_source_runs.add(shard.run_id)
        for column in columns:
            flat = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            values = flat.reshape(len(table), *shard.columns[column]).astype(np.float32, copy=False)
            for row in rows:
                entry = fields[int(ids[row])]
                if column == "embedding":
                    entry["embedding"], entry["embedding_type"] = values[row], shard.space
                else:
                    entry.setdefault("latents", {})[column] = values[row]
                    if entry.setdefault("network_type", shard.space) != shard.space:
                        raise SynthdbError(
                            f"sample {int(ids[row])} has latents of two generators ({entry['network_type']}, "
                            f"{shard.space}): a collection holds one; export a part with --where"
                        )
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


def identity_numbers(job: Job) -> tuple[list[int], str]:
    """The group number of each class: its label as an int when all are distinct ints, else the class id."""
    labels = [c.label for c in job.selection.classes]
    if all(label.isdigit() for label in labels) and len({int(x) for x in labels}) == len(labels):
        return [int(x) for x in labels], "label"
    return list(range(len(labels))), "class"


def write(job: Job) -> dict[str, Any]:
    fields = _vectors(job)
    numbers, named_by = identity_numbers(job)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(job.selection.samples):
        by_class[s.cls].append(i)
    target = job.out / "samples.h5"
    tmp = job.out / ".samples.h5.tmp"
    with SampleCollection(tmp, "w") as collection:
        for cls, members in by_class.items():
            samples = [job.selection.samples[i] for i in members]
            labels = unique_names(normalize_label(s.label or PurePosixPath(s.key).name) for s in samples)
            for s, label in zip(samples, labels, strict=True):
                collection.add(numbers[cls], label, _sample(fields.get(s.id, {})))
                job.advance(1)
        collection.flush()
    os.replace(tmp, target)
    write_classes_csv(job, job.out / "classes.csv")
    with_vectors = sum(1 for s in job.selection.samples if s.id in fields)
    return {
        "samples": len(job.selection.samples),
        "with_vectors": with_vectors,
        "identities": len(job.selection.classes),
        "identity_groups": named_by,
    }


FORMAT = FormatSpec("synthetics-h5", write, needs_identity=True, needs_image=False, encoding=None)
