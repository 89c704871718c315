"""synthdb: build, catalog and audit face-recognition datasets, genuine and synthetic."""

from synthdb.openblas import choose_kernels

__version__ = "0.1.0"

choose_kernels()  # before anything loads FAISS's own OpenBLAS: see synthdb/openblas.py
