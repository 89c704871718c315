"""Shared fixtures: real catalogs on SQLite files and on the real PostgreSQL server.

PostgreSQL tests need ``SYNTHDB_TEST_POSTGRES_URL`` (``.ci/run`` sets it); each test gets a fresh
database created on that server and dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import types
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from synthdb.admin import init_workspace
from synthdb.context import Context
from tests.nets.nvlabs_layout import install_stand_ins

POSTGRES_ENV = "SYNTHDB_TEST_POSTGRES_URL"
FACES = Path(__file__).resolve().parent / "data" / "faces"


def _postgres_admin_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        return None
    return (
        url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip(f"{POSTGRES_ENV} is not set: PostgreSQL catalog tests need a server")
    name = f"synthdb_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# Every test that needs the PostgreSQL server carries the ``postgres`` marker (``-m "not postgres"`` runs
# without one): the PostgreSQL half of parametrized fixtures through this param, tests that ask for
# ``postgres_url`` (directly or through a fixture) through :func:`pytest_collection_modifyitems`.
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(params=["sqlite", POSTGRES])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each catalog test runs on a SQLite file and on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ctx(catalog_url: str, tmp_path: Path) -> Iterator[Context]:
    """A fresh workspace whose catalog is on SQLite or PostgreSQL (parametrized)."""
    context = init_workspace(tmp_path / "ws", catalog_url=catalog_url, models_dir=str(tmp_path / "models"))
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def sqlite_ctx(tmp_path: Path) -> Iterator[Context]:
    """A fresh SQLite workspace; its models directory is private (never the user's cache)."""
    context = init_workspace(tmp_path / "ws", models_dir=str(tmp_path / "models"))
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def faces_dir() -> Path:
    """The test photos (tests/data/faces, with their manifest and licence notes)."""
    return FACES


@pytest.fixture
def nvlabs_modules(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-ins for NVIDIA's pickle modules (see :mod:`tests.nets.nvlabs_layout`), removed after the test."""
    return install_stand_ins(monkeypatch)


CliRun = Callable[..., Result]


@pytest.fixture(scope="session")
def synthdb_cli() -> CliRun:
    """The ``synthdb`` command line in this process (click's runner): ``synthdb_cli(*args, ws=..., code=0)``.

    ``ws`` (a workspace root or a :class:`Context`) prepends ``-w ROOT``; ``input`` is stdin, ``env`` extra
    environment variables. An exception other than an exit (a traceback where the CLI promises one line) fails
    the test, and so does an exit status other than ``code`` when it is given; both show the output.
    Returns click's :class:`~click.testing.Result` (``exit_code``, ``output``, ``exception``).
    """
    from synthdb.cli.main import cli

    def run(
        *args: object,
        ws: str | os.PathLike[str] | Context | None = None,
        input: str | bytes | None = None,
        env: Mapping[str, str | None] | None = None,
        code: int | None = None,
    ) -> Result:
        root = ws.ws.root if isinstance(ws, Context) else ws
        argv = [*(["-w", str(root)] if root is not None else []), *(str(arg) for arg in args)]
        result = CliRunner().invoke(cli, argv, input=input, env=env)
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        if crashed or (code is not None and result.exit_code != code):
            import traceback

            trace = "".join(traceback.format_exception(result.exception)) if crashed else ""
            raise AssertionError(
                f"synthdb {' '.join(argv)} exited {result.exit_code}:\n{result.output}{trace}"
            )
        return result

    return run
