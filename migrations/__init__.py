"""Alembic migration environment of the catalog, shipped inside the wheel as ``synthdb.migrations``."""
