"""The importers synthdb knows, by the name used in ``synthdb import NAME``."""

from __future__ import annotations

import os
import sys

from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.sources.common import ImportReport, Source, import_source
from synthdb.sources.imagefolder import ImageFolder

SOURCES: dict[str, type] = {"imagefolder": ImageFolder}


def describe(name: str) -> str:
    """The first line of the source module's docstring (the CLI help of ``synthdb import NAME``)."""
    doc = sys.modules[SOURCES[name].__module__].__doc__ or name
    return doc.strip().splitlines()[0]


def make_source(name: str) -> Source:
    if name not in SOURCES:
        raise SynthdbError(f"unknown source '{name}': known are {', '.join(sorted(SOURCES))}")
    return SOURCES[name]()


def import_named(ctx: Context, source: str, root: str | os.PathLike, **options: object) -> ImportReport:
    """Import ``root`` with the source called ``source`` (the Python twin of ``synthdb import SOURCE``)."""
    return import_source(ctx, make_source(source), root, **options)
