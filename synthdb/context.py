"""An opened workspace: its settings, its catalog (schema checked) and its store.

Every API function that touches data takes a ``Context``; the CLI builds one per command. Opening never
creates a catalog: a SQLite catalog file that is not there is an error (SQLite would make an empty
one wherever ``catalog_url`` points), and so is one that is not a database or is damaged
(:mod:`synthdb.catalog.engine` words those).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from synthdb import workspace
from synthdb.catalog import Catalog, migrate, stores
from synthdb.errors import SynthdbError
from synthdb.store.layout import MARKER, Store, read_marker


@dataclass
class Context:
    ws: workspace.Workspace
    catalog: Catalog
    store: Store

    @classmethod
    def open(cls, where: str | os.PathLike | None = None, check_schema: bool = True) -> Context:
        """Find the workspace (see ``workspace.find``) and connect to its catalog.

        ``check_schema`` refuses catalogs at another schema revision, naming the command that fixes it.
        """
        ws = workspace.find(where)
        return cls.from_workspace(ws, check_schema)

    @classmethod
    def from_workspace(cls, ws: workspace.Workspace, check_schema: bool = True) -> Context:
        catalog = Catalog(ws.catalog_url)
        try:
            _check_sqlite_file(catalog, ws)
            if check_schema:
                migrate.check_current(catalog.engine)
                check_store(catalog, ws)
        except BaseException:
            catalog.dispose()
            raise
        return cls(ws=ws, catalog=catalog, store=Store(ws.store, ws.store_id))

    def close(self) -> None:
        self.catalog.dispose()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_sqlite_file(catalog: Catalog, ws: workspace.Workspace) -> None:
    """Refuse a SQLite catalog path that holds no database file, before SQLite creates or writes one."""
    database = catalog.engine.url.database
    if catalog.dialect != "sqlite" or database in (None, "", ":memory:") or catalog.engine.url.query:
        return
    path = Path(database)
    if path.is_dir():
        raise SynthdbError(
            f"the catalog {path} is a folder, not a database file: fix catalog_url in {ws.config_path}"
        )
    if not path.exists():
        raise SynthdbError(
            f"the catalog {path} does not exist: fix catalog_url in {ws.config_path}, or create a "
            "workspace with `synthdb init`"
        )
    if path.stat().st_size == 0:  # SQLite would write a header into it, even for a read
        raise SynthdbError(
            f"the catalog {path} is an empty file: run `synthdb db upgrade` to give it the schema, or fix "
            f"catalog_url in {ws.config_path}"
        )


def check_store(catalog: Catalog, ws: workspace.Workspace) -> None:
    """Refuse a workspace whose store is neither recorded (``store_id``) nor marked as the catalog's store.

    Either proof is enough here: a marker that disagrees with ``store_id`` is for ``fsck``/``gc`` to refuse
    (:meth:`Store.check_owned`), which says how to fix it. What this catches is the workspace made with a
    store of its own for a catalog whose shards are elsewhere.
    """
    recorded = stores.recorded(catalog)
    if recorded is None or ws.store_id == recorded.store_id:
        return
    found = read_marker(ws.store)
    if found == recorded.store_id:
        return
    what = f"carries no {MARKER} marker" if found is None else f"is store '{found}'"
    raise SynthdbError(
        f"{ws.store} {what}, but this catalog's shards are in {recorded.describe()}: set `store` in "
        f"{ws.config_path} (or $SYNTHDB_STORE) to the folder where that store is mounted on this machine, "
        "then run `synthdb store adopt`"
    )
