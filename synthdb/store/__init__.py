"""Storage back ends: file formats that synthdb reads and writes."""
