"""Run and inspect the catalog's Alembic migrations from inside the package (no alembic.ini needed).

Opening a catalog checks its revision: a catalog written by a newer synthdb is refused (this code
would misread it), an older one asks for ``synthdb db upgrade``.
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from synthdb.errors import SynthdbError


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("synthdb.migrations")))
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _run(engine: Engine, action: str, target: str) -> None:
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, target)


def upgrade(engine: Engine, target: str = "head") -> None:
    """Bring the catalog schema to ``target`` (default: the newest this synthdb knows)."""
    check_not_newer(engine)
    _run(engine, "upgrade", target)


def downgrade(engine: Engine, target: str) -> None:
    """Take the schema back to ``target`` ("base" drops every synthdb table)."""
    _run(engine, "downgrade", target)


def check_not_newer(engine: Engine) -> None:
    """Refuse a catalog written by a newer synthdb: this code would misread its tables."""
    current = current_revision(engine)
    if current is not None and not _known(current):
        raise SynthdbError(
            f"catalog {engine.url.render_as_string(hide_password=True)} is at schema revision {current}, "
            f"newer than this synthdb knows (head {head_revision()}): upgrade synthdb"
        )


def _known(revision: str) -> bool:
    try:
        return script_directory().get_revision(revision) is not None
    except Exception:  # alembic raises several types for unknown revisions
        return False


def check_current(engine: Engine) -> None:
    """Refuse a catalog whose schema this code cannot use, with the command that fixes it."""
    check_not_newer(engine)
    current = current_revision(engine)
    url = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise SynthdbError(
            f"catalog {url} has no synthdb schema: run `synthdb db upgrade` (or `synthdb init`)"
        )
    if current != head_revision():
        raise SynthdbError(
            f"catalog {url} is at schema revision {current}, older than {head_revision()}: "
            "run `synthdb db upgrade`"
        )
