"""Importers of genuine face databases: each scans a layout, ``common.import_source`` does the rest."""
