"""ImageFolder layout: one folder per identity (CASIA-WebFace, VGGFace2, DigiFace-1M style).

``root/<identity>/<image>``; the folder name is the identity label and the key is the relative path.
Folders and files are visited in sorted order, one directory listing at a time (never the whole
tree in memory), and symlinked folders are not followed (they are named), so a link loop cannot trap
the scan and a link out of the root cannot pull other files in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from synthdb.errors import SynthdbError
from synthdb.sources.entries import DirectorySource, Entry, LinkedFolder
from synthdb.sources.listing import folder_link, is_image_name, sorted_listing


class ImageFolder(DirectorySource):
    name = "imagefolder"

    def check(self, root: Path) -> None:
        """A flat folder of images is not an ImageFolder: refused before anything is written (it would
        import nothing and look like success)."""
        with os.scandir(root) as entries:
            if any(entry.is_dir(follow_symlinks=False) for entry in entries):
                return
        raise SynthdbError(
            f"{root} holds no identity folders (an ImageFolder is ROOT/<identity>/<image>): put each "
            "person's images in a folder of their own, or list path and identity in a CSV manifest and "
            "run `synthdb import csv MANIFEST`"
        )

    def scan(self, root: Path) -> Iterator[Entry | LinkedFolder]:
        for identity in sorted_listing(root):
            if not identity.is_dir(follow_symlinks=False):
                if link := folder_link(identity, identity.name):
                    yield link
                continue
            for item in sorted_listing(identity.path):
                if is_image_name(item.name) and _maybe_file(item):
                    rel = f"{identity.name}/{item.name}"
                    yield Entry(key=rel, path=rel, identity=identity.name)


def _maybe_file(item: os.DirEntry[str]) -> bool:
    """Whether to hand ``item`` on as a file; one that cannot even be stat-ed (a symlink loop, no
    permission) is handed on too, so ``check_file`` names it as a problem instead of the scan failing."""
    try:
        return item.is_file()
    except OSError:
        return True
