"""Where files live in a store: ``staging/`` for writes in flight, ``shards/`` for committed files.

Catalog rows hold paths relative to the store root, so a store can move (or be mounted elsewhere on
a cluster node) without rewriting the catalog.

**The marker.** ``synthdb.toml`` may point ``store`` anywhere (teams share stores), so a folder is
trusted as a store only when it carries synthdb's marker file ``.synthdb-store``, whose random id the
workspace also records as ``store_id`` in ``synthdb.toml``. ``synthdb fsck`` and ``synthdb gc`` act on
nothing else (:meth:`Store.check_owned`): a ``store = "../victim"`` finds no marker, and a workspace
pointed at another workspace's store finds the other id. Workspaces that share a store (one catalog, many
machines) share the id because ``synthdb init`` adopts the marker it finds; the catalog records its
store's id too (:mod:`synthdb.catalog.stores`), so that ``init`` finds or checks the team's store and
opening a workspace refuses one with a store of its own. Workspaces made before
markers existed get one from ``synthdb store adopt``, never by themselves: marking a store when the
catalog merely lists shards there would let a crafted catalog re-enable the attack. Even inside a
marked store, synthdb only ever deletes or reads files with the names it writes (``SHARD_PATH``,
``INDEX_PATH``, ``STAGED_PATH``), and never through a symlink.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

from synthdb import workspace
from synthdb.catalog.schema import ShardContent
from synthdb.errors import SynthdbError
from synthdb.untrusted import Refused, is_inside, open_regular

STAGING = "staging"
SHARDS = "shards"
INDEXES = "indexes"
MARKER = ".synthdb-store"
MARKER_BYTES = 4096
_HEX = "[0-9a-f]{32}"
SHARD_PATH = re.compile(rf"{SHARDS}/\d+/(?:{'|'.join(ShardContent)})/{_HEX}\.parquet")
INDEX_PATH = re.compile(rf"{INDEXES}/{_HEX}\.faiss")
STAGED_PATH = re.compile(rf"{STAGING}/{_HEX}\.(?:parquet|faiss)")
"""The only store paths synthdb writes (``shard_relpath``, ``new_staged``, the index builder)."""
ADOPT = "run `synthdb store adopt` if it really is this workspace's store"


class Store:
    """The file side of a workspace; ``store_id`` is the marker id the workspace expects."""

    def __init__(self, root: Path, store_id: str | None = None) -> None:
        self.root = Path(root)
        self.store_id = store_id

    @property
    def staging(self) -> Path:
        return self.root / STAGING

    @property
    def shards(self) -> Path:
        return self.root / SHARDS

    def ensure(self) -> None:
        for path in (self.staging, self.shards, self.root / INDEXES):
            path.mkdir(parents=True, exist_ok=True)

    def new_staged(self, suffix: str) -> Path:
        """A fresh, unique path in staging/ (unique across processes and hosts)."""
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging / f"{uuid.uuid4().hex}{suffix}"

    def shard_relpath(self, dataset_id: int, content: str, name: str) -> str:
        return f"{SHARDS}/{dataset_id}/{content}/{name}"

    def abspath(self, relpath: str) -> Path:
        return self.root / relpath

    def relpath(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def check_owned(self) -> None:
        """Refuse, in one line, a store that is not this workspace's: no marker, or another id."""
        found = read_marker(self.root)
        if found is None:
            raise SynthdbError(
                f"{self.root} carries no {MARKER} marker, so synthdb will not check or delete anything in "
                f"it: fix `store` in {workspace.CONFIG_NAME} (or $SYNTHDB_STORE), or {ADOPT}"
            )
        if found != self.store_id:
            expected = f"'{self.store_id}'" if self.store_id else "none"
            raise SynthdbError(
                f"{self.root} is marked as store '{found}' but this workspace's store_id is {expected}: "
                f"fix `store` in {workspace.CONFIG_NAME} (or $SYNTHDB_STORE), or {ADOPT}"
            )

    def owned_path(self, relpath: str, pattern: re.Pattern[str]) -> Path | None:
        """``relpath`` as a path synthdb may read or delete: a name it writes (``pattern``), not a
        symlink, and inside the store once every folder link is resolved; None otherwise."""
        if not pattern.fullmatch(relpath):
            return None
        full = self.root / relpath
        if full.is_symlink() or not is_inside(os.path.realpath(self.root), os.path.realpath(full)):
            return None
        return full


def read_marker(root: Path) -> str | None:
    """The id in ``root``'s marker, or None when there is no marker (or one synthdb did not write)."""
    try:
        with open_regular(root / MARKER, "store marker") as fh:
            data = fh.read(MARKER_BYTES)
    except Refused:  # none, a link (a borrowed marker), a FIFO, a folder: not a marker synthdb wrote
        return None
    try:
        found = json.loads(data).get("store_id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) and re.fullmatch(_HEX, found) else None


def _write_marker(root: Path, store_id: str | None = None) -> str:
    """Mark ``root`` with ``store_id`` (default: a fresh id), unless a concurrent writer marked it first
    (then that id wins)."""
    root.mkdir(parents=True, exist_ok=True)
    store_id = store_id or uuid.uuid4().hex
    tmp = root / f"{MARKER}.{store_id}.tmp"
    tmp.write_text(json.dumps({"store_id": store_id, "written_by": "synthdb"}) + "\n")
    try:
        os.link(tmp, root / MARKER)  # appears whole, and never replaces a marker that is there
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    found = read_marker(root)
    if found is None:
        raise SynthdbError(f"{root / MARKER} exists but is not a synthdb marker: remove it, then retry")
    return found


def claim_store(ws_root: Path) -> str:
    """Mark a new workspace's store and record its id in ``synthdb.toml`` (``synthdb init``).

    A store that carries a marker already is joined (its id recorded): that is how a second workspace
    shares a team's store. The user named the store in ``init``, so any folder is accepted.
    """
    ws = workspace.load(ws_root)
    store_id = read_marker(ws.store) or _write_marker(ws.store)
    workspace.record_setting(ws.root, "store_id", store_id)
    return store_id


def adopt_store(ws: workspace.Workspace, expected: str | None = None) -> str:
    """Mark ``ws.store`` as this workspace's store and record the id (``synthdb store adopt``).

    For workspaces made before stores carried markers. Unlike ``init``, this is what an error message
    tells people to run, so it refuses a folder that holds anything a store does not (a home folder a
    crafted ``synthdb.toml`` points at): only ``shards/``, ``indexes/``, ``staging/`` and the marker.
    ``expected`` is the id the catalog records for its store: an unmarked folder gets that id (its marker
    was lost), a folder marked as another store is refused.
    """
    if not ws.store.is_dir():
        raise SynthdbError(f"{ws.store} is not a folder: fix `store` in {ws.config_path}")
    other = sorted(set(os.listdir(ws.store)) - {SHARDS, INDEXES, STAGING, MARKER})
    if other:
        raise SynthdbError(
            f"{ws.store} holds {', '.join(other[:5])}{' ...' if len(other) > 5 else ''}, which no synthdb "
            f"store holds: not adopting it; fix `store` in {ws.config_path}"
        )
    found = read_marker(ws.store)
    if expected is not None and found not in (None, expected):
        raise SynthdbError(
            f"{ws.store} is marked as store '{found}', but the catalog's shards are in store '{expected}': "
            f"fix `store` in {ws.config_path} (or $SYNTHDB_STORE) to the folder where that store is mounted"
        )
    store_id = found or _write_marker(ws.store, expected)
    workspace.record_setting(ws.root, "store_id", store_id)
    return store_id


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
