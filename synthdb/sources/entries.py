"""What a genuine-database source yields when it scans a root, and the protocol every source follows.

A source only reads: it turns a database's layout into ``Entry`` objects (and ``Pair`` objects for the
comparisons its protocols prescribe); :mod:`synthdb.sources.importer` writes them into the catalog the same
way for every source.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Entry:
    """One sample a source found. ``groups`` holds (protocol, group, purpose) memberships."""

    key: str
    path: str | None
    identity: str | None
    attributes: dict[str, Any] | None = None
    label: str | None = None
    groups: tuple[tuple[str, str, str | None], ...] = ()


@dataclass(frozen=True)
class LinkedFolder:
    """A folder symlink a scan met and did not enter (links could loop or lead out of the root).

    ``import_source`` names it: ``escapes_root`` when it leads out of the root, else ``linked_folder``.
    """

    path: str


@dataclass(frozen=True)
class Pair:
    """A comparison a protocol file prescribes, at ``position`` (its line order) in its group.

    The sides are sample keys, or template ids when ``templates`` is true (IJB-C compares templates,
    sets of samples that carry the template id as their label).
    """

    protocol: str
    group: str
    position: int
    first: str
    second: str
    genuine: bool | None
    templates: bool = False


class Source(Protocol):
    """A genuine-database layout: its name (the dataset's ``source``) and how to read a root.

    ``check`` runs before anything is written, so a root that is not this layout fails without
    leaving an empty dataset behind; ``scan`` yields the samples; ``pairs`` the prescribed
    comparisons, read once every sample is in the catalog.
    """

    name: str
    path_kind: str

    def check(self, root: Path) -> None: ...

    def scan(self, root: Path) -> Iterator[Entry | LinkedFolder]: ...

    def pairs(self, root: Path) -> Iterator[Pair]: ...


class DirectorySource:
    """Defaults for sources rooted at a directory: nothing to check up front, no pairs."""

    path_kind = "directory"

    def check(self, root: Path) -> None:
        """Refuse a root that is not this layout before the import writes anything (default: accept)."""

    def pairs(self, root: Path) -> Iterator[Pair]:
        return iter(())
