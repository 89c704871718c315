"""An opened workspace: its settings, its catalog (schema checked) and its store.

Every API function that touches data takes a ``Context``; the CLI builds one per command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from synthdb import workspace
from synthdb.catalog import Catalog, migrate
from synthdb.store.layout import Store


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
        if check_schema:
            migrate.check_current(catalog.engine)
        return cls(ws=ws, catalog=catalog, store=Store(ws.store))

    def close(self) -> None:
        self.catalog.dispose()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
