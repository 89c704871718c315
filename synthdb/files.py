"""File digests shared by the store (shard checksums) and the model loaders (weights checksums), and the
atomic write every writer of a user-visible file uses."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

CHUNK = 16 << 20


def file_digest(path: str | Path, fsync: bool = False) -> tuple[int, str]:
    """Size and hex sha256 of a file, streamed so multi-GB files never fill memory.

    With ``fsync`` the file is also flushed to disk (fsync acts on the inode, through any handle), which
    lets a writer hash its fresh file from the page cache and make it durable in one pass; the flush runs
    in a thread while the hash reads (a third less time for a 400 MB shard than one after the other).
    """
    with open(path, "rb") as fh:
        if not fsync:
            return _digest(fh)
        with ThreadPoolExecutor(max_workers=1) as pool:
            flushing = pool.submit(os.fsync, fh.fileno())
            digest = _digest(fh)
        flushing.result()
    return digest


def _digest(fh: BinaryIO) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def sha256_hex(path: str | Path) -> str:
    return file_digest(path)[1]


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through ``write(tmp)`` under a temporary name beside it, then rename it into place, so
    a crash or an error never leaves a half-written ``path``; the temporary file is removed on failure.

    The temporary name keeps ``path``'s extension (PIL picks the format by it, ``np.save`` appends ``.npy``
    without it). Errors (``OSError`` ...) reach the caller, which names the file and the fix its own way.
    """
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
