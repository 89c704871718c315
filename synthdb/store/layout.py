"""Where files live in a store: ``staging/`` for writes in flight, ``shards/`` for committed files.

Catalog rows hold paths relative to the store root, so a store can move (or be mounted elsewhere on
a cluster node) without rewriting the catalog.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

STAGING = "staging"
SHARDS = "shards"
INDEXES = "indexes"


class Store:
    """The file side of a workspace."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def staging(self) -> Path:
        return self.root / STAGING

    @property
    def shards(self) -> Path:
        return self.root / SHARDS

    def ensure(self) -> None:
        for path in (self.staging, self.shards, self.root / INDEXES):
            path.mkdir(parents=True, exist_ok=True)

    def new_staged(self, suffix: str) -> Path:
        """A fresh, unique path in staging/ (unique across processes and hosts)."""
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging / f"{uuid.uuid4().hex}{suffix}"

    def shard_relpath(self, dataset_id: int, content: str, name: str) -> str:
        return f"{SHARDS}/{dataset_id}/{content}/{name}"

    def abspath(self, relpath: str) -> Path:
        return self.root / relpath

    def relpath(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
