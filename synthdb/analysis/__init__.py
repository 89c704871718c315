"""Questions over the catalog and shards: SQL queries, indexes, distances, plots and reports."""
