"""insightface training data: MXNet IndexedRecordIO ``train.rec``/``train.idx``, ``property``, ``train.meta``.

Written and read here byte by byte, without mxnet, from the format's definition (dmlc-core ``recordio.cc`` and
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
``{'image_index', 'image_classes'}`` that insightface's ``RecBuilder`` writes. Class ids are contiguous
over the identities that have at least one image (an identity whose only photo had no face gets none),
the same ids in the records, ``property``, the header and ``classes.csv``.

Resumable: records stream into the files and, every ``checkpoint_every`` samples, they are fsynced
and their lengths committed to the state file. A re-run truncates them to those lengths and goes on.
Header 0 is written first with a placeholder and its labels patched in place at the end (its size
never changes: a positive float32 never equals the magic word), so the bytes do not depend on where a
run was interrupted.

:class:`RecordReader` reads such files back (ours, to verify an export, or a downloaded insightface
``train.rec``). The files may be hostile: every length and offset is checked against the file's size
before anything is read, so a damaged or crafted file costs at most its own size in memory and ends in
one :class:`SynthdbError` naming the file, the byte and the fix.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from synthdb.errors import SynthdbError
from synthdb.export.folder import open_at, sync, write_atomic
from synthdb.export.image_source import Skip
from synthdb.export.job import CLASSES_NAME, ClassTable, FormatSpec, Job, SkipLog, read_classes

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_HEADER = struct.Struct("<IfQQ")
LABEL_PATCH_OFFSET = 8 + IR_HEADER.size
"""Where header 0's two float32 labels sit in ``train.rec``: after the magic/length words and IRHeader."""
FLOAT32_EXACT = 1 << 24
"""Record indices are stored as float32 labels in the header records: exact up to 2**24."""
LENGTH_BITS = 29
"""The length word holds ``cflag << 29 | length``: parts are under 512 MiB."""
WHOLE, FIRST, MIDDLE, LAST = range(4)
"""The cflag of a part: a whole record, or the first, a middle or the last part of a cut one."""


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
            struct.pack("<I", (FIRST if start == 0 else MIDDLE) << LENGTH_BITS | (found - start)),
            payload[start:found],
        ]
        start = search = found + 4
    parts += [
        MAGIC_BYTES,
        struct.pack("<I", (LAST if start else WHOLE) << LENGTH_BITS | (len(payload) - start)),
        payload[start:],
        b"\0" * (-len(payload) % 4),
    ]
    return b"".join(parts)


def pack(label: float | tuple[float, ...], record_id: int, data: bytes = b"") -> bytes:
    """An IRHeader payload as ``mxnet.recordio.pack`` makes it: a scalar label, or labels after the header."""
    if isinstance(label, tuple):
        return IR_HEADER.pack(len(label), 0.0, record_id, 0) + np.asarray(label, "<f4").tobytes() + data
    return IR_HEADER.pack(0, float(label), record_id, 0) + data


# ------------------------------------------------------------------------------------------------ reading

INDEX_LINE = re.compile(rb"(\d{1,19})\t(\d{1,19})")
"""A ``train.idx`` line, surrounding whitespace stripped: ``key<TAB>offset``, as mxnet writes it."""
REFETCH = "re-export it (synthdb export --format recordio) or download it again"


class Record(NamedTuple):
    """A record read back: its ``.idx`` key (None in a scan without the index), the byte it starts at,
    and its IRHeader (a float label, or a tuple when the header has ``flag`` labels) and data."""

    key: int | None
    offset: int
    label: float | tuple[float, ...]
    id: int
    id2: int
    data: bytes


class RecordReader:
    """A ``.rec`` file and, when given, its ``.idx``, opened to read records back.

    Without an index, iteration scans the file from byte 0 as ``mxnet.recordio.MXRecordIO`` does, which
    also proves the file holds nothing but whole records. With one, ``reader[key]`` reads the record at
    the key's offset (how insightface's ``MXFaceDataset`` reads) and iteration follows the index's lines.
    The file is read with seeks, never whole: datasets run to hundreds of GB.
    """

    def __init__(
        self, path_rec: str | os.PathLike[str], path_idx: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path_rec)
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - close() closes it
        except OSError as exc:
            raise SynthdbError(
                f"cannot read RecordIO file {self.path}: {exc.strerror}: pass a .rec file"
            ) from None
        self.size = os.fstat(self._file.fileno()).st_size
        try:
            self.index = read_index(path_idx, self.size) if path_idx is not None else None
        except SynthdbError:
            self._file.close()
            raise

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[Record]:
        if self.index is None:
            offset = 0
            while offset < self.size:
                payload, after = self._payload(offset, "")
                yield self._record(None, offset, payload, "")
                offset = after
        else:
            for key in self.index:
                yield self[key]

    def __getitem__(self, key: int) -> Record:
        if self.index is None:
            raise SynthdbError(f"{self.path} was opened without its .idx file: pass path_idx to read by key")
        if key not in self.index:
            raise SynthdbError(f"{self.path}: its index has no record {key}: {REFETCH}")
        offset, where = self.index[key], f" (index key {key})"
        return self._record(key, offset, self._payload(offset, where)[0], where)

    def payload_at(self, offset: int) -> tuple[bytes, int]:
        """The logical record starting at byte ``offset`` (parts joined again with the magic words they
        were cut at), and the offset after it."""
        return self._payload(offset, "")

    def _payload(self, offset: int, where: str) -> tuple[bytes, int]:
        parts: list[bytes] = []
        at = offset
        while True:
            magic, word = struct.unpack("<II", self._read(at, 8, where))
            if magic != MAGIC:
                raise self._damaged(at, where, "no record starts there (no magic word 0xced7230a)")
            cflag, length = word >> LENGTH_BITS, word & ((1 << LENGTH_BITS) - 1)
            if cflag not in ((MIDDLE, LAST) if parts else (WHOLE, FIRST)):
                state = "inside a record cut in parts" if parts else "where a record begins"
                raise self._damaged(at, where, f"part flag {cflag} {state}")
            padded = length + -length % 4
            if padded > self.size - at - 8:  # checked before reading: a length word may claim 512 MiB
                raise self._damaged(at, where, f"a part of {length} bytes runs past the end of the file")
            parts.append(self._read(at + 8, length, where))
            at += 8 + padded
            if cflag in (WHOLE, LAST):
                return MAGIC_BYTES.join(parts), at

    def _read(self, offset: int, count: int, where: str) -> bytes:
        self._file.seek(offset)
        data = self._file.read(count)
        if len(data) != count:
            raise self._damaged(offset, where, "the file ends inside a record")
        return data

    def _record(self, key: int | None, offset: int, payload: bytes, where: str) -> Record:
        if len(payload) < IR_HEADER.size:
            raise self._damaged(offset, where, f"a {len(payload)}-byte record is shorter than its IRHeader")
        flag, label, record_id, id2 = IR_HEADER.unpack_from(payload)
        if flag == 0:
            return Record(key, offset, label, record_id, id2, payload[IR_HEADER.size :])
        end = IR_HEADER.size + 4 * flag
        if end > len(payload):
            raise self._damaged(offset, where, f"the IRHeader declares {flag} labels past the record's end")
        labels = tuple(np.frombuffer(payload, "<f4", flag, IR_HEADER.size).tolist())
        return Record(key, offset, labels, record_id, id2, payload[end:])

    def _damaged(self, offset: int, where: str, what: str) -> SynthdbError:
        return SynthdbError(
            f"{self.path} is not readable RecordIO at byte {offset}{where}: {what}: {REFETCH}"
        )


def read_index(path_idx: str | os.PathLike[str], rec_size: int) -> dict[int, int]:
    """``train.idx`` as ``{key: offset}`` in line order, every line checked against the ``.rec`` size."""
    path = Path(path_idx)
    index: dict[int, int] = {}
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                match = INDEX_LINE.fullmatch(line)
                if match is None:
                    problem = f"{line[:40]!r} is not 'key<TAB>offset'"
                else:
                    key, offset = int(match[1]), int(match[2])
                    if key in index:
                        problem = f"key {key} is listed twice"
                    elif offset + 8 > rec_size:
                        problem = f"offset {offset} is past the end of the {rec_size}-byte .rec file"
                    else:
                        index[key] = offset
                        continue
                raise SynthdbError(
                    f"{path} line {number}: {problem}: pass the .idx written with this .rec, "
                    "or read the .rec without an index"
                )
    except OSError as exc:
        raise SynthdbError(f"cannot read RecordIO index {path}: {exc.strerror}: pass a .idx file") from None
    return index


def read_records(
    path_rec: str | os.PathLike[str], path_idx: str | os.PathLike[str] | None = None
) -> Iterator[Record]:
    """Every record of a ``.rec`` file: in file order, or in the index's order when ``path_idx`` is given."""
    with RecordReader(path_rec, path_idx) as reader:
        yield from reader


# ------------------------------------------------------------------------------------------------ writing


META_START = b"\x80\x02]"  # pickle protocol 2, an empty list
META_APPEND, META_STOP = b"a", b"."


def meta_item(index: int, cls: int) -> bytes:
    """One ``train.meta`` entry as pickle opcodes that append it to the list (the file is a pickled list of
    ``{'image_index', 'image_classes'}`` dicts, written one entry at a time so it never sits in memory)."""
    body = pickle.dumps({"image_index": index, "image_classes": [cls]}, protocol=2)
    return body[2:-1] + META_APPEND  # without its own PROTO header and STOP


class _RecordFiles:
    """``train.rec``, ``train.idx`` and ``train.meta`` opened at their committed lengths."""

    def __init__(self, job: Job, committed: dict[str, int]) -> None:
        self.rec: BinaryIO = open_at(job.out / "train.rec", committed["rec"])
        self.idx: BinaryIO = open_at(job.out / "train.idx", committed["idx"])
        self.meta: BinaryIO = open_at(job.out / "train.meta", committed.get("meta", 0))
        self.rec_bytes, self.idx_bytes = committed["rec"], committed["idx"]
        self.meta_bytes = committed.get("meta", 0)

    def append(self, key: int, payload: bytes) -> None:
        record = frame(payload)
        line = f"{key}\t{self.rec_bytes}\n".encode()
        self.rec.write(record)
        self.idx.write(line)
        self.rec_bytes += len(record)
        self.idx_bytes += len(line)

    def append_meta(self, data: bytes) -> None:
        self.meta.write(data)
        self.meta_bytes += len(data)

    def lengths(self) -> dict[str, int]:
        return {"rec": self.rec_bytes, "idx": self.idx_bytes, "meta": self.meta_bytes}

    def sync(self) -> None:
        sync(self.rec)
        sync(self.idx)
        sync(self.meta)

    def close(self) -> None:
        self.rec.close()
        self.idx.close()
        self.meta.close()


def write(job: Job) -> dict[str, Any]:
    selection = job.selection
    if selection.count + selection.classes + 1 > FLOAT32_EXACT:
        raise SynthdbError(
            f"{selection.count} images and {selection.classes} classes exceed the 2**24 records "
            "insightface's float32 header labels can index: export a part with --where, or use "
            "--format webdataset"
        )
    progress = job.state.progress
    fresh = not progress
    if fresh:
        progress.update(next=0, written=0, rec=0, idx=0, meta=0)
    job.skips = SkipLog.from_dict(progress.get("skips"))
    files = _RecordFiles(job, progress)
    classes = ClassTable(job.out / CLASSES_NAME, progress.get("classes"))
    processed, written = progress["next"], progress["written"]

    def checkpoint() -> None:
        files.sync()
        classes.sync()
        progress.update(
            next=processed, written=written, skips=job.skips.to_dict(), classes=classes.to_dict()
        )
        progress.update(files.lengths())
        job.state.save()
        job.report_progress(processed, selection.count)

    try:
        if fresh:
            files.append(0, pack((0.0, 0.0), 0))  # placeholder, patched by _finish
            files.append_meta(META_START)
            checkpoint()
        job.advance(processed)
        every = job.options.checkpoint_every
        for sample, result in job.encoded(selection.samples(processed)):
            if isinstance(result, Skip):
                job.skips.add(sample, result)
                classes.see(sample)
            else:
                written += 1
                cls = classes.image(sample)
                files.append(written, pack(float(cls), written, result.data))
                files.append_meta(meta_item(written, cls))
            processed += 1
            job.advance(1)
            if processed % every == 0:
                checkpoint()
        checkpoint()
        classes.finish()
        _finish(job, files, written, classes.written)
    finally:
        files.close()
        classes.close()
    return {
        "images": written,
        "classes": classes.written,
        "identities_without_images": classes.empty,
        "records": written + classes.written + 1,
    }


def _finish(job: Job, files: _RecordFiles, written: int, classes: int) -> None:
    """Append one record per class with its ``[start, end)`` image records (from ``classes.csv``, whose
    rows hold each class's image count in record order), patch header 0, end ``train.meta``, write
    ``property``."""
    first_class_record = written + 1
    start = 1
    for cls, images in read_classes(job.out / CLASSES_NAME):
        key = first_class_record + cls
        files.append(key, pack((float(start), float(start + images)), key))
        start += images
    files.rec.flush()
    files.rec.seek(LABEL_PATCH_OFFSET)
    files.rec.write(np.asarray([first_class_record, first_class_record + classes], "<f4").tobytes())
    files.append_meta(META_STOP)
    files.sync()
    size = job.options.size
    write_atomic(job.out / "property", f"{classes},{size},{size}\n{written}\n".encode())


FORMAT = FormatSpec(
    "recordio", write, needs_identity=True, needs_image=True, encoding="jpeg", default_size=112
)
