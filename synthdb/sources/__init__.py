"""Importers of face databases.

Each genuine layout only scans (``entries``, ``listing``); ``importer.import_source`` does the rest.
``samples`` brings a samples.h5 of the reference package in as a synthetic dataset, its vectors in shards.
"""
