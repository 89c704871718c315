"""An export's output folder: its state file (so a re-run after a crash continues where the last checkpoint
left off, and refuses to mix a different selection into the same folder), atomic writes, file names.

The state file (``.synthdb-export.json``, replaced atomically) holds the parameters, a fingerprint of the
selection and the format's committed progress; opening it locks the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from synthdb.errors import SynthdbError
from synthdb.store.layout import fsync_dir

STATE_NAME = ".synthdb-export.json"
MANIFEST_NAME = "manifest.json"


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
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, out: Path, params: dict[str, Any], fingerprint: str) -> ExportState:
        """Claim ``out`` for an export: create it, or resume the same export left in it."""
        if out.exists() and not out.is_dir():
            raise SynthdbError(f"{out} is a file: pass a folder for the export")
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
            state = cls._read(out, params, fingerprint)
        except BaseException:
            os.close(fd)
            raise
        return cls(out, state, fd)

    @staticmethod
    def _read(out: Path, params: dict[str, Any], fingerprint: str) -> dict[str, Any]:
        path = out / STATE_NAME
        if not path.exists():
            if any(out.iterdir()):
                raise SynthdbError(
                    f"{out} is not empty and holds no synthdb export: pick an empty or new folder"
                )
            return {
                "params": params,
                "fingerprint": fingerprint,
                "runs": [],
                "progress": {},
                "complete": False,
            }
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SynthdbError(f"{path} is unreadable ({exc}): remove the folder and export again") from None
        if state.get("params") != params:
            raise SynthdbError(
                f"{out} holds an export with other parameters ({state.get('params')}): "
                "re-run with those, or pick another folder"
            )
        if state.get("fingerprint") != fingerprint:
            raise SynthdbError(
                f"{out} holds an export of another selection (the dataset changed since): "
                "remove the folder or pick another one"
            )
        return state

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


def unique_names(names: Iterable[str]) -> list[str]:
    """Make names unique in order by suffixing ``-1``, ``-2``... (deterministic, like the input order)."""
    used: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 0
        while candidate.lower() in used:  # case-insensitive file systems fold case
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate.lower())
        out.append(candidate)
    return out


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
