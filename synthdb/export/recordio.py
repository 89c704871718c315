"""insightface training data: MXNet IndexedRecordIO ``train.rec``/``train.idx``, ``property``, ``train.meta``.

Written here byte by byte, without mxnet, from the format's definition (dmlc-core ``recordio.cc`` and
``mxnet.recordio``):

* a record on disk is the magic word ``0xced7230a``, a length word ``cflag << 29 | length``, the
  payload and zero padding to 4 bytes. A payload that contains the magic word at a 4-aligned offset is
  cut there into parts (cflag 1 = first, 2 = middle, 3 = last; 0 = whole), the magic itself dropped,
  so that a reader can always resynchronise on the magic;
* a payload is an ``IRHeader`` (``<IfQQ``: flag, label float32, id, id2), then, when flag > 0, ``flag``
  float32 labels, then the data;
* ``train.idx`` holds one ``key<TAB>offset`` line per record.

The layout is insightface's legacy one, which its ``MXFaceDataset`` and the older mxnet trainers read:
record 0 is a header whose two labels are ``(N, M)``; records ``1 .. N-1`` are the JPEG images, labelled
with their contiguous class id (``IRHeader(0, class, idx, 0)``); records ``N .. M-1`` are one per class,
labelled with the ``[start, end)`` range of its image records. ``property`` is
``<classes>,<height>,<width>`` and the image count; ``train.meta`` is the pickled list of
``{'image_index', 'image_classes'}`` that insightface's ``RecBuilder`` writes.

Resumable: records stream into the two files and, every ``checkpoint_every`` samples, both are fsynced
and their lengths committed to the state file. A re-run truncates them to those lengths and goes on.
Header 0 is written first with a placeholder and its labels patched in place at the end (its size
never changes: a positive float32 never equals the magic word), so the bytes do not depend on where a
run was interrupted.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, BinaryIO

import numpy as np

from synthdb.errors import SynthdbError
from synthdb.export.common import FormatSpec, Job, SkipLog, open_at, sync, write_atomic, write_classes_csv
from synthdb.export.images import Skip

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_HEADER = struct.Struct("<IfQQ")
LABEL_PATCH_OFFSET = 8 + IR_HEADER.size
"""Where header 0's two float32 labels sit in ``train.rec``: after the magic/length words and IRHeader."""
FLOAT32_EXACT = 1 << 24
"""Record indices are stored as float32 labels in the header records: exact up to 2**24."""


def frame(payload: bytes) -> bytes:
    """``payload`` as it sits in a .rec file: magic, length/flag word, data, padding (see module doc)."""
    parts: list[bytes] = []
    start, search = 0, 0
    while (found := payload.find(MAGIC_BYTES, search)) >= 0:
        search = found + 1
        if found % 4:
            continue
        parts += [
            MAGIC_BYTES,
            struct.pack("<I", (1 if start == 0 else 2) << 29 | (found - start)),
            payload[start:found],
        ]
        start = search = found + 4
    parts += [
        MAGIC_BYTES,
        struct.pack("<I", (3 if start else 0) << 29 | (len(payload) - start)),
        payload[start:],
        b"\0" * (-len(payload) % 4),
    ]
    return b"".join(parts)


def pack(label: float | tuple[float, ...], record_id: int, data: bytes = b"") -> bytes:
    """An IRHeader payload as ``mxnet.recordio.pack`` makes it: a scalar label, or labels after the header."""
    if isinstance(label, tuple):
        return IR_HEADER.pack(len(label), 0.0, record_id, 0) + np.asarray(label, "<f4").tobytes() + data
    return IR_HEADER.pack(0, float(label), record_id, 0) + data


class _RecordFiles:
    """``train.rec`` and ``train.idx`` opened at their committed lengths."""

    def __init__(self, job: Job, rec_bytes: int, idx_bytes: int) -> None:
        self.rec: BinaryIO = open_at(job.out / "train.rec", rec_bytes)
        self.idx: BinaryIO = open_at(job.out / "train.idx", idx_bytes)
        self.rec_bytes, self.idx_bytes = rec_bytes, idx_bytes

    def append(self, key: int, payload: bytes) -> None:
        record = frame(payload)
        line = f"{key}\t{self.rec_bytes}\n".encode()
        self.rec.write(record)
        self.idx.write(line)
        self.rec_bytes += len(record)
        self.idx_bytes += len(line)

    def sync(self) -> None:
        sync(self.rec)
        sync(self.idx)

    def close(self) -> None:
        self.rec.close()
        self.idx.close()


def write(job: Job) -> dict[str, Any]:
    samples, classes = job.selection.samples, job.selection.classes
    if len(samples) + len(classes) + 1 > FLOAT32_EXACT:
        raise SynthdbError(
            f"{len(samples)} images and {len(classes)} classes exceed the 2**24 records insightface's "
            "float32 header labels can index: export a part with --where, or use --format webdataset"
        )
    progress = job.state.progress
    fresh = not progress
    if fresh:
        progress.update(next=0, written=0, rec=0, idx=0)
    job.skips = SkipLog.from_dict(progress.get("skips"))
    files = _RecordFiles(job, progress["rec"], progress["idx"])
    processed, written = progress["next"], progress["written"]

    def checkpoint() -> None:
        files.sync()
        progress.update(
            next=processed,
            written=written,
            rec=files.rec_bytes,
            idx=files.idx_bytes,
            skips=job.skips.to_dict(),
        )
        job.state.save()
        job.report_progress(processed, len(samples))

    try:
        if fresh:
            files.append(0, pack((0.0, 0.0), 0))  # placeholder, patched by _finish
            checkpoint()
        job.advance(processed)
        every = job.options.checkpoint_every
        for sample, result in job.encoded(samples[processed:]):
            if isinstance(result, Skip):
                job.skips.add(sample, result)
            else:
                written += 1
                files.append(written, pack(float(sample.cls), written, result.data))
            processed += 1
            job.advance(1)
            if processed % every == 0:
                checkpoint()
        checkpoint()
        _finish(job, files, written)
    finally:
        files.close()
    return {"images": written, "classes": len(classes), "records": written + len(classes) + 1}


def _finish(job: Job, files: _RecordFiles, written: int) -> None:
    """Append the class range records, patch header 0, write property, train.meta and classes.csv."""
    classes, skipped = job.selection.classes, set(job.skips.ids)
    ranges = [[0, 0] for _ in classes]
    meta = []
    idx = 1
    for sample in job.selection.samples:
        if sample.id in skipped:
            continue
        if ranges[sample.cls][1] == 0:
            ranges[sample.cls][0] = idx
        ranges[sample.cls][1] = idx + 1
        meta.append({"image_index": idx, "image_classes": [sample.cls]})
        idx += 1
    first_class_record = written + 1
    for cls, (start, end) in enumerate(ranges):
        if end == 0:  # every image of this class was skipped: an empty range where it would start
            start = end = _empty_range_start(ranges, cls, first_class_record)
        files.append(first_class_record + cls, pack((float(start), float(end)), first_class_record + cls))
    files.rec.flush()
    files.rec.seek(LABEL_PATCH_OFFSET)
    files.rec.write(np.asarray([first_class_record, first_class_record + len(classes)], "<f4").tobytes())
    files.sync()
    size = job.options.size
    write_atomic(job.out / "property", f"{len(classes)},{size},{size}\n{written}\n".encode())
    write_atomic(job.out / "train.meta", pickle.dumps(meta, protocol=4))
    write_classes_csv(job, job.out / "classes.csv")


def _empty_range_start(ranges: list[list[int]], cls: int, end_of_images: int) -> int:
    """Where an empty class's images would begin: the next non-empty class's start, else the end."""
    for start, end in ranges[cls + 1 :]:
        if end:
            return start
    return end_of_images


FORMAT = FormatSpec(
    "recordio", write, needs_identity=True, needs_image=True, encoding="jpeg", default_size=112
)
