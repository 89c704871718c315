"""LFW: people folders, View 1 (pairsDev*/peopleDev*) and the 10 folds of View 2 (pairs.txt/people.txt).

Images are ``<Name>/<Name>_<NNNN>.jpg``, either directly under the root or under one of the folders
the archives unpack to (``lfw/``, ``lfw-deepfunneled/``, ``lfw_funneled/``). The protocol files (from
the LFW site) sit in the root or in that image folder; each one is optional:

* ``pairsDevTrain.txt`` / ``pairsDevTest.txt``: a count N, then N matched lines ``name n1 n2`` and N
  mismatched lines ``name1 n1 name2 n2``;
* ``pairs.txt``: ``10 300``, then per fold 300 matched and 300 mismatched lines;
* ``peopleDevTrain.txt`` / ``peopleDevTest.txt``: a count N, then N lines ``name count``;
* ``people.txt``: ``10``, then per fold a count N and N lines ``name count``.

Protocol ``view1`` has groups ``train`` and ``test``; protocol ``view2`` has groups ``fold_01`` ...
``fold_10``. People files make every image of a listed person a member of the group (the unrestricted
setting); pairs files become verification pairs of the group, in file order (the image-restricted
setting). The identity is the person's name; keys are ``<Name>/<Name>_<NNNN>.jpg`` whichever folder
holds the images, so pairs resolve the same way for every variant. All protocol files are parsed
before anything is written: a malformed line fails the import with its file and line number. Names in
pair and people lines only ever match keys, never open a file; the protocol files and the image
folder must lie inside the root (a symlink out of it is refused, before anything is read).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from synthdb.errors import SynthdbError
from synthdb.sources.entries import DirectorySource, Entry, LinkedFolder, Pair
from synthdb.sources.listing import folder_link, is_image_name, leads_out, read_metadata, sorted_listing

IMAGE_FOLDERS = ("lfw", "lfw-deepfunneled", "lfw_funneled")
VIEW1 = {
    "train": ("pairsDevTrain.txt", "peopleDevTrain.txt"),
    "test": ("pairsDevTest.txt", "peopleDevTest.txt"),
}
VIEW2 = ("pairs.txt", "people.txt")
PROTOCOL_BYTES = 16 << 20
"""The largest protocol file read (LFW's pairs.txt is 150 KB)."""
REFETCH = "download it again from the LFW site"

Membership = tuple[str, str, str | None]


def image_key(name: str, number: int) -> str:
    """The key of a person's n-th image: how pair lines (``name n``) name the files."""
    return f"{name}/{name}_{number:04d}.jpg"


class _Lines:
    """The non-empty lines of a protocol file, split on whitespace, with their line numbers for errors."""

    def __init__(self, root: Path, rel: str) -> None:
        self.path = root / rel
        text = read_metadata(root, rel, REFETCH, PROTOCOL_BYTES)
        self._lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        self._next = 0

    def take(self, fields: tuple[int, ...], what: str) -> list[str]:
        if self._next >= len(self._lines):
            raise SynthdbError(f"{self.path}: ends early, expected {what}; {REFETCH}")
        number, parts = self._lines[self._next]
        self._next += 1
        if len(parts) not in fields:
            raise SynthdbError(f"{self.path}:{number}: expected {what}, got {' '.join(parts)!r}; {REFETCH}")
        return parts

    def count(self, what: str) -> int:
        return self.integer(self.take((1,), what)[0], what)

    def integer(self, text: str, what: str) -> int:
        try:
            return int(text)
        except ValueError:
            number = self._lines[self._next - 1][0]
            raise SynthdbError(f"{self.path}:{number}: expected {what}, got {text!r}; {REFETCH}") from None

    def done(self) -> None:
        if self._next != len(self._lines):
            number = self._lines[self._next][0]
            raise SynthdbError(f"{self.path}:{number}: unexpected extra lines; {REFETCH}")


def _pair(lines: _Lines, genuine: bool) -> tuple[str, str, bool]:
    """The next line as (key, key, genuine): ``name n1 n2`` when matched, ``name1 n1 name2 n2`` when not."""
    if genuine:
        name, a, b = lines.take((3,), "a matched pair 'name n1 n2'")
        return image_key(name, lines.integer(a, "n1")), image_key(name, lines.integer(b, "n2")), True
    name1, a, name2, b = lines.take((4,), "a mismatched pair 'name1 n1 name2 n2'")
    return image_key(name1, lines.integer(a, "n1")), image_key(name2, lines.integer(b, "n2")), False


def _read_pairs(lines: _Lines, sets: int, per_set: int) -> list[list[tuple[str, str, bool]]]:
    """``sets`` blocks of ``per_set`` matched then ``per_set`` mismatched pairs."""
    blocks = [
        [_pair(lines, genuine) for genuine in (True, False) for _ in range(per_set)] for _ in range(sets)
    ]
    lines.done()
    return blocks


def _read_people(lines: _Lines, sets: int) -> list[list[str]]:
    """``sets`` blocks of a count N then N lines ``name count``; the names of each block."""
    blocks = []
    for _ in range(sets):
        count = lines.count("the number of people in the set")
        blocks.append([lines.take((2,), "a line 'name count'")[0] for _ in range(count)])
    lines.done()
    return blocks


class LFW(DirectorySource):
    name = "lfw"

    def __init__(self) -> None:
        self._images = ""
        self._members: dict[str, list[Membership]] = {}
        self._pairs: list[Pair] = []

    def _find(self, root: Path, filename: str) -> _Lines | None:
        """The protocol file ``filename``, in the root or in the image folder, if it is there."""
        for rel in (filename, f"{self._images}/{filename}") if self._images else (filename,):
            if os.path.lexists(root / rel):
                return _Lines(root, rel)
        return None

    def check(self, root: Path) -> None:
        present = [name for name in IMAGE_FOLDERS if (root / name).is_dir()]
        if len(present) > 1:
            raise SynthdbError(
                f"{root}: holds several LFW image folders ({', '.join(present)}); "
                "import each from a root that holds only one, with its own --name"
            )
        self._images = present[0] if present else ""
        if self._images and leads_out(root, root / self._images):
            raise SynthdbError(
                f"{root / self._images} leads outside {root} (a symlink): import the folder it points to, "
                "or move the images into the root"
            )
        for group, (pairs_file, people_file) in VIEW1.items():
            if (lines := self._find(root, pairs_file)) is not None:
                (block,) = _read_pairs(lines, 1, lines.count("the number of pairs per set"))
                self._add_pairs("view1", group, block)
            if (lines := self._find(root, people_file)) is not None:
                (names,) = _read_people(lines, 1)
                self._add_members("view1", group, names)
        if (lines := self._find(root, VIEW2[0])) is not None:
            header = lines.take((2,), "the header 'folds pairs-per-fold'")
            folds, per_fold = (lines.integer(text, "the header 'folds pairs-per-fold'") for text in header)
            for fold, block in enumerate(_read_pairs(lines, folds, per_fold), 1):
                self._add_pairs("view2", f"fold_{fold:02d}", block)
        if (lines := self._find(root, VIEW2[1])) is not None:
            for fold, names in enumerate(_read_people(lines, lines.count("the number of folds")), 1):
                self._add_members("view2", f"fold_{fold:02d}", names)

    def _add_pairs(self, protocol: str, group: str, block: list[tuple[str, str, bool]]) -> None:
        self._pairs.extend(Pair(protocol, group, i, a, b, genuine) for i, (a, b, genuine) in enumerate(block))

    def _add_members(self, protocol: str, group: str, names: list[str]) -> None:
        for name in names:
            self._members.setdefault(name, []).append((protocol, group, None))

    def scan(self, root: Path) -> Iterator[Entry | LinkedFolder]:
        base = root / self._images
        prefix = f"{self._images}/" if self._images else ""
        for person in sorted_listing(base):
            if not person.is_dir(follow_symlinks=False):
                if link := folder_link(person, prefix + person.name):
                    yield link
                continue
            groups = tuple(self._members.get(person.name, ()))
            for item in sorted_listing(person.path):
                if is_image_name(item.name) and item.is_file():
                    key = f"{person.name}/{item.name}"
                    yield Entry(key=key, path=prefix + key, identity=person.name, groups=groups)

    def pairs(self, root: Path) -> Iterator[Pair]:
        return iter(self._pairs)
