"""A samples.h5 of the reference synthetics package, as a synthetic dataset with its vectors in shards.

This is how users of the reference ``synthetics`` package bring their generated datasets over. Each
(identity, label) group of the collection becomes a sample: identity ``f"{id:05d}"``, the label as the
sample's ``label`` and key ``<identity>/<label>``, role ``reference`` for the label ``reference`` and
``variation`` otherwise. Its vectors go into Parquet shards through the commit protocol
(:func:`synthdb.store.commit.commit`), so rows and shards appear together or not at all:

* a ``latent`` shard in the space of the sample's ``network_type`` with columns ``z``, ``w``,
  ``w_plus``, ``c`` and the Deep3DFaceRecon coefficients ``bfm_id`` ... ``bfm_trans``, as present;
* an ``embedding`` shard in the space of its ``embedding_type`` (embeddings stay raw, as stored).

The file is streamed ``CHUNK`` samples at a time (the collection keeps one HDF5 group per sample, so
it is never loaded whole); within a chunk, samples with the same fields and types share a shard.
When exactly one ``images*/`` folder lies beside the file (the reference's ``generate-database``
output tree: ``images_<crop>/<identity:05>/<label>.png``), each sample's ``path`` points at its image
there, and a missing image is reported like any other missing file (or one leading out of that
folder's parent). The HDF5 file itself is read by :mod:`synthdb.store.hdf5`, which checks every dataset's
links, shape, dtype and storage before reading it: a crafted file ends the import with one clear error
naming the dataset at fault, and no byte from outside the file (external storage or links) is imported.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.runs import recorded_run, set_summary
from synthdb.catalog.samples import sample_keys
from synthdb.catalog.schema import DatasetKind, RunKind, SampleRole, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.progress import progress_bar
from synthdb.sources.entries import Entry
from synthdb.sources.importer import ImportReport, adopt_unfinished, check_file, existing_dataset
from synthdb.store.commit import NewSamples, ShardSpec, commit
from synthdb.store.hdf5 import BFM_DIMS, H5Sample, SampleCollection
from synthdb.untrusted import RootGuard

CHUNK = 1_000
"""Samples per commit: a W+ sample is 36 KB, so a chunk stays well under 100 MB."""

LATENT_COLUMNS = {"z_latent": "z", "w_latent": "w", "w_plus_latent": "w_plus", "c_label": "c"}

Signature = tuple[str | None, str | None, tuple[tuple[str, tuple[int, ...]], ...]]


@dataclass
class _Row:
    """One sample of a batch: its row fields and its vectors, by shard column."""

    key: str
    identity: str
    label: str
    path: str | None
    latents: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray]


def default_name(path: Path) -> str:
    """``<folder>`` for ``<folder>/samples.h5`` (the reference's output tree), else the file's stem."""
    return path.parent.name if path.stem == "samples" and path.parent.name else path.stem


def _vectors(sample: H5Sample) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(latent columns, embedding columns) of one sample."""
    latents = {column: getattr(sample, field) for field, column in LATENT_COLUMNS.items()}
    latents = {column: value for column, value in latents.items() if value is not None}
    if sample.bfm_model is not None:
        latents.update({f"bfm_{key}": sample.bfm_model[key] for key in BFM_DIMS})
    embeddings = {"embedding": sample.embedding} if sample.embedding is not None else {}
    return latents, embeddings


def _signature(
    sample: H5Sample, latents: dict[str, np.ndarray], embeddings: dict[str, np.ndarray]
) -> Signature:
    shapes = tuple((name, value.shape) for name, value in sorted({**latents, **embeddings}.items()))
    return sample.network_type, sample.embedding_type, shapes


class SampleFile:
    name = "samples"
    path_kind = "file"

    def import_file(
        self,
        ctx: Context,
        path: str | os.PathLike,
        name: str | None = None,
        update: bool = False,
        verify_images: bool = False,
        quiet: bool = False,
    ) -> ImportReport:
        """Import the collection at ``path`` into the synthetic dataset ``name``."""
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise SynthdbError(f"{path} is not a file: pass a samples.h5 written by the synthetics package")
        name = name or default_name(path)
        with SampleCollection.open(path) as collection:
            existing_id, done = existing_dataset(ctx, name, self.name, update, path.parent)
            if done is not None:
                return done
            params = {"file": str(path), "name": name, "update": update, "verify_images": verify_images}
            with recorded_run(ctx.catalog, RunKind.IMPORT, algorithm=self.name, params=params) as run_id:
                dataset_id = (
                    existing_id
                    if existing_id is not None
                    else create_dataset(
                        ctx.catalog,
                        name,
                        DatasetKind.SYNTHETIC,
                        self.name,
                        root=str(path.parent),
                        run_id=run_id,
                        attributes={"collection": path.name},
                    )
                )
                report = ImportReport(dataset=name, dataset_id=dataset_id, run_id=run_id)
                images = self._images_folder(path.parent)
                guard = RootGuard(path.parent)
                chunk: list[tuple[int, str, H5Sample]] = []
                with progress_bar(None, f"importing {name}", quiet) as advance:
                    for item in collection.iter_samples():
                        chunk.append(item)
                        if len(chunk) == CHUNK:
                            self._commit(ctx, dataset_id, run_id, chunk, images, verify_images, report, guard)
                            advance(len(chunk))
                            chunk = []
                    if chunk:
                        self._commit(ctx, dataset_id, run_id, chunk, images, verify_images, report, guard)
                        advance(len(chunk))
                set_summary(ctx.catalog, run_id, report.summary())
                adopt_unfinished(ctx, dataset_id, run_id)
        return report

    @staticmethod
    def _images_folder(folder: Path) -> Path | None:
        """The one ``images*`` folder beside the collection, or None when there is none or several."""
        found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("images")]
        return found[0] if len(found) == 1 else None

    @staticmethod
    def _commit(
        ctx: Context,
        dataset_id: int,
        run_id: int,
        chunk: list[tuple[int, str, H5Sample]],
        images: Path | None,
        verify_images: bool,
        report: ImportReport,
        guard: RootGuard,
    ) -> None:
        """Commit the samples of a chunk not stored yet, one commit per (role, fields, types) batch."""
        keys = [f"{identity:05d}/{label}" for identity, label, _ in chunk]
        stored = sample_keys(ctx.catalog, dataset_id, among=keys)
        report.scanned += len(chunk)
        report.existing += len(stored)
        batches: dict[tuple[str, Signature], list[_Row]] = defaultdict(list)
        for key, (identity, label, sample) in zip(keys, chunk, strict=True):
            if key in stored:
                continue
            path = None
            if images is not None:
                found = check_file(
                    images.parent, Entry(key, f"{images.name}/{key}.png", None), verify_images, report, guard
                )
                path = found.path if found is not None else None
            latents, embeddings = _vectors(sample)
            role = SampleRole.REFERENCE if label == "reference" else SampleRole.VARIATION
            row = _Row(key, f"{identity:05d}", label, path, latents, embeddings)
            batches[(role, _signature(sample, latents, embeddings))].append(row)
        for (role, (network_type, embedding_type, _)), rows in batches.items():
            shards = []
            if rows[0].latents:
                columns = {c: np.stack([r.latents[c] for r in rows]) for c in rows[0].latents}
                shards.append(ShardSpec(ShardContent.LATENT, network_type, columns))
            if rows[0].embeddings:
                shards.append(
                    ShardSpec(
                        ShardContent.EMBEDDING,
                        embedding_type,
                        {"embedding": np.stack([r.embeddings["embedding"] for r in rows])},
                    )
                )
            commit(
                ctx.catalog,
                ctx.store,
                dataset_id=dataset_id,
                shards=shards,
                samples=NewSamples(
                    keys=[r.key for r in rows],
                    role=role,
                    identity_labels=[r.identity for r in rows],
                    labels=[r.label for r in rows],
                    paths=[r.path for r in rows],
                ),
                run_id=run_id,
            )
            report.added += len(rows)
