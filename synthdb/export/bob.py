"""bob.bio.base ``CSVDatabase`` protocol folders from a catalog protocol.

``OUT/<protocol>/train/for_background_model.csv`` and ``OUT/<protocol>/<dev|eval>/for_enrolling.csv``,
``for_probing.csv`` (and ``for_znorm.csv``/``for_tnorm.csv``), columns ``path,subject_id,template_id``,
which is what ``bob.bio.base.database.CSVDatabase(name, protocol, dataset_protocols_path=OUT,
original_directory=..., original_extension=...)`` reads. A member's purpose picks the file (``train``,
``enroll``, ``probe``, ``znorm``, ``tnorm``; a member of a group called ``train`` needs none); enrolment
templates are per identity, probe and training templates per sample.

Without ``--crop``/``--size`` the CSVs point at the dataset's own files (``original_directory`` = the
dataset root); otherwise the crops are written under ``OUT/data`` as in the imagefolder format, and the
CSVs point there. bob appends ``original_extension`` to ``path``: when every file has the same extension
the paths leave it out, as bob's own protocols do; else they keep it and the extension is empty. The
manifest's ``bob`` entry gives both values.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import PurePosixPath
from typing import Any

from synthdb.catalog import protocols
from synthdb.errors import SynthdbError
from synthdb.export.folder import safe_name, write_atomic
from synthdb.export.imagefolder import write_tree
from synthdb.export.job import FormatSpec, Job
from synthdb.export.selection import SampleRecord

PURPOSE_FILES = {
    "train": "for_background_model.csv",
    "enroll": "for_enrolling.csv",
    "probe": "for_probing.csv",
    "znorm": "for_znorm.csv",
    "tnorm": "for_tnorm.csv",
}


def protocol_id(job: Job, name: str | None) -> int:
    """The id of the dataset's protocol ``name``; the error lists the protocols there are."""
    dataset = job.selection.dataset
    known = protocols.protocols_of(job.ctx.catalog, dataset.id)
    if name is None or name not in known:
        what = "needs --protocol" if name is None else f"has no protocol '{name}'"
        listed = ", ".join(known) or "none"
        raise SynthdbError(f"dataset '{dataset.name}' {what} (its protocols: {listed}): pass one of those")
    return known[name]


def _memberships(job: Job) -> dict[str, list[tuple[str, SampleRecord]]]:
    """CSV file (``<folder>/<file>``) -> (purpose, sample), in export order."""
    rows = protocols.members(job.ctx.catalog, protocol_id(job, job.options.protocol))
    position = {s.id: i for i, s in enumerate(job.selection.samples)}
    files: dict[str, list[tuple[int, str, SampleRecord]]] = defaultdict(list)
    for group, purpose, sample_id in rows:
        if sample_id not in position:
            continue
        purpose = purpose or ("train" if group == "train" else None)
        if purpose not in PURPOSE_FILES:
            raise SynthdbError(
                f"protocol '{job.options.protocol}' group '{group}' has members with purpose {purpose!r}: "
                f"bob needs one of {', '.join(PURPOSE_FILES)}; fix the protocol's import"
            )
        folder = "train" if purpose == "train" else safe_name(group)
        i = position[sample_id]
        files[f"{folder}/{PURPOSE_FILES[purpose]}"].append((i, purpose, job.selection.samples[i]))
    return {
        name: [(p, s) for _, p, s in sorted(entries, key=lambda e: e[0])]
        for name, entries in sorted(files.items())
    }


def write(job: Job) -> dict[str, Any]:
    files = _memberships(job)
    if not files:
        raise SynthdbError(
            f"protocol '{job.options.protocol}' has no member among the selected samples: "
            "check --where and that the protocol was imported"
        )
    members = {s.id for entries in files.values() for _, s in entries}
    used = [s for s in job.selection.samples if s.id in members]
    if job.options.crop is None and job.options.size is None:
        root = job.selection.dataset.root
        paths = {s.id: str(s.path) for s in used}
    else:
        root = job.out / "data"
        paths = {k: f"data/{v}" for k, v in write_tree(job, used, root).items()}
        root = job.out
    suffixes = {PurePosixPath(p).suffix for p in paths.values()}
    extension = suffixes.pop() if len(suffixes) == 1 else ""
    if extension:
        paths = {k: v[: -len(extension)] for k, v in paths.items()}
    protocol = safe_name(job.options.protocol or "")
    rows = 0
    for name, entries in files.items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "subject_id", "template_id"])
        for purpose, s in entries:
            if s.id in paths:
                template = s.identity if purpose == "enroll" else s.key
                writer.writerow([paths[s.id], s.identity, template])
                rows += 1
        target = job.out / protocol / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, buffer.getvalue().encode())
    return {
        "rows": rows,
        "images": len(paths),
        "csv_files": len(files),
        "bob": {"original_directory": str(root), "original_extension": extension, "protocol": protocol},
    }


FORMAT = FormatSpec("bob", write, needs_identity=True, needs_image=True, encoding="keep")
