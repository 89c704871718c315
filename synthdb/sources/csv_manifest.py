"""A CSV manifest: one row per image, for photo collections in no standard layout (``synthdb import csv``).

The manifest names each image's ``path`` (relative to the manifest's folder, which is the dataset's
root; ``file`` is accepted as the column's name too) and its ``identity`` (empty: an image of nobody in
particular, e.g. a group photo). An optional ``key`` column gives the sample's key (default: the path);
every other column becomes an attribute of the sample (``age``, ``pose``, ``licence``...). Rows are read one
bounded line at a time (:mod:`synthdb.sources.csv_rows`), so a manifest of millions of rows streams, and
paths that lead out of the root are counted and named like any escaping file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from synthdb.errors import SynthdbError
from synthdb.sources.csv_rows import csv_rows
from synthdb.sources.entries import DirectorySource, Entry

PATH_COLUMNS = ("path", "file")
RESERVED = {*PATH_COLUMNS, "identity", "key"}
FIX = "write it as CSV with a header naming path (or file) and identity, one row per image"


class CsvManifest(DirectorySource):
    """The manifest file ``manifest`` (a name inside the root it is scanned with)."""

    name = "csv"
    path_kind = "file"

    def __init__(self, manifest: str) -> None:
        self.manifest = manifest
        self._path_column = ""

    def check(self, root: Path) -> None:
        """The header (and the first row) are read before anything is written: a manifest without the
        columns fails cleanly."""
        path = root / self.manifest
        for column in PATH_COLUMNS:
            try:
                next(csv_rows(root, path, (column, "identity"), FIX, "manifest"), None)
            except SynthdbError as error:
                if "header lacks" not in str(error):
                    raise
                continue
            self._path_column = column
            return
        raise SynthdbError(f"{path}: the header names no path (or file) and identity column; {FIX}")

    def scan(self, root: Path) -> Iterator[Entry]:
        path = root / self.manifest
        for _, row in csv_rows(root, path, (self._path_column, "identity"), FIX, "manifest"):
            rel = row[self._path_column].strip()
            attributes = {k: v for k, v in row.items() if k not in RESERVED and v != ""}
            yield Entry(
                key=row.get("key") or rel,
                path=rel,
                identity=row["identity"].strip() or None,
                attributes=attributes or None,
            )
