"""Rows of a CSV file from a dataset's tree, read as untrusted input: one bounded line at a time.

Used by the importers whose metadata is CSV (IJB-C's protocol files, ``import csv`` manifests). The file
must resolve inside the root (a symlink to ``/etc/passwd`` is refused before it is opened), be a regular
file (a FIFO would block), and every line is at most :data:`LINE_CHARS` long: a file without line ends, a
sparse file say, would otherwise be read into memory whole as its first line. ``fix`` ends every error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from synthdb.errors import SynthdbError
from synthdb.untrusted import open_regular, resolve_inside

LINE_CHARS = 64 << 10
"""The longest CSV line read (real protocol lines are under 100 characters); a longer one is damage."""


def _bounded_lines(fh: TextIO, path: Path, fix: str) -> Iterator[str]:
    while line := fh.readline(LINE_CHARS + 1):
        if len(line) > LINE_CHARS:
            raise SynthdbError(f"{path}: a line is longer than {LINE_CHARS} characters; {fix}")
        yield line


def csv_rows(
    root: Path, path: Path, columns: tuple[str, ...], fix: str, what: str = "CSV file"
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of the CSV ``path`` under ``root`` (resolved) whose header must hold ``columns``;
    a row with more or fewer fields than the header is refused."""
    real = resolve_inside(root, str(path.relative_to(root)))
    try:
        with io.TextIOWrapper(open_regular(real, what), encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(_bounded_lines(fh, path, fix))
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise SynthdbError(f"{path}: header lacks {', '.join(missing)}; {fix}")
            for row in reader:
                if None in row or None in row.values():
                    line = reader.line_num
                    raise SynthdbError(f"{path}:{line}: the row's fields do not match the header; {fix}")
                yield reader.line_num, row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SynthdbError(f"{path}: cannot read it ({exc}); {fix}") from None
