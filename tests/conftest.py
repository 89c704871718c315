"""Shared fixtures: real catalogs on SQLite files and on the real PostgreSQL server.

PostgreSQL tests need ``SYNTHDB_TEST_POSTGRES_URL`` (``.ci/run`` sets it); each test gets a fresh
database created on that server and dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from synthdb.admin import init_workspace
from synthdb.context import Context
from tests.nvlabs_layout import install_stand_ins

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


@pytest.fixture(params=["sqlite", "postgres"])
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
    """Stand-ins for NVIDIA's pickle modules (see :mod:`tests.nvlabs_layout`), removed after the test."""
    return install_stand_ins(monkeypatch)
