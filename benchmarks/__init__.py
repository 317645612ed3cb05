"""Benchmarks and tuning scripts (the `pqfl bench` commands live here)."""
