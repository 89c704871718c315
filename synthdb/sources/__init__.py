"""Importers of face databases.

Each genuine layout only scans; ``common.import_source`` does the rest. ``samples`` brings a
samples.h5 of the reference package in as a synthetic dataset, its vectors in shards.
"""
