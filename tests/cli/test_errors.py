"""A catalog that refuses an operation reaches the command line as one line (a SynthdbError worded by the
catalog layer), never as a SQLAlchemy traceback: the CLI handles SynthdbError and nothing else.

Each case is a real refusal by the PostgreSQL server: a read-only transaction, a role that may only read,
a lock wait that times out. The catalog URL goes through ``SYNTHDB_CATALOG_URL``, as on a cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result

from synthdb.admin import init_workspace
from synthdb.context import Context
from synthdb.nets.generator import Generator
from tests.conftest import CliRun

CARD = "stylegan2-ffhq-256"


@pytest.fixture
def pg_workspace(postgres_url: str, tmp_path: Path) -> Iterator[Context]:
    ctx = init_workspace(tmp_path / "ws", catalog_url=postgres_url, models_dir=str(tmp_path / "models"))
    try:
        yield ctx
    finally:
        ctx.close()


def assert_one_line(result: Result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: the catalog "), result.output
    assert "Traceback" not in result.output and all(word in result.output for word in words), result.output


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A sound file for CARD (a saved tiny network): only the catalog can refuse to register it."""
    return Generator.tiny("stylegan2-tiny").save(tmp_path / "g.pt")


def registered(ctx: Context) -> int:
    with ctx.catalog.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM model")).scalar_one()


def test_a_read_only_transaction_is_one_line(
    pg_workspace: Context, postgres_url: str, weights: Path, synthdb_cli: CliRun
) -> None:
    read_only = f"{postgres_url}?options=-c%20default_transaction_read_only%3Don"
    result = synthdb_cli(
        "models", "add", CARD, "--file", str(weights), ws=pg_workspace, env={"SYNTHDB_CATALOG_URL": read_only}
    )
    assert_one_line(result, "refused the operation", "read-only transaction")
    assert registered(pg_workspace) == 0


def test_a_reading_role_is_one_line(
    pg_workspace: Context, postgres_url: str, weights: Path, synthdb_cli: CliRun
) -> None:
    role = f"synthdb_reader_{uuid.uuid4().hex[:8]}"
    url = sa.engine.make_url(postgres_url)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
            conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        as_reader = url.set(username=role).render_as_string(hide_password=False)
        assert (
            "iresnet50"
            in synthdb_cli("models", "list", ws=pg_workspace, env={"SYNTHDB_CATALOG_URL": as_reader}).output
        )  # reading works
        result = synthdb_cli(
            "models",
            "add",
            CARD,
            "--file",
            str(weights),
            ws=pg_workspace,
            env={"SYNTHDB_CATALOG_URL": as_reader},
        )
        assert_one_line(result, "refused the operation", "permission denied")
        assert registered(pg_workspace) == 0
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()


def test_a_lock_wait_that_times_out_is_one_line(
    pg_workspace: Context, postgres_url: str, synthdb_cli: CliRun
) -> None:
    """Another session holds the model table; this one gives up after its lock_timeout."""
    impatient = f"{postgres_url}?options=-c%20lock_timeout%3D200"
    holder = sa.create_engine(postgres_url)
    try:
        with holder.connect() as conn, conn.begin():
            conn.exec_driver_sql("LOCK TABLE model IN ACCESS EXCLUSIVE MODE")
            result = synthdb_cli("models", "list", ws=pg_workspace, env={"SYNTHDB_CATALOG_URL": impatient})
        assert_one_line(result, "refused the operation", "lock timeout")
        assert (
            "iresnet50"
            in synthdb_cli("models", "list", ws=pg_workspace, env={"SYNTHDB_CATALOG_URL": impatient}).output
        )  # released: it works
    finally:
        holder.dispose()
