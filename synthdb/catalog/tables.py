"""What a catalog holds, table by table (``synthdb info``)."""

from __future__ import annotations

import sqlalchemy as sa

from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import Base


def row_counts(catalog: Catalog) -> dict[str, int]:
    """Rows per table of the schema, in dependency order."""
    with catalog.engine.connect() as conn:
        return {
            table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in Base.metadata.sorted_tables
        }
