"""File digests shared by the store (shard checksums) and the model loaders (weights checksums)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 16 << 20


def file_digest(path: str | Path, fsync: bool = False) -> tuple[int, str]:
    """Size and hex sha256 of a file, streamed so multi-GB files never fill memory.

    With ``fsync`` the file is also flushed to disk (fsync acts on the inode, through any handle), which
    lets a writer hash its fresh file from the page cache and make it durable in one pass.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if fsync:
            os.fsync(fh.fileno())
    return size, digest.hexdigest()


def sha256_hex(path: str | Path) -> str:
    return file_digest(path)[1]
