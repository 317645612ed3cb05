"""The benchmark flow (deployment ``pqfl-nightly-benchmark``): datasets × methods × seeds.

Work in progress: the signature is fixed so the nightly deployment can point at
``flows/benchmark.py:pqfl_benchmark``.
"""

from __future__ import annotations

from prefect import flow


@flow(name="pqfl-benchmark")
def pqfl_benchmark(suite: str, data_dir: str | None = None, json_out: str | None = None) -> dict:
    """Run a benchmark suite (YAML file) and return ``{"rows": [...]}``."""
    raise NotImplementedError("pqfl-benchmark is being built (issue 6)")
