"""FFHQ: ffhq-dataset-v2.json with images1024x1024/, other resolutions and in-the-wild-images/.

The JSON (NVlabs/ffhq-dataset) is a dict keyed by the image index ``"0"`` ... ``"69999"``; each entry
has ``category`` (training | validation), ``metadata`` (Flickr photo, author, licence, country, dates),
``image`` (``file_path`` such as ``images1024x1024/00000/00123.png``, ``file_md5``, ``pixel_size``,
68 ``face_landmarks``), ``thumbnail`` (128x128) and ``in_the_wild`` (the uncropped photo, with
``face_rect``, ``face_quad`` and its own landmarks).

Every image folder present under the root is imported: the three the JSON names, and any
``images<N>x<N>/`` made by resizing (``images256x256/``), whose landmarks are scaled to that size.
Folders the JSON names but that are absent are skipped, so a root with only images1024x1024/ does not
report 140,000 missing files. Each folder may use the upstream layout (5-digit subfolders ``00000/``,
one per 1,000 images) or the 2-digit variant (``00/``) of the reference index; the layout is read
from the folder itself.

Each image is its own identity (label ``00123``, the image index); a sample per (image, folder), with
the folder name as the sample's ``label``. Keys follow the reference index (``images1024x1024_00_00123``)
whatever the folder layout, so the same image keeps its key across layouts. Protocol ``ffhq`` has the
groups ``training`` (purpose train) and ``validation``.

The JSON (267 MB) is decoded one entry at a time from its text: ``json.load`` of the whole file
would hold 2.4 GB of Python objects, the text alone holds 267 MB. Entries are imported in file order.
The JSON and the image folders must lie inside the root (a symlink out of it is refused before
anything is read), and the JSON may not exceed ``METADATA_BYTES``; paths the JSON gives are checked
file by file like any importer's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthdb.errors import SynthdbError
from synthdb.sources.entries import DirectorySource, Entry
from synthdb.sources.listing import leads_out, read_metadata, sorted_listing, subfolders

METADATA_FILE = "ffhq-dataset-v2.json"
REFETCH = f"put {METADATA_FILE} (from NVlabs/ffhq-dataset) in the FFHQ root"
ALIGNED_SIZE = 1024
_RESIZED = re.compile(r"images(\d+)x(\d+)")
_FIVE_DIGITS = re.compile(r"\d{5}")
_TWO_DIGITS = re.compile(r"\d{2}")
_SPACE = re.compile(r"\s*")


@dataclass(frozen=True)
class _Folder:
    """One image folder present under the root: where its entries' paths come from, and its layout."""

    name: str
    field: str  # the JSON entry part that describes it: image, thumbnail or in_the_wild
    two_digit: bool
    size: int | None = None  # a resized aligned folder: its side, and the suffix its files use
    suffix: str | None = None


def _layout_is_two_digit(folder: Path) -> bool:
    names = [item.name for item in subfolders(folder)]
    if any(_FIVE_DIGITS.fullmatch(n) for n in names):
        return False
    if any(_TWO_DIGITS.fullmatch(n) for n in names):
        return True
    raise SynthdbError(
        f"{folder}: has neither 5-digit (00000/) nor 2-digit (00/) subfolders; "
        "keep the FFHQ images in one of these two layouts"
    )


def _first_suffix(folder: Path) -> str:
    """The file suffix of a resized folder (resizing scripts often write .jpg instead of .png)."""
    for sub in subfolders(folder):
        for item in sorted_listing(sub.path):
            if item.is_file():
                return os.path.splitext(item.name)[1]
    raise SynthdbError(f"{folder}: holds no image files; remove the empty folder or fill it")


def _top_folder(entry: dict[str, Any], field: str) -> str | None:
    part = entry.get(field)
    path = part.get("file_path") if isinstance(part, dict) else None
    return path.split("/", 1)[0] if isinstance(path, str) and "/" in path else None


def _scaled(points: Any, factor: float) -> list[list[float]] | None:
    """Landmarks in the pixels of a resized image; None when the JSON holds no usable points."""
    try:
        return [[round(x * factor, 4), round(y * factor, 4)] for x, y in points]
    except (TypeError, ValueError):
        return None


def _entries(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    """(key, value) of each member of the top-level JSON object in ``text``, decoded one at a time."""
    decoder = json.JSONDecoder()
    pos = _SPACE.match(text).end()
    try:
        if text[pos] != "{":
            raise ValueError("expected '{'")
        pos = _SPACE.match(text, pos + 1).end()
        while text[pos] != "}":
            key, pos = decoder.raw_decode(text, pos)
            pos = _SPACE.match(text, pos).end()
            if text[pos] != ":" or not isinstance(key, str):
                raise ValueError("expected a string key and ':'")
            value, pos = decoder.raw_decode(text, _SPACE.match(text, pos + 1).end())
            yield key, value
            pos = _SPACE.match(text, pos).end()
            if text[pos] == ",":
                pos = _SPACE.match(text, pos + 1).end()
            elif text[pos] != "}":
                raise ValueError("expected ',' or '}'")
    except (ValueError, IndexError, RecursionError) as exc:  # RecursionError: nesting deeper than the stack
        where = "the end of the file" if pos >= len(text) else f"character {pos}"
        raise SynthdbError(f"{path} is not readable JSON ({exc} near {where}); download it again") from None


class FFHQ(DirectorySource):
    name = "ffhq"

    def __init__(self) -> None:
        self._text = ""
        self._folders: list[_Folder] = []

    def check(self, root: Path) -> None:
        """Read the JSON, decode its first entry and find the image folders: a missing or foreign file,
        or a folder linked out of the root, fails before any write."""
        path = root / METADATA_FILE
        if not path.exists():
            raise SynthdbError(f"{path} is missing: {REFETCH}")
        self._text = read_metadata(root, METADATA_FILE, f"download it again and {REFETCH}")
        first = next(_entries(self._text, path), None)
        if first is None or not isinstance(first[1], dict):
            raise SynthdbError(
                f"{path}: expected an object of entries keyed by image index; download it again"
            )
        self._folders = self._find_folders(root, first[1])

    @staticmethod
    def _find_folders(root: Path, first: dict[str, Any]) -> list[_Folder]:
        folders: list[_Folder] = []
        named = {}
        for field in ("image", "thumbnail", "in_the_wild"):
            top = _top_folder(first, field)
            if top is not None and top not in ("", ".", ".."):
                named[top] = field
                if (root / top).is_dir():
                    if leads_out(root, root / top):
                        raise SynthdbError(
                            f"{root / top} leads outside {root} (a symlink): move the images into the "
                            "FFHQ root, or link the whole root instead"
                        )
                    folders.append(_Folder(top, field, _layout_is_two_digit(root / top)))
        for item in subfolders(root):
            size = _RESIZED.fullmatch(item.name)
            if item.name in named or size is None or size.group(1) != size.group(2):
                continue
            folder = Path(item.path)
            folders.append(
                _Folder(
                    item.name,
                    "image",
                    _layout_is_two_digit(folder),
                    int(size.group(1)),
                    _first_suffix(folder),
                )
            )
        if not folders:
            raise SynthdbError(
                f"{root}: none of the image folders {', '.join(sorted(named))} (or images<N>x<N>/) is "
                "present; pass the FFHQ root that holds them next to the JSON"
            )
        return folders

    def scan(self, root: Path) -> Iterator[Entry]:
        folders = self._folders
        path = root / METADATA_FILE
        for key, entry in _entries(self._text, path):
            if not key.isdigit() or not isinstance(entry, dict) or not isinstance(entry.get("image"), dict):
                raise SynthdbError(
                    f"{path}: entry {key!r} is not an image index with an 'image' object; download it again"
                )
            index = int(key)
            category = entry.get("category")
            if not isinstance(category, str):
                raise SynthdbError(f"{path}: entry {key!r} has no 'category'; download it again")
            groups = (("ffhq", category, "train" if category == "training" else None),)
            for folder in folders:
                part = entry.get(folder.field)
                if not isinstance(part, dict) or not isinstance(part.get("file_path"), str):
                    continue
                yield Entry(
                    key=f"{folder.name}_{index // 1000:02d}_{index:05d}",
                    path=self._path(part["file_path"], folder),
                    identity=f"{index:05d}",
                    attributes=self._attributes(index, category, entry, part, folder),
                    label=folder.name,
                    groups=groups,
                )

    @staticmethod
    def _path(json_path: str, folder: _Folder) -> str:
        """The file's path under the root; paths not shaped like FFHQ's are passed on unchanged,
        so that the import refuses those escaping the root and reports the others as missing."""
        parts = json_path.split("/")
        if len(parts) != 3 or not _FIVE_DIGITS.fullmatch(parts[1]):
            return json_path
        top, sub, name = parts
        if folder.size is not None:
            top, name = folder.name, os.path.splitext(name)[0] + (folder.suffix or "")
        return f"{top}/{sub[:2] if folder.two_digit else sub}/{name}"

    @staticmethod
    def _attributes(
        index: int, category: str, entry: dict[str, Any], part: dict[str, Any], folder: _Folder
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {"index": index, "category": category, "metadata": entry.get("metadata")}
        if folder.size is not None:
            factor = folder.size / ALIGNED_SIZE
            attributes["pixel_size"] = [folder.size, folder.size]
            attributes["face_landmarks"] = _scaled(part.get("face_landmarks"), factor)
            return attributes
        attributes["pixel_size"] = part.get("pixel_size")
        attributes["file_md5"] = part.get("file_md5")
        if folder.field == "thumbnail":  # the JSON gives thumbnails no landmarks: scale the aligned ones
            size = part.get("pixel_size")
            factor = size[0] / ALIGNED_SIZE if isinstance(size, list) and size else 128 / ALIGNED_SIZE
            attributes["face_landmarks"] = _scaled(entry["image"].get("face_landmarks"), factor)
        else:
            attributes["face_landmarks"] = part.get("face_landmarks")
        if folder.field == "in_the_wild":
            attributes["face_rect"] = part.get("face_rect")
            attributes["face_quad"] = part.get("face_quad")
        return attributes
