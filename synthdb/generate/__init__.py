"""Generation: generators wrapped for synthdb, reference and variation algorithms, runs."""
