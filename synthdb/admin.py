"""Workspace administration: create a workspace, describe it, migrate its catalog."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from synthdb import __version__, workspace
from synthdb.catalog import Catalog, migrate, pg_access, shards, stores
from synthdb.catalog.tables import row_counts
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.layout import MARKER, SHARD_PATH, Store, adopt_store, claim_store, read_marker


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
        store = team_store(catalog, root, store)
        workspace.write_config(root, catalog_url, store, models_dir)
        store_id = claim_store(root)  # the marker that lets fsck and gc act on it (synthdb.store.layout)
        stores.record(catalog, store_id, str(workspace.load(root).store))
    finally:
        catalog.dispose()
    ctx = Context.from_workspace(workspace.load(root))
    ctx.store.ensure()
    return ctx


def team_store(catalog: Catalog, root: Path, store: str | None) -> str | None:
    """The ``store`` setting of a new workspace of ``catalog``: the one given, else the catalog's recorded
    store when this machine has it at the recorded place; refused (one line, nothing written) when that is
    not the store the catalog's shards are in, so a second team member never gets an empty store of their
    own. A catalog that records no store takes the new workspace's, unless it lists shards already (made
    before stores were recorded): then the folder must be named."""
    recorded = stores.recorded(catalog)
    if recorded is None:
        count = stores.shard_count(catalog)
        if count and store is None and not os.environ.get(workspace.ENV_OVERRIDES["store"]):
            raise SynthdbError(
                f"the catalog {catalog.display_url} lists {count} shards but records no store: pass --store "
                "with the folder that holds them (the store of the workspace that wrote them)"
            )
        return store
    folder = _store_folder(root, store or recorded.location)
    found = read_marker(folder)
    if found == recorded.store_id:
        return store or recorded.location
    if store is None and not os.environ.get(workspace.ENV_OVERRIDES["store"]) and not folder.exists():
        raise SynthdbError(
            f"the catalog {catalog.display_url} keeps its shards in {recorded.describe()}, which this "
            "machine does not have: pass --store DIR, the folder where that store is mounted here"
        )
    what = f"carries no {MARKER} marker" if found is None else f"is marked as store '{found}'"
    raise SynthdbError(
        f"{folder} {what}, but the catalog {catalog.display_url} keeps its shards in {recorded.describe()}: "
        "pass --store DIR, the folder where that store is mounted here"
    )


def _store_folder(root: Path, store: str) -> Path:
    """Where a workspace at ``root`` with ``store`` would keep its store ($SYNTHDB_STORE wins, as on open)."""
    path = Path(os.environ.get(workspace.ENV_OVERRIDES["store"]) or store).expanduser()
    return path if path.is_absolute() else (root / path).resolve()


@dataclass(frozen=True)
class Initialised:
    """What ``synthdb init`` made: the workspace, where its catalog and store are, and the warning about
    the catalog's role (None when there is nothing to say)."""

    root: Path
    catalog: str
    store: Path
    warning: str | None


def initialise(
    root: str | os.PathLike,
    catalog_url: str | None = None,
    store: str | None = None,
    models_dir: str | None = None,
) -> Initialised:
    """``synthdb init``: :func:`init_workspace`, checked for a privileged PostgreSQL role, and closed."""
    with init_workspace(root, catalog_url, store, models_dir) as ctx:
        return Initialised(ctx.ws.root, ctx.catalog.display_url, ctx.store.root, catalog_role_warning(ctx))


def catalog_role_warning(ctx: Context) -> str | None:
    """A one-line warning when a PostgreSQL catalog is reached as a superuser or a member of the server-file
    or signal roles (:mod:`synthdb.catalog.pg_access`); None otherwise.

    Such a role works for every command, but SQL written by users cannot be confined under it, so
    ``synthdb query --engine catalog`` refuses it; a team should connect as a least-privilege owner.
    """
    if ctx.catalog.dialect != "postgresql":
        return None
    role, privileges = pg_access.privileges_of(ctx.catalog.engine)
    if not privileges:
        return None
    return (
        f"warning: the catalog role {role!r} is privileged ({', '.join(privileges)}): it can read the "
        "server's files and end other sessions, and `synthdb query --engine catalog` refuses it; create a "
        "least-privilege owner and reader (`synthdb init --print-grants --catalog-url URL` prints the SQL) "
        "and put the owner in catalog_url"
    )


def postgres_grants(catalog_url: str, owner: str = "synthdb_owner", reader: str = "synthdb_reader") -> str:
    """The SQL that creates a least-privilege owner and reader role for a PostgreSQL catalog URL."""
    url = sa.engine.make_url(workspace.resolve_catalog_url(catalog_url, Path.cwd()))
    if url.get_backend_name() != "postgresql" or not url.database:
        raise SynthdbError(
            f"--print-grants is for PostgreSQL catalogs: pass --catalog-url postgresql://HOST/DATABASE "
            f"(got {pg_access.display(url)})"
        )
    return pg_access.grants_sql(url.database, owner, reader)


def info(ctx: Context) -> dict[str, Any]:
    """What a workspace is and holds: paths, schema revision, row counts per table, store size."""
    counts = row_counts(ctx.catalog)
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


def adopt(where: str | os.PathLike | None = None) -> tuple[workspace.Workspace, str]:
    """``synthdb store adopt``: the workspace found from ``where``, whose configured store is marked as its
    own (:func:`synthdb.store.layout.adopt_store`), and the store's id.

    The catalog's recorded store decides the id: an unmarked folder gets it back, but only when it holds
    the catalog's shard files (or the catalog has none), so an empty folder named by mistake is not passed
    off as the team's store; a catalog that records no store records this one."""
    ws = workspace.find(where)
    catalog = Catalog(ws.catalog_url)
    try:
        migrate.check_current(catalog.engine)
        recorded = stores.recorded(catalog)
        if recorded is not None and read_marker(ws.store) is None:
            _check_holds_shards(catalog, ws)
        store_id = adopt_store(ws, recorded.store_id if recorded else None)
        stores.record(catalog, store_id, str(ws.store))
    finally:
        catalog.dispose()
    return ws, store_id


def _check_holds_shards(catalog: Catalog, ws: workspace.Workspace, sample: int = 20) -> None:
    """Refuse to mark ``ws.store`` as the catalog's store when it holds none of its first shard files."""
    paths = [row.path for row in shards.committed(catalog, limit=sample)]
    owned = [Store(ws.store).owned_path(path, SHARD_PATH) for path in paths]  # never a crafted row's path
    if paths and not any(full is not None and full.is_file() for full in owned):
        raise SynthdbError(
            f"{ws.store} holds none of the catalog's shard files: fix `store` in {ws.config_path} (or "
            "$SYNTHDB_STORE) to the folder where the catalog's store is mounted"
        )


def current(where: str | os.PathLike | None = None) -> tuple[str | None, str]:
    """The catalog's schema revision and the newest one this synthdb knows."""
    ws = workspace.find(where)
    catalog = Catalog(ws.catalog_url)
    try:
        return migrate.current_revision(catalog.engine), migrate.head_revision()
    finally:
        catalog.dispose()
