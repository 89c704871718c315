"""Neural networks ported to torch (no dependency on the catalog or the store)."""
