"""ImageFolder: ``OUT/<identity>/<name>.<ext>``, the tree torchvision's ``ImageFolder`` and trainers read.

Names are stable: the folder is the identity label and the file the sample key without the identity
prefix and extension, both made file-name safe (``/`` -> ``__``) and made unique in export order
(``-1``, ``-2``...), so the same selection always gives the same paths. Without ``--crop``/``--size``
files are copied byte for byte; otherwise they are written as PNG (lossless). Each file appears by
rename, and the state file commits how many samples are done every ``checkpoint_every``, so a re-run
goes on from there. ``classes.csv`` maps class ids (identities with at least one image, in order) back
to catalog identities.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from synthdb.export.folder import safe_name, unique_name, write_atomic
from synthdb.export.image_source import Skip
from synthdb.export.job import CLASSES_NAME, ClassTable, FormatSpec, Job, SkipLog
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


class TreeNames:
    """``<folder>/<stem>`` of each sample of a stream grouped by identity, in export order.

    Folders are unique across identities and stems within a folder; only the folder names and the open
    folder's stems are remembered, never one entry per sample of the whole export.
    """

    def __init__(self) -> None:
        self._folders: set[str] = set()
        self._identity: tuple[int | None, str | None] | None = None
        self._folder = ""
        self._stems: set[str] = set()

    def __call__(self, sample: SampleRecord) -> str:
        identity = (sample.identity_id, sample.identity)
        if identity != self._identity:
            self._identity = identity
            self._folder = unique_name(safe_name(sample.identity or "_"), self._folders)
            self._stems = set()
        return f"{self._folder}/{unique_name(stem(sample), self._stems)}"


def write_tree(
    job: Job, samples: Iterable[SampleRecord], total: int, root: Path, classes: ClassTable | None
) -> int:
    """Write the images of ``samples`` (the whole stream, from its start) under ``root``; return how many.

    Resumes from ``job.state.progress['next']``: the names of the samples done before are recomputed (they
    are known before encoding, :meth:`ImageSource.extension`), never stored. Skipped samples are logged in
    ``job.skips`` and get no file; ``classes`` (when given) numbers the identities that got images.
    """
    assert job.images is not None
    images = job.images
    progress = job.state.progress
    progress.setdefault("next", 0)
    progress.setdefault("written", 0)
    job.skips = SkipLog.from_dict(progress.get("skips"))
    names = TreeNames()
    stream = iter(samples)
    processed, written = progress["next"], progress["written"]
    for sample in itertools.islice(stream, processed):
        names(sample)

    def checkpoint() -> None:
        if classes is not None:
            classes.sync()
            progress["classes"] = classes.to_dict()
        progress.update(next=processed, written=written, skips=job.skips.to_dict())
        job.state.save()
        job.report_progress(processed, total)

    job.advance(processed)
    named = ((s, names(s) + images.extension(s.path or "")) for s in stream)
    for (sample, name), result in job.encoded(named, lambda item: item[0].path):
        if isinstance(result, Skip):
            job.skips.add(sample, result)
            if classes is not None:
                classes.see(sample)
        else:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, result.data, fsync=False)
            written += 1
            if classes is not None:
                classes.image(sample)
        processed += 1
        job.advance(1)
        if processed % job.options.checkpoint_every == 0:
            checkpoint()
    checkpoint()
    return written


def write(job: Job) -> dict[str, Any]:
    classes = ClassTable(job.out / CLASSES_NAME, job.state.progress.get("classes"))
    try:
        images = write_tree(job, job.selection.samples(), job.selection.count, job.out, classes)
        classes.finish()
    finally:
        classes.close()
    return {"images": images, "classes": classes.written, "identities_without_images": classes.empty}


FORMAT = FormatSpec("imagefolder", write, needs_identity=True, needs_image=True, encoding="keep")
