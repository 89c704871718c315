"""The ``store`` row: which store (marker id, first location) holds the shard files this catalog lists.

Shard rows hold paths relative to a store, so every workspace of one catalog must use the same store
(mounted wherever each machine mounts it). ``synthdb init`` records the first workspace's store here and
checks later ones against it; :class:`synthdb.context.Context` refuses a workspace whose store is
another.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import sqlalchemy as sa

from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import Shard, StoreRecord

_store, _shard = StoreRecord.__table__, Shard.__table__
_SLOT = 1


@dataclass(frozen=True)
class RecordedStore:
    """The catalog's store: its marker id, the folder it was recorded at, and on which host."""

    store_id: str
    location: str
    host: str | None

    def describe(self) -> str:
        """``store 'ID' (recorded at PATH on HOST)``, for the one-line errors that name it."""
        where = f" on {self.host}" if self.host else ""
        return f"store '{self.store_id}' (recorded at {self.location}{where})"


def recorded(catalog: Catalog) -> RecordedStore | None:
    """The store this catalog records, or None (a new catalog, or one made before stores were recorded)."""
    with catalog.engine.connect() as conn:
        found = conn.execute(
            sa.select(_store.c.store_id, _store.c.location, _store.c.host).where(_store.c.slot == _SLOT)
        ).first()
    return None if found is None else RecordedStore(*found)


def record(catalog: Catalog, store_id: str, location: str) -> RecordedStore:
    """Record ``store_id`` at ``location`` unless a store is recorded already; return the one recorded
    (when two first workspaces race, the first insert wins and the other sees it)."""
    try:
        with catalog.begin() as conn:
            if conn.execute(sa.select(_store.c.slot).where(_store.c.slot == _SLOT)).first() is None:
                conn.execute(
                    sa.insert(_store).values(
                        slot=_SLOT, store_id=store_id, location=location, host=socket.gethostname()
                    )
                )
    except sa.exc.IntegrityError:  # PostgreSQL: another init inserted the row since our check
        pass
    found = recorded(catalog)
    assert found is not None, "the store row was just written"
    return found


def shard_count(catalog: Catalog) -> int:
    """How many shard rows the catalog has (a catalog with shards but no recorded store predates it)."""
    with catalog.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(_shard)).scalar_one()
