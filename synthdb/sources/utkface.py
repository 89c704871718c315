"""UTKFace: age, gender and race from the file names ``{age}_{gender}_{race}_{datetime}.jpg[.chip.jpg]``.

The archives unpack to ``UTKFace/`` (aligned and cropped, ``*.jpg.chip.jpg``), ``crop_part1/`` and
``part1/`` ... ``part3/`` (in the wild, ``*.jpg``); every image under the root is imported, folders
visited in sorted order. gender: 0 male, 1 female; race: 0 White, 1 Black, 2 Asian, 3 Indian,
4 Others. A few upstream names lack the race field (``39_1_20170116174525125.jpg.chip.jpg``): they are
kept without ``race``; names that do not parse at all are kept without attributes rather than lost.

UTKFace has no identity labels. The identity is the photo (the name up to its first ``.jpg``), so an
aligned crop and its in-the-wild original share one; the sample ``label`` is the top-level folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthdb.sources.entries import DirectorySource, Entry, LinkedFolder
from synthdb.sources.listing import folder_link, is_image_name, sorted_listing

GENDERS = {"0": "male", "1": "female"}
RACES = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "others"}
_NAME = re.compile(r"(\d+)_([01])_(?:([0-4])_)?(\d{8,})")


def parse_name(name: str) -> tuple[str, dict[str, Any] | None]:
    """(photo id, attributes) of a UTKFace file name; attributes None when the name does not parse."""
    photo = name.split(".jpg", 1)[0] if ".jpg" in name else os.path.splitext(name)[0]
    match = _NAME.fullmatch(photo)
    if match is None:
        return photo, None
    age, gender, race, _ = match.groups()
    attributes: dict[str, Any] = {"age": int(age), "gender": GENDERS[gender]}
    if race is not None:
        attributes["race"] = RACES[race]
    return photo, attributes


class UTKFace(DirectorySource):
    name = "utkface"

    def scan(self, root: Path) -> Iterator[Entry | LinkedFolder]:
        yield from self._walk(root, "")

    def _walk(self, folder: Path, prefix: str) -> Iterator[Entry | LinkedFolder]:
        for item in sorted_listing(folder):
            rel = prefix + item.name
            if item.is_dir(follow_symlinks=False):
                yield from self._walk(Path(item.path), rel + "/")
            elif link := folder_link(item, rel):
                yield link
            elif is_image_name(item.name) and item.is_file():
                photo, attributes = parse_name(item.name)
                yield Entry(
                    key=rel,
                    path=rel,
                    identity=photo,
                    attributes=attributes,
                    label=rel.split("/", 1)[0] if prefix else None,
                )
