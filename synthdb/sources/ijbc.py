"""IJB-C: the test1 (1:1 verification) templates and template pairs from the protocol CSVs.

Layout (the root is the ``IJB-C`` folder, or a folder above it holding ``IJB-C/`` or
``IJB/IJB-C/``)::

    protocols/test1/enroll_templates.csv  TEMPLATE_ID,SUBJECT_ID,FILENAME,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT
    protocols/test1/verif_templates.csv   the same columns
    protocols/test1/match.csv             ENROLL_TEMPLATE_ID,VERIF_TEMPLATE_ID (optional)
    images/img/<n>.jpg, images/frames/<n>.png   FILENAME is relative to images/

Each CSV row is one sample: a face box in a still or a video frame, within one template. A file can
hold several faces and appear in several templates, so the key names the file, the template and the
box: ``img_123_40_10_20_100_120``. Unlike the reference index, the key keeps the ``img``/``frames``
folder (their numbers overlap) and ``face_h`` is stored. The identity is SUBJECT_ID; the sample's
``label`` is its TEMPLATE_ID, which is what the pairs name.

Protocol ``test1`` has one group ``eval``: enroll_templates.csv rows have purpose enroll,
verif_templates.csv rows purpose probe, and match.csv lines become the group's template pairs in file
order, genuine when both templates belong to the same subject.

The CSVs must lie inside the root (a symlink out of it is refused before it is read) and are read a
line at a time, each at most ``LINE_CHARS`` long; a FILENAME that leads out of ``images/`` and the root
is counted and named like any root-escaping path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from synthdb.errors import SynthdbError
from synthdb.sources.csv_rows import csv_rows
from synthdb.sources.entries import DirectorySource, Entry, Pair

PROTOCOL_DIR = "protocols/test1"
TEMPLATE_FILES = (("enroll_templates.csv", "enroll"), ("verif_templates.csv", "probe"))
MATCH_FILE = "match.csv"
TEMPLATE_COLUMNS = ("TEMPLATE_ID", "SUBJECT_ID", "FILENAME", "FACE_X", "FACE_Y", "FACE_WIDTH", "FACE_HEIGHT")
MATCH_COLUMNS = ("ENROLL_TEMPLATE_ID", "VERIF_TEMPLATE_ID")
PREFIXES = ("", "IJB-C/", "IJB/IJB-C/")
RESTORE = "restore the file from the IJB-C release"


def _number(text: str, path: Path, line: int, column: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise SynthdbError(
            f"{path}:{line}: {column} is {text!r}, not a number; restore the file from the IJB-C release"
        ) from None
    return int(value) if value.is_integer() else value


def _rows(root: Path, path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    return csv_rows(root, path, columns, RESTORE, "protocol file")


class IJBC(DirectorySource):
    name = "ijbc"

    def __init__(self) -> None:
        self._prefix = ""

    def check(self, root: Path) -> None:
        for prefix in PREFIXES:
            if (root / prefix / PROTOCOL_DIR / TEMPLATE_FILES[0][0]).is_file():
                self._prefix = prefix
                break
        else:
            raise SynthdbError(
                f"{root / PROTOCOL_DIR / TEMPLATE_FILES[0][0]} is missing: pass the IJB-C folder "
                "(the one holding protocols/ and images/)"
            )
        for filename, _ in TEMPLATE_FILES:
            path = self._protocol_file(root, filename)
            if not path.is_file():
                raise SynthdbError(f"{path} is missing: restore it from the IJB-C release")
            next(_rows(root, path, TEMPLATE_COLUMNS), None)  # the header is checked before any write
        if (match := self._protocol_file(root, MATCH_FILE)).is_file():
            next(_rows(root, match, MATCH_COLUMNS), None)

    def _protocol_file(self, root: Path, filename: str) -> Path:
        return root / self._prefix / PROTOCOL_DIR / filename

    def scan(self, root: Path) -> Iterator[Entry]:
        for filename, purpose in TEMPLATE_FILES:
            path = self._protocol_file(root, filename)
            for line, row in _rows(root, path, TEMPLATE_COLUMNS):
                template = str(_number(row["TEMPLATE_ID"], path, line, "TEMPLATE_ID"))
                subject = str(_number(row["SUBJECT_ID"], path, line, "SUBJECT_ID"))
                box = [
                    _number(row[column], path, line, column)
                    for column in ("FACE_X", "FACE_Y", "FACE_WIDTH", "FACE_HEIGHT")
                ]
                media = row["FILENAME"]
                stem = media.rsplit(".", 1)[0].replace("/", "_")
                yield Entry(
                    key=f"{stem}_{template}_{'_'.join(str(v) for v in box)}",
                    path=f"{self._prefix}images/{media}",
                    identity=subject,
                    attributes={
                        "template_id": int(template),
                        "media": media.split("/", 1)[0] if "/" in media else None,
                        "face_x": box[0],
                        "face_y": box[1],
                        "face_w": box[2],
                        "face_h": box[3],
                    },
                    label=template,
                    groups=(("test1", "eval", purpose),),
                )

    def pairs(self, root: Path) -> Iterator[Pair]:
        match = self._protocol_file(root, MATCH_FILE)
        if not match.is_file():
            return
        subjects: dict[str, str] = {}
        for filename, _ in TEMPLATE_FILES:
            path = self._protocol_file(root, filename)
            for line, row in _rows(root, path, TEMPLATE_COLUMNS):
                template = str(_number(row["TEMPLATE_ID"], path, line, "TEMPLATE_ID"))
                subjects[template] = str(_number(row["SUBJECT_ID"], path, line, "SUBJECT_ID"))
        for position, (line, row) in enumerate(_rows(root, match, MATCH_COLUMNS)):
            first = str(_number(row["ENROLL_TEMPLATE_ID"], match, line, "ENROLL_TEMPLATE_ID"))
            second = str(_number(row["VERIF_TEMPLATE_ID"], match, line, "VERIF_TEMPLATE_ID"))
            known = first in subjects and second in subjects
            yield Pair(
                "test1",
                "eval",
                position,
                first,
                second,
                subjects[first] == subjects[second] if known else None,
                True,
            )
