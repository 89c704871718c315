"""synthdb: build, catalog and audit face-recognition datasets, genuine and synthetic."""

__version__ = "0.1.0"
