"""The importers synthdb knows, by the name used in ``synthdb import NAME``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.sources.csv_manifest import CsvManifest
from synthdb.sources.entries import Source
from synthdb.sources.ffhq import FFHQ
from synthdb.sources.ijbc import IJBC
from synthdb.sources.imagefolder import ImageFolder
from synthdb.sources.importer import ImportReport, import_source
from synthdb.sources.lfw import LFW
from synthdb.sources.multipie import MultiPIE
from synthdb.sources.samples import SampleFile
from synthdb.sources.utkface import UTKFace
from synthdb.sources.webface42m import WebFace42M

SOURCES: dict[str, type] = {
    "csv": CsvManifest,
    "ffhq": FFHQ,
    "ijbc": IJBC,
    "imagefolder": ImageFolder,
    "lfw": LFW,
    "multipie": MultiPIE,
    "samples": SampleFile,
    "utkface": UTKFace,
    "webface42m": WebFace42M,
}


def describe(name: str) -> str:
    """The first line of the source module's docstring (the CLI help of ``synthdb import NAME``)."""
    doc = sys.modules[SOURCES[name].__module__].__doc__ or name
    return doc.strip().splitlines()[0]


def path_kind(name: str) -> str:
    """What ``synthdb import NAME PATH`` expects: ``directory`` (a database root) or ``file``."""
    return SOURCES[name].path_kind


def make_source(name: str) -> Source | SampleFile:
    if name not in SOURCES:
        raise SynthdbError(f"unknown source '{name}': known are {', '.join(sorted(SOURCES))}")
    return SOURCES[name]()


def import_named(ctx: Context, source: str, root: str | os.PathLike, **options: object) -> ImportReport:
    """Import ``root`` with the source called ``source`` (the Python twin of ``synthdb import SOURCE``).

    Directory sources only scan and go through ``import_source``, and so does a ``csv`` manifest (its
    folder is the root); ``samples`` (whose vectors go into shards) runs its own import with the same
    options and report.
    """
    if source == "csv":  # a manifest file: its folder is the dataset's root
        manifest = Path(root)
        options["name"] = options.get("name") or manifest.stem
        return import_source(ctx, CsvManifest(manifest.name), manifest.parent, **options)
    importer = make_source(source)
    if isinstance(importer, SampleFile):
        return importer.import_file(ctx, root, **options)
    return import_source(ctx, importer, root, **options)
