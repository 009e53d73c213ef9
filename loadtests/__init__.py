"""Load tests and the benchmark (issue 4; not built yet)."""
