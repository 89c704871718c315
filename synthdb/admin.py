"""Workspace administration: create a workspace, describe it, migrate its catalog."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from synthdb import __version__, workspace
from synthdb.catalog import Catalog, migrate
from synthdb.catalog.schema import Base
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.layout import Store


def init_workspace(
    root: str | os.PathLike,
    catalog_url: str | None = None,
    store: str | None = None,
    models_dir: str | None = None,
) -> Context:
    """Create ``root/synthdb.toml``, the store directories and the catalog schema.

    The catalog is reached before anything is written, so a wrong URL leaves no half-made workspace.
    """
    root = Path(root).expanduser().resolve()
    if (root / workspace.CONFIG_NAME).exists():
        raise SynthdbError(
            f"{root / workspace.CONFIG_NAME} already exists: this directory is a workspace already"
        )
    root.mkdir(parents=True, exist_ok=True)
    probe = workspace.resolve_catalog_url(catalog_url or workspace.DEFAULT_CATALOG, root)
    catalog = Catalog(probe)
    try:
        migrate.upgrade(catalog.engine)
    finally:
        catalog.dispose()
    workspace.write_config(root, catalog_url, store, models_dir)
    ctx = Context.from_workspace(workspace.load(root))
    ctx.store.ensure()
    return ctx


def info(ctx: Context) -> dict[str, Any]:
    """What a workspace is and holds: paths, schema revision, row counts per table, store size."""
    with ctx.catalog.engine.connect() as conn:
        counts = {
            table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in Base.metadata.sorted_tables
        }
    return {
        "workspace": str(ctx.ws.root),
        "catalog": ctx.catalog.display_url,
        "schema_revision": migrate.current_revision(ctx.catalog.engine),
        "schema_head": migrate.head_revision(),
        "store": str(ctx.store.root),
        "store_bytes": _tree_size(ctx.store.root),
        "models_dir": str(ctx.ws.models_dir),
        "synthdb_version": __version__,
        "counts": counts,
    }


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def upgrade(where: str | os.PathLike | None = None, target: str = "head") -> str | None:
    """Migrate the workspace's catalog to ``target``; returns the new revision."""
    ws = workspace.find(where)
    catalog = Catalog(ws.catalog_url)
    try:
        migrate.upgrade(catalog.engine, target)
        Store(ws.store).ensure()
        return migrate.current_revision(catalog.engine)
    finally:
        catalog.dispose()


def current(where: str | os.PathLike | None = None) -> tuple[str | None, str]:
    """The catalog's schema revision and the newest one this synthdb knows."""
    ws = workspace.find(where)
    catalog = Catalog(ws.catalog_url)
    try:
        return migrate.current_revision(catalog.engine), migrate.head_revision()
    finally:
        catalog.dispose()
