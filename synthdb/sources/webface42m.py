"""WebFace42M: ten folder shards 0/ ... 9/ of identity folders <shard>_<zip>_<7-digit id>/.

Layout: ``<shard>/<identity>/<shard>_<n>.jpg``, for example ``0/0_0_0000000/0_0.jpg``. Unzipping a
shard's archives with ``-d <shard>`` puts a ``WebFace260M/`` folder in between
(``0/WebFace260M/0_0_0000000/0_0.jpg``); both are read. Shard 0 alone is WebFace4M, shards 0-2
WebFace12M, all ten WebFace42M, so each shard is a group of protocol ``webface42m`` (purpose train).

The identity is the whole folder name: the reference's ``int(name[4:])`` drops the shard and zip
prefix and breaks on other names. Keys are the relative paths, without the reference's duplicated
prefix. With 42 million files the scan holds one directory listing at a time. Folder symlinks are named
and never entered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from synthdb.errors import SynthdbError
from synthdb.sources.entries import DirectorySource, Entry, LinkedFolder
from synthdb.sources.listing import folders, is_image_name, sorted_listing, subfolders

PROTOCOL = "webface42m"
UNZIPPED = "WebFace260M"


def _shards(root: Path) -> list[str]:
    return [item.name for item in subfolders(root) if item.name.isdigit()]


class WebFace42M(DirectorySource):
    name = "webface42m"

    def check(self, root: Path) -> None:
        if not _shards(root):
            raise SynthdbError(
                f"{root}: no shard folders 0/ ... 9/; pass the WebFace42M folder that holds them"
            )

    def scan(self, root: Path) -> Iterator[Entry | LinkedFolder]:
        for shard in _shards(root):
            groups = ((PROTOCOL, shard, "train"),)
            for identity in self._identities(root, f"{shard}/"):
                if isinstance(identity, LinkedFolder):
                    yield identity
                    continue
                prefix = f"{identity}/"
                for item in sorted_listing(root / identity):
                    if is_image_name(item.name) and item.is_file():
                        rel = f"{prefix}{item.name}"
                        yield Entry(key=rel, path=rel, identity=Path(identity).name, groups=groups)

    @staticmethod
    def _identities(root: Path, rel: str) -> Iterator[str | LinkedFolder]:
        """The identity folders of a shard (their paths under the root), looking inside WebFace260M/ too,
        and the folder links met on the way."""
        for item in folders(root / rel, rel):
            if isinstance(item, LinkedFolder):
                yield item
            elif item.name == UNZIPPED:
                yield from WebFace42M._identities(root, f"{rel}{UNZIPPED}/")
            else:
                yield f"{rel}{item.name}"
