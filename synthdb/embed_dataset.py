"""Embed a catalog dataset: decode, detect, align, embed, commit (``synthdb embed``).

Images are decoded, searched for faces and aligned in worker processes (one detector each) while the
main process embeds batches and commits. Samples
are cut into units that each commit one embedding shard plus the unit's sample issues (unreadable
file, no face, several faces) in one transaction. What is done is read back from the catalog, not
from the run: a sample counts as done when a committed shard of this model holds its vector or an
issue for this model names it. So re-running after a crash (SIGKILL included) finishes the rest,
never duplicates a vector, and never retries a file that cannot work.

When a photo holds several faces the largest is embedded and the count is recorded as an issue,
never silently: the sample's vector is of one face among several.

A dataset's embeddings of one model come from one detector: the vectors of two alignments are not
comparable, so a run with another ``detector`` than the one that made them is refused, naming both, and
``replace`` retires what embed runs made (and the model's issues) to re-embed every image; vectors that
other runs made (a generator's own, an imported samples.h5) stay. Workers hand over a few images
at a time (:data:`DETECT_CHUNK`), so progress moves every few images, not once per committed unit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from synthdb import defaults, zoo
from synthdb.catalog import issues, samples, shards
from synthdb.catalog.datasets import get_dataset
from synthdb.catalog.runs import recorded_run, set_progress, set_summary, space_writers
from synthdb.catalog.schema import RunKind, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.faces.align import Cropper, resize
from synthdb.faces.detect import load_image
from synthdb.faces.embed import Embedder
from synthdb.faces.landmarks import ImageFaces
from synthdb.nets.cards import get_card
from synthdb.progress import progress_bar
from synthdb.store import parquet
from synthdb.store.commit import ShardSpec, commit
from synthdb.untrusted import Refused, image_header, resolve_inside

DETECTORS = ("mtcnn", "dlib", "none")
DETECT_CHUNK = 8
"""Images a decoding worker hands over at once: how often progress moves."""


@dataclass
class EmbedReport:
    """What an embed did: ``issues`` are the whole dataset's for this model (a resumed run's included),
    ``new_issues`` those this run met; ``replaced`` the shards ``replace`` retired."""

    dataset: str
    model: str
    detector: str
    run_id: int | None = None
    embedded: int = 0
    already_done: int = 0
    issues: dict[str, int] = field(default_factory=dict)
    new_issues: dict[str, int] = field(default_factory=dict)
    replaced: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "embedded": self.embedded,
            "already_done": self.already_done,
            "issues": self.issues,
            "new_issues": self.new_issues,
            "replaced_shards": self.replaced,
        }


Item = tuple[int, int | None, str]  # sample id, identity id, path relative to the dataset root
Result = tuple[int, int | None, torch.Tensor | None, dict | None]


class _Chunks(Dataset):
    """Per item: a chunk of a work unit decoded, searched for faces and aligned, in a DataLoader worker.

    Each result is ``(sample_id, identity_id, crop, issue)``: the aligned uint8 crop (3, S, S) or None,
    and the issue to record (unreadable, no face, several faces) or None. A chunk's images go to the
    detector together (MTCNN batches images of equal size). The detector is built lazily, once per
    worker process, so workers never share (or pickle) a model.
    """

    def __init__(self, root: Path, chunks: list[list[Item]], detector: str, preset: str, size: int) -> None:
        self.root, self.chunks, self.detector, self.preset, self.size = root, chunks, detector, preset, size
        self._cropper: Cropper | None = None

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> list[Result]:
        results: dict[int, Result] = {}
        loaded: list[tuple[int, Item, np.ndarray]] = []
        for position, (sample_id, identity_id, path) in enumerate(self.chunks[index]):
            try:
                real = resolve_inside(self.root, path)  # the tree may have changed since the import
                image_header(real)  # byte and pixel caps before anything is decoded
                loaded.append((position, (sample_id, identity_id, path), load_image(real)))
            except SynthdbError as exc:
                kind = exc.kind if isinstance(exc, Refused) else "unreadable"
                issue = {"kind": kind, "detail": {"error": str(exc)}}
                results[position] = (sample_id, identity_id, None, issue)
        if self.detector == "none":
            found = [None] * len(loaded)
        else:
            if self._cropper is None:
                self._cropper = Cropper(
                    self.detector,
                    self.preset,
                    value_range=(0.0, 255.0),
                    detector=zoo.detector(None, self.detector),
                )
            found = self._cropper.detector.detect([image for _, _, image in loaded])
        for (position, (sample_id, identity_id, _), image), faces in zip(loaded, found, strict=True):
            crop, issue = self._align(image, faces)
            results[position] = (sample_id, identity_id, crop, issue)
        return [results[i] for i in range(len(self.chunks[index]))]

    def _align(self, image: np.ndarray, found: ImageFaces | None) -> tuple[torch.Tensor | None, dict | None]:
        tensor = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float()
        if found is None:
            return _to_uint8(resize(tensor, (self.size, self.size))), None
        with torch.no_grad():
            crops, statuses = self._cropper.crop_detected(tensor, [found])
        status = statuses[0]
        if not status.ok:
            kind = "no_face" if status.faces == 0 else "detector_error"
            return None, {"kind": kind, "detail": {"error": status.error}}
        if status.faces > 1:
            boxes = [[round(v, 1) for v in face.box] for face in found.faces]
            return _to_uint8(crops), {
                "kind": "multiple_faces",
                "detail": {"faces": status.faces, "boxes": boxes},
            }
        return _to_uint8(crops), None


def _to_uint8(crops: torch.Tensor) -> torch.Tensor:
    return crops[0].round().clamp(0, 255).to(torch.uint8)


def _dataset_row(ctx: Context, name: str) -> tuple[int, Path]:
    dataset = get_dataset(ctx.catalog, name)  # the error lists the known datasets
    if dataset.root is None:
        raise SynthdbError(f"dataset '{name}' has no image root (latent-only): render its images first")
    return dataset.id, Path(dataset.root).resolve()  # resolved once: every file must resolve inside it


def done_samples(ctx: Context, dataset_id: int, model: str) -> set[int]:
    """Samples that already have a committed vector of ``model`` or a recorded issue for it."""
    done = issues.flagged_samples(ctx.catalog, dataset_id, model)
    embedded = shards.committed(
        ctx.catalog, dataset_id=dataset_id, contents=[ShardContent.EMBEDDING], space=model
    )
    for row in embedded:
        done.update(parquet.read_table(ctx.store.abspath(row.path), ["sample_id"]).column(0).to_pylist())
    return done


def _pending(ctx: Context, dataset_id: int, model: str) -> tuple[list[tuple[int, int | None, str]], int]:
    rows = samples.sample_columns(ctx.catalog, dataset_id, with_path=True)
    done = done_samples(ctx, dataset_id, model)
    identities = [None if i == samples.NO_IDENTITY else i for i in rows.identity_id.tolist()]
    pending = [
        (sample_id, identity, path)
        for sample_id, identity, path in zip(rows.id.tolist(), identities, rows.path, strict=True)
        if sample_id not in done
    ]
    return pending, len(rows.id) - len(pending)


def check_detector(ctx: Context, dataset_id: int, dataset: str, model: str, detector: str) -> None:
    """Refuse ``detector`` when embed runs with another detector made the dataset's ``model`` vectors (or
    issues): one model's vectors of a dataset must share one alignment. Vectors made by other runs
    (a generator's own embeddings, an imported samples.h5) name no detector and are not compared."""
    used = {
        str(run.params.get("detector")): run.id
        for run in space_writers(ctx.catalog, dataset_id, ShardContent.EMBEDDING, model)
        if run.kind == RunKind.EMBED and run.params.get("detector") != detector
    }
    if used:
        made = ", ".join(f"--detector {name} (run {run_id})" for name, run_id in sorted(used.items()))
        raise SynthdbError(
            f"dataset '{dataset}' has {model} embeddings made with {made}, so --detector {detector} would "
            f"mix two alignments: pass {' or '.join(f'--detector {name}' for name in sorted(used))} to "
            f"finish them, or --replace to re-embed every image with {detector}"
        )


def embed_dataset(
    ctx: Context,
    dataset: str,
    model: str = defaults.EMBEDDER,
    detector: str = defaults.DETECTOR,
    batch_size: int = 32,
    unit_size: int = 256,
    workers: int | None = None,
    device: str | None = None,
    quiet: bool = False,
    replace: bool = False,
) -> EmbedReport:
    """Embed every not-yet-embedded image of ``dataset`` with ``model``; see the module docstring."""
    if detector not in DETECTORS:
        raise SynthdbError(f"unknown detector '{detector}': use one of {', '.join(DETECTORS)}")
    card = get_card(model)
    dataset_id, root = _dataset_row(ctx, dataset)
    report = EmbedReport(dataset=dataset, model=model, detector=detector)
    # with --replace, load the model before anything is retired: one that fails to load changes nothing
    embedder = zoo.embedder(ctx, model, device) if replace else None
    if replace:
        report.replaced = shards.retire_embedded(ctx.catalog, dataset_id, ShardContent.EMBEDDING, model)
    else:
        check_detector(ctx, dataset_id, dataset, model, detector)
    pending, report.already_done = _pending(ctx, dataset_id, model)
    if not pending:
        report.issues = issues.counts(ctx.catalog, dataset_id, model)
        return report
    embedder = embedder or zoo.embedder(ctx, model, device)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    units = [pending[i : i + unit_size] for i in range(0, len(pending), unit_size)]
    step = DETECT_CHUNK
    chunks = [(u, unit[i : i + step]) for u, unit in enumerate(units) for i in range(0, len(unit), step)]
    loader = DataLoader(
        _Chunks(root, [chunk for _, chunk in chunks], detector, embedder.preset, embedder.size),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
    )
    params = {
        "dataset": dataset,
        "model": model,
        "detector": detector,
        "batch_size": batch_size,
        "unit_size": unit_size,
        "weights_sha256": card.sha256 or None,
        "replace": replace,
    }
    with recorded_run(ctx.catalog, RunKind.EMBED, algorithm=f"{model}/{detector}", params=params) as run_id:
        report.run_id = run_id
        done, unit = 0, []
        with progress_bar(len(pending), f"embed {dataset}", quiet, unit="images") as advance:
            for (index, _), results in zip(chunks, loader, strict=True):
                unit.extend(results)
                advance(len(results))
                if len(unit) == len(units[index]):  # the unit's last chunk: embed and commit it
                    _embed_unit(ctx, dataset_id, run_id, unit, embedder, batch_size, report)
                    done += len(unit)
                    set_progress(ctx.catalog, run_id, done / len(pending))
                    unit = []
        report.issues = issues.counts(ctx.catalog, dataset_id, model)
        set_summary(ctx.catalog, run_id, report.summary())
    return report


def _embed_unit(
    ctx: Context,
    dataset_id: int,
    run_id: int,
    unit: list,
    embedder: Embedder,
    batch_size: int,
    report: EmbedReport,
) -> None:
    ids, idents, crops, problems = [], [], [], []
    for sample_id, identity_id, crop, issue in unit:
        if issue is not None:
            found = issues.Issue(sample_id, issue["kind"], issue.get("detail"), embedder.name, run_id)
            problems.append(found)
            report.new_issues[issue["kind"]] = report.new_issues.get(issue["kind"], 0) + 1
        if crop is not None:
            ids.append(sample_id)
            idents.append(identity_id)
            crops.append(crop)
    if not crops:
        issues.record(ctx.catalog, problems)
        return
    batch = torch.stack(crops).float()
    with torch.no_grad():
        vectors = torch.cat(
            [embedder.embed(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)]
        )
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=dataset_id,
        run_id=run_id,
        unit=f"samples:{ids[0]}",
        sample_ids=np.asarray(ids, dtype=np.int64),
        identity_ids=idents,
        shards=[ShardSpec(ShardContent.EMBEDDING, embedder.name, {"embedding": vectors.cpu().numpy()})],
        issues=problems,
    )
    report.embedded += len(ids)
