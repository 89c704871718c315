"""ImageFolder: ``OUT/<identity>/<name>.<ext>``, the tree torchvision's ``ImageFolder`` and trainers read.

Names are stable: the folder is the identity label and the file the sample key without the identity
prefix and extension, both made file-name safe (``/`` -> ``__``) and made unique in export order
(``-1``, ``-2``...), so the same selection always gives the same paths. Without ``--crop``/``--size``
files are copied byte for byte; otherwise they are written as PNG (lossless). Each file appears by
rename, and the state file commits how many samples are done every ``checkpoint_every``, so a re-run
goes on from there.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from synthdb.export.folder import safe_name, unique_names, write_atomic
from synthdb.export.image_source import Skip
from synthdb.export.job import FormatSpec, Job, SkipLog, write_classes_csv
from synthdb.export.selection import SampleRecord
from synthdb.sources.listing import is_image_name


def stem(sample: SampleRecord) -> str:
    """The file name stem of a sample: its key inside the identity folder, extension dropped."""
    key = sample.key
    if sample.identity and key.startswith(sample.identity + "/"):
        key = key[len(sample.identity) + 1 :]
    if is_image_name(key):
        key = str(PurePosixPath(key).with_suffix(""))
    return safe_name(key)


def tree_names(samples: list[SampleRecord]) -> list[str]:
    """``<folder>/<stem>`` per sample: folders unique across identities, stems unique within a folder."""
    identities = list(dict.fromkeys((s.identity_id, s.identity) for s in samples))
    folders = dict(
        zip(identities, unique_names(safe_name(label or "_") for _, label in identities), strict=True)
    )
    names = [""] * len(samples)
    by_folder: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_folder.setdefault(folders[(s.identity_id, s.identity)], []).append(i)
    for folder, members in by_folder.items():
        for i, name in zip(members, unique_names(stem(samples[i]) for i in members), strict=True):
            names[i] = f"{folder}/{name}"
    return names


def write_tree(job: Job, samples: list[SampleRecord], root: Path) -> dict[int, str]:
    """Write the samples' images under ``root``; returns sample id -> path relative to ``root``.

    Resumes from ``job.state.progress['next']``; skipped samples are logged in ``job.skips`` and get no
    path. Paths are known before encoding (:meth:`ImageSource.extension`), so none is kept in the state.
    """
    assert job.images is not None
    progress = job.state.progress
    progress.setdefault("next", 0)
    job.skips = SkipLog.from_dict(progress.get("skips"))
    names = [
        name + job.images.extension(s.path or "")
        for name, s in zip(tree_names(samples), samples, strict=True)
    ]
    processed = progress["next"]

    def checkpoint() -> None:
        progress.update(next=processed, skips=job.skips.to_dict())
        job.state.save()
        job.report_progress(processed, len(samples))

    job.advance(processed)
    for sample, result in job.encoded(samples[processed:]):
        if isinstance(result, Skip):
            job.skips.add(sample, result)
        else:
            path = root / names[processed]
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, result.data, fsync=False)
        processed += 1
        job.advance(1)
        if processed % job.options.checkpoint_every == 0:
            checkpoint()
    checkpoint()
    skipped = set(job.skips.ids)
    return {s.id: name for s, name in zip(samples, names, strict=True) if s.id not in skipped}


def write(job: Job) -> dict[str, Any]:
    paths = write_tree(job, job.selection.samples, job.out)
    write_classes_csv(job, job.out / "classes.csv")
    return {"images": len(paths), "classes": len(job.selection.classes)}


FORMAT = FormatSpec("imagefolder", write, needs_identity=True, needs_image=True, encoding="keep")
