"""The regime-map flow ``pqfl-regime-map`` (weekly deployment ``pqfl-weekly-regime-map``).

Orchestration of ``benchmarks.regime_map`` only: one task per (cell, seed) case, on a
process pool of ``workers`` (the training is CPU-bound Python and JAX, so processes, not
threads), retried once; each finished case is appended to the map's CSV at once, so a run
that dies resumes where it stopped (what the CSV holds is not trained again; a method added
to the map trains alone on the cases already there). The report,
plot and MLflow run are the library script's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner

from benchmarks.regime_map import (
    ALPHAS,
    ANOMALIES,
    BUDGET,
    HARDWARE,
    METHODS,
    ROWS,
    check_methods,
    grid,
    pending,
    record,
    run_case,
    write_outputs,
)

log = logging.getLogger("pqfl.progress")


@task(retries=1, cache_policy=NO_CACHE, task_run_name="rows{cell[0]}-alpha{cell[1]}-{cell[2]}-{cell[3]}-seed{seed}")
def regime_case(cell: list[str], seed: int, methods: list[str], budget: dict, references: bool) -> list[dict]:
    """The missing methods (and references) on one cell and seed."""
    return run_case((tuple(cell), seed, methods, budget, references))


@flow(name="pqfl-regime-map", task_runner=ProcessPoolTaskRunner(max_workers=2))
def pqfl_regime_map(
    seeds: list[int] = (0, 1, 2, 3, 4),
    rows: list[str] = ROWS,
    alphas: list[str] = ALPHAS,
    anomalies: list[str] = ANOMALIES,
    hardware: list[str] = HARDWARE,
    methods: list[str] = METHODS,
    budget: dict | None = None,
    out: str = "benchmarks/reports/regime_map",
    images: str = "docs/images",
    mlflow: bool = True,
) -> dict:
    """Train the missing cases of the map and rewrite its report, plot and MLflow run.

    ``budget`` overrides keys of the map's training budget (``benchmarks.regime_map.BUDGET``)
    for a trial; a map's CSV must hold one budget, so give a trial its own ``out``."""
    started = time.perf_counter()
    cells = grid(list(rows), list(alphas), list(anomalies), list(hardware))
    check_methods(list(methods))
    budget = {**BUDGET, **(budget or {})}
    out_path = Path(out)
    csv = out_path.with_suffix(".csv")
    cases = pending(csv, cells, list(seeds), list(methods))
    log.info("regime map: %d cases to train, %d cells", len(cases), len(cells))
    futures = [regime_case.submit(list(c), s, missing, budget, refs) for c, s, missing, refs in cases]
    for i, future in enumerate(futures, 1):
        log.info("regime map %d/%d  %s", i, len(cases), record(csv, future.result()))
    image, elapsed = Path(images) / "regime_map.png", time.perf_counter() - started
    run_id = write_outputs(csv, out_path, image, elapsed, "flow pqfl-regime-map", mlflow, budget)
    return {"cases": len(cases), "report": str(out_path.with_suffix(".md")), "mlflow_run_id": run_id}
