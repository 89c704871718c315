"""Alembic migrations on SQLite and PostgreSQL: up, down, up again, and no drift from the ORM."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from synthdb.catalog import migrate
from synthdb.catalog.engine import make_engine
from synthdb.catalog.schema import Base

TABLES = {t.name for t in Base.metadata.sorted_tables}


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(catalog_url: str) -> None:
    engine = make_engine(catalog_url)
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
        assert _tables(engine) == TABLES
        migrate.downgrade(engine, "base")
        assert migrate.current_revision(engine) is None
        assert _tables(engine) == set()
        migrate.upgrade(engine)
        assert _tables(engine) == TABLES
        migrate.check_current(engine)
    finally:
        engine.dispose()


def test_models_and_migrations_do_not_drift(catalog_url: str) -> None:
    engine = make_engine(catalog_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == [], f"ORM and migrations differ: write an Alembic revision for {diff}"
    finally:
        engine.dispose()
