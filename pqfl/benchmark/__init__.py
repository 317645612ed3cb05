"""The benchmark suite's plain logic, without Prefect or MLflow.

``suite`` reads and checks a suite YAML and expands it into cases, ``statistics`` turns
the cases' results into tables (mean ± std over seeds, relative change, paired
differences, win counts, PyOD's reference) and ``report`` writes the markdown report and
the JSON rows. The flow that runs a suite (``flows/benchmark.py``) and the tools under
``benchmarks/`` both build on these; the plots are in ``pqfl.plots``.
"""
