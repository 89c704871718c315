"""An export's output folder: its state file (so a re-run after a crash continues where the last checkpoint
left off, and refuses to mix a different selection into the same folder), atomic writes, file names.

The state file (``.synthdb-export.json``, replaced atomically) holds the parameters, a fingerprint of the
selection and the format's committed progress; opening it locks the folder. Files that grow with the
export (RecordIO's records, a shard, ``classes.csv``) are appended to at their committed lengths
(:func:`open_at`), so a re-run cuts off what a killed run wrote after its last checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from synthdb.errors import SynthdbError
from synthdb.store.layout import fsync_dir

STATE_NAME = ".synthdb-export.json"
MANIFEST_NAME = "manifest.json"
SPILL_NAME = ".synthdb-selection"
"""Scratch space of an export inside its folder: the sorted selection (removed when the export ends)."""


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once: readers and re-runs never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, default=str) + "\n").encode()


class ExportState:
    """The state file of an output folder: parameters, selection fingerprint, runs, committed progress.

    Opening it takes an exclusive lock on the folder (released by the kernel even after SIGKILL), so two
    exports never write into one folder at once.
    """

    def __init__(self, out: Path, data: dict[str, Any], lock_fd: int) -> None:
        self.out = out
        self.data = data
        self.created = False
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, out: Path, params: dict[str, Any]) -> ExportState:
        """Claim ``out`` for an export: create it, or resume the same export left in it.

        The selection's fingerprint is checked afterwards (:meth:`check_selection`): the selection is
        computed under this lock, in the folder's scratch space.
        """
        if out.exists() and not out.is_dir():
            raise SynthdbError(f"{out} is a file: pass a folder for the export")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SynthdbError(
                f"another export is writing into {out}: wait for it or pick another folder"
            ) from None
        try:
            state = cls._read(out, params)
        except BaseException:
            os.close(fd)
            raise
        made = cls(out, state, fd)
        made.created = created
        return made

    @staticmethod
    def _read(out: Path, params: dict[str, Any]) -> dict[str, Any]:
        path = out / STATE_NAME
        if not path.exists():
            if any(p.name != SPILL_NAME for p in out.iterdir()):
                raise SynthdbError(
                    f"{out} is not empty and holds no synthdb export: pick an empty or new folder"
                )
            return {"params": params, "fingerprint": None, "runs": [], "progress": {}, "complete": False}
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SynthdbError(f"{path} is unreadable ({exc}): remove the folder and export again") from None
        if state.get("params") != params:
            raise SynthdbError(
                f"{out} holds an export with other parameters ({state.get('params')}): "
                "re-run with those, or pick another folder"
            )
        return state

    def check_selection(self, fingerprint: str) -> None:
        """Refuse to continue an export of another selection; a fresh folder takes this one's."""
        known = self.data.get("fingerprint")
        if known is not None and known != fingerprint:
            raise SynthdbError(
                f"{self.out} holds an export of another selection (the dataset changed since): "
                "remove the folder or pick another one"
            )
        self.data["fingerprint"] = fingerprint

    def discard(self) -> None:
        """Remove the folder this export created when it failed before writing anything of its own."""
        if self.created and not (self.out / STATE_NAME).exists():
            shutil.rmtree(self.out / SPILL_NAME, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.out.rmdir()

    @property
    def progress(self) -> dict[str, Any]:
        return self.data["progress"]

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete"))

    def save(self) -> None:
        write_atomic(self.out / STATE_NAME, json_bytes(self.data))

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def safe_name(text: str) -> str:
    """A file-name-safe form of a label or key: ``/`` becomes ``__``, other odd characters ``_``."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", text.replace("/", "__")).strip(".")
    return name or "_"


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name-1``, ``name-2``... whichever ``used`` does not hold yet, compared without case
    (case-insensitive file systems fold case); the result is added to ``used`` (lower-cased)."""
    candidate, n = name, 0
    while candidate.lower() in used:
        n += 1
        candidate = f"{name}-{n}"
    used.add(candidate.lower())
    return candidate


def unique_names(names: Iterable[str]) -> list[str]:
    """Make names unique in order by suffixing ``-1``, ``-2``... (deterministic, like the input order)."""
    used: set[str] = set()
    return [unique_name(name, used) for name in names]


def open_at(path: Path, offset: int) -> BinaryIO:
    """Open ``path`` for writing at ``offset``, cutting off whatever a killed run wrote past it.

    A fresh export starts at 0; a resumed one at its last checkpoint, so the bytes that follow are
    exactly those an uninterrupted export would write there.
    """
    fh = open(path, "r+b" if path.exists() else "w+b", buffering=1 << 20)  # noqa: SIM115 - caller closes
    size = fh.seek(0, os.SEEK_END)
    if size < offset:
        fh.close()
        raise SynthdbError(
            f"{path} is shorter ({size} bytes) than its checkpoint ({offset}): it was changed outside "
            "synthdb; remove the folder and export again"
        )
    fh.truncate(offset)
    fh.seek(offset)
    return fh


def sync(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())
