"""Find, create and describe a workspace: ``synthdb.toml`` + catalog URL + store root.

A workspace is a directory holding ``synthdb.toml``. Commands find it like git finds a repository:
an explicit path first, then ``SYNTHDB_WORKSPACE``, then the nearest parent of the current directory
that holds the file. Settings come from the file and may be overridden per process by environment
variables (``SYNTHDB_CATALOG_URL``, ``SYNTHDB_STORE``, ``SYNTHDB_MODELS_DIR``) so that cluster jobs can
point the same workspace at a shared PostgreSQL catalog without editing files. ``store_id`` is written
by synthdb, not by people: the id of the marker that proves a folder is this workspace's store (see
:mod:`synthdb.store.layout`).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from synthdb.errors import SynthdbError

CONFIG_NAME = "synthdb.toml"
ENV_WORKSPACE = "SYNTHDB_WORKSPACE"
ENV_OVERRIDES = {
    "catalog_url": "SYNTHDB_CATALOG_URL",
    "store": "SYNTHDB_STORE",
    "models_dir": "SYNTHDB_MODELS_DIR",
}
DEFAULT_CATALOG = "sqlite:///catalog.db"
DEFAULT_STORE = "store"
STORE_ID = "store_id"
KNOWN_KEYS = set(ENV_OVERRIDES) | {"description", STORE_ID}


@dataclass(frozen=True)
class Workspace:
    """A located workspace with every setting resolved to an absolute form."""

    root: Path
    catalog_url: str
    store: Path
    models_dir: Path
    store_id: str | None = None

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME


def default_models_dir() -> Path:
    """Where model weights live when the config names no ``models_dir`` (shared by workspaces)."""
    return Path(platformdirs.user_cache_dir("synthdb")) / "models"


def resolve_catalog_url(url: str, root: Path) -> str:
    """Make a relative SQLite path absolute against the workspace root; pass other URLs through.

    ``postgresql://`` without a driver is mapped to psycopg 3, the driver synthdb installs.
    """
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != "sqlite:///:memory:":
        path = url[len(prefix) :]
        if not os.path.isabs(path):
            return prefix + str((root / path).resolve())
        return url
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _read_config(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SynthdbError(
            f"{path} is not valid TOML ({exc}): fix the file or re-create it with `synthdb init`"
        ) from exc
    except OSError as exc:
        raise SynthdbError(f"cannot read {path} ({exc.strerror}): check its permissions") from exc
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise SynthdbError(
            f"{path} has unknown setting(s) {', '.join(sorted(unknown))}: "
            f"allowed are {', '.join(sorted(KNOWN_KEYS))}"
        )
    for key, value in data.items():
        if not isinstance(value, str):
            raise SynthdbError(f"{path}: setting '{key}' must be a string, got {type(value).__name__}")
    return data


def load(root: Path) -> Workspace:
    """Load the workspace at ``root`` (the directory holding synthdb.toml)."""
    root = root.resolve()
    data = _read_config(root / CONFIG_NAME)
    for key, env in ENV_OVERRIDES.items():
        if os.environ.get(env):
            data[key] = os.environ[env]
    store = Path(data.get("store", DEFAULT_STORE)).expanduser()
    models = Path(data["models_dir"]).expanduser() if "models_dir" in data else default_models_dir()
    return Workspace(
        root=root,
        catalog_url=resolve_catalog_url(data.get("catalog_url", DEFAULT_CATALOG), root),
        store=store if store.is_absolute() else (root / store).resolve(),
        models_dir=models if models.is_absolute() else (root / models).resolve(),
        store_id=data.get(STORE_ID),
    )


def find(explicit: str | os.PathLike | None = None, start: Path | None = None) -> Workspace:
    """Locate the workspace: ``explicit`` path, then ``$SYNTHDB_WORKSPACE``, then walk up from ``start``."""
    for given, origin in ((explicit, "--workspace"), (os.environ.get(ENV_WORKSPACE), ENV_WORKSPACE)):
        if given:
            path = Path(given).expanduser().resolve()
            if not (path / CONFIG_NAME).is_file():
                raise SynthdbError(
                    f"{origin} points to {path}, which holds no {CONFIG_NAME}: "
                    f"run `synthdb init {path}` or fix the path"
                )
            return load(path)
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_NAME).is_file():
            return load(candidate)
    raise SynthdbError(
        f"no synthdb workspace found in {here} or its parents: run `synthdb init DIR`, "
        f"or pass --workspace DIR, or set {ENV_WORKSPACE}"
    )


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def record_setting(root: Path, key: str, value: str) -> None:
    """Set ``key = "value"`` in ``root``'s synthdb.toml, keeping every other line (and comment) as it is.

    The file is replaced by rename, so a crash leaves the old file or the new one, never half of one.
    """
    path = root / CONFIG_NAME
    lines = path.read_text().splitlines()
    line = f"{key} = {_toml_string(value)}"
    kept = [old for old in lines if old.split("=", 1)[0].strip() != key]
    tmp = path.with_name(f".{CONFIG_NAME}.{os.getpid()}.tmp")
    tmp.write_text("\n".join([*kept, line]) + "\n")
    os.replace(tmp, path)
    _read_config(path)  # what was written must read back


def write_config(root: Path, catalog_url: str | None, store: str | None, models_dir: str | None) -> Path:
    """Write a fresh synthdb.toml; refuses to overwrite an existing one."""
    path = root / CONFIG_NAME
    if path.exists():
        raise SynthdbError(f"{path} already exists: this directory is a workspace already")
    lines = [
        "# synthdb workspace settings. Environment variables override them per process:",
        "# " + ", ".join(f"{k} <- {v}" for k, v in ENV_OVERRIDES.items()),
        f"catalog_url = {_toml_string(catalog_url or DEFAULT_CATALOG)}",
        f"store = {_toml_string(store or DEFAULT_STORE)}",
    ]
    if models_dir:
        lines.append(f"models_dir = {_toml_string(models_dir)}")
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
