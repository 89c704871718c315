"""WebDataset: POSIX tar shards ``<name>-000000.tar`` ... of ``<key>.jpg`` + ``<key>.cls`` + ``<key>.json``.

Files that share a key (the name up to its first dot) form one sample. Keys are the 9-digit position
of the sample in the export (catalog keys hold dots and slashes, which would split or nest a sample): the
catalog key is the ``key`` field of the sample's ``.json``, which also carries the sample id, identity,
role, label and attributes. ``.cls`` is the class id in ASCII (what webdataset's decoders turn into an
int), contiguous over the identities that have at least one image, as in ``classes.csv``. A shard
closes before a sample that would take it past ``shard_max_count`` samples or ``shard_max_bytes`` bytes,
as ``webdataset.ShardWriter`` does. ``shardindex.json`` lists the shards with their sample counts in the
``wids`` format, so ``wids.ShardListDataset("OUT/shardindex.json")`` opens the export as it is.

The tar bytes are written here, not by ``tarfile.open``, so that they are reproducible and resumable:
ustar headers (as :meth:`tarfile.TarInfo.tobuf` writes them) with mtime 0, mode 0444, no owner; members
padded to 512 bytes; a closed shard ends with two zero blocks padded to tar's 10240-byte record. The
state file commits (shard, length, samples in it) every ``checkpoint_every`` samples; a re-run deletes
shards started after that, truncates the current one to its committed length and goes on, which gives
the same bytes as an export that never stopped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, BinaryIO

from synthdb.export.folder import json_bytes, open_at, safe_name, sync, write_atomic
from synthdb.export.image_source import Skip
from synthdb.export.job import CLASSES_NAME, ClassTable, FormatSpec, Job, SkipLog
from synthdb.export.selection import SampleRecord

BLOCK = 512
RECORD = 20 * BLOCK
END_OF_ARCHIVE = 2 * BLOCK


def _ustar_template() -> bytes:
    """The fields every member shares: mode 0444, uid/gid 0, mtime 0, regular file, ustar magic."""
    head = bytearray(BLOCK)
    head[100:124] = b"0000444\0" + b"0000000\0" * 2  # mode, uid, gid
    head[136:148] = b"00000000000\0"  # mtime
    head[156:157] = b"0"  # typeflag: regular file
    head[257:265] = b"ustar\x0000"  # magic, version
    return bytes(head)


_TEMPLATE = _ustar_template()


def member(name: str, data: bytes) -> bytes:
    """One tar member: a ustar header as ``tarfile.TarInfo.tobuf(USTAR_FORMAT)`` writes it, data, padding.

    Built from a template rather than by ``tarfile``: only the name, size and checksum change, and
    ``tobuf`` costs more than encoding a small JPEG.
    """
    raw = name.encode()
    if len(raw) > 100:
        raise ValueError(f"tar member name {name!r} is longer than ustar's 100 bytes")
    head = bytearray(_TEMPLATE)
    head[: len(raw)] = raw
    head[124:136] = b"%011o\0" % len(data)
    head[148:156] = b" " * 8  # the checksum counts its own field as spaces
    head[148:156] = b"%06o\0 " % sum(head)
    return bytes(head) + data + b"\0" * (-len(data) % BLOCK)


def closing(length: int) -> bytes:
    """What ends a shard of ``length`` bytes: the end-of-archive blocks and padding to a full record."""
    return b"\0" * (END_OF_ARCHIVE + (-(length + END_OF_ARCHIVE) % RECORD))


def sample_bytes(job: Job, key: str, sample: SampleRecord, cls: int, image: bytes) -> bytes:
    facts = {
        "key": sample.key,
        "sample_id": sample.id,
        "dataset": job.selection.dataset.name,
        "identity": sample.identity,
        "identity_id": sample.identity_id,
        "class": cls,
        "role": sample.role,
        "label": sample.label,
        "attributes": sample.attributes,
    }
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return b"".join(
        [
            member(f"{key}.jpg", image),
            member(f"{key}.cls", str(cls).encode()),
            member(f"{key}.json", text.encode()),
        ]
    )


def shard_path(job: Job, index: int) -> Path:
    return job.out / f"{safe_name(job.selection.dataset.name)}-{index:06d}.tar"


def _remove_later_shards(job: Job, current: int) -> None:
    """Delete shards a killed run started after its last checkpoint (they are written again)."""
    pattern = re.compile(re.escape(safe_name(job.selection.dataset.name)) + r"-(\d{6})\.tar")
    for path in job.out.iterdir():
        found = pattern.fullmatch(path.name)
        if found and int(found.group(1)) > current:
            path.unlink()


def write(job: Job) -> dict[str, Any]:
    selection = job.selection
    progress = job.state.progress
    if not progress:
        progress.update(next=0, written=0, shard=0, offset=0, in_shard=0, shard_samples=[])
    job.skips = SkipLog.from_dict(progress.get("skips"))
    processed, written = progress["next"], progress["written"]
    shard, offset, in_shard = progress["shard"], progress["offset"], progress["in_shard"]
    closed: list[int] = progress["shard_samples"]  # samples in each closed shard: the wids index
    _remove_later_shards(job, shard)
    fh: BinaryIO = open_at(shard_path(job, shard), offset)
    classes = ClassTable(job.out / CLASSES_NAME, progress.get("classes"))
    max_count, max_bytes = job.options.shard_max_count, job.options.shard_max_bytes

    def checkpoint() -> None:
        sync(fh)
        classes.sync()
        progress.update(
            next=processed,
            written=written,
            shard=shard,
            offset=offset,
            in_shard=in_shard,
            shard_samples=closed,
            skips=job.skips.to_dict(),
            classes=classes.to_dict(),
        )
        job.state.save()
        job.report_progress(processed, selection.count)

    try:
        job.advance(processed)
        for sample, result in job.encoded(selection.samples(processed)):
            if isinstance(result, Skip):
                job.skips.add(sample, result)
                classes.see(sample)
            else:
                data = sample_bytes(job, f"{written:09d}", sample, classes.image(sample), result.data)
                if in_shard and (in_shard >= max_count or offset + len(data) > max_bytes):
                    fh.write(closing(offset))
                    sync(fh)
                    fh.close()
                    closed.append(in_shard)
                    shard, offset, in_shard = shard + 1, 0, 0
                    fh = open_at(shard_path(job, shard), 0)
                fh.write(data)
                offset += len(data)
                in_shard += 1
                written += 1
            processed += 1
            job.advance(1)
            if processed % job.options.checkpoint_every == 0:
                checkpoint()
        checkpoint()
        fh.write(closing(offset))
        sync(fh)
        classes.finish()
    finally:
        fh.close()
        classes.close()
    index = write_wids_index(job, [*closed, in_shard])
    return {
        "images": written,
        "classes": classes.written,
        "identities_without_images": classes.empty,
        "shards": shard + 1,
        "wids_index": index,
        "sample_names": SAMPLE_NAMES,
    }


SAMPLE_NAMES = "9-digit export position; the catalog key is the 'key' field of each sample's .json"
WIDS_INDEX = "shardindex.json"


def write_wids_index(job: Job, counts: list[int]) -> str:
    """``shardindex.json``: the shard list ``wids.ShardListDataset`` reads (``wids-shard-index-v1``), with
    each shard's sample count and size and URLs relative to the index, so the folder can move."""
    shards = [
        {"url": shard_path(job, i).name, "nsamples": n, "filesize": shard_path(job, i).stat().st_size}
        for i, n in enumerate(counts)
    ]
    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": job.selection.dataset.name,
        "shardlist": shards,
    }
    write_atomic(job.out / WIDS_INDEX, json_bytes(index))
    return WIDS_INDEX


FORMAT = FormatSpec("webdataset", write, needs_identity=True, needs_image=True, encoding="jpeg")
