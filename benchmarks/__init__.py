"""Benchmark suites, reports and the tools that tune and summarise them (library calls only)."""
