"""The SQL catalog: schema, engine setup, migrations and the queries other modules share."""

from synthdb.catalog.engine import Catalog

__all__ = ["Catalog"]
