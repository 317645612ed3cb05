"""The benchmark's plain logic is library code: reading a suite, computing its tables and
report, and drawing its plots pull in neither Prefect nor MLflow, and neither do the
tools under ``benchmarks/`` built on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORCHESTRATION = {"prefect", "mlflow", "flows", "tasks"}

_REPORT = """
import json, sys
loaded = sorted({m.split(".")[0] for m in sys.modules})
backend = sys.modules["matplotlib"].get_backend().lower() if "matplotlib" in sys.modules else None
print(json.dumps({"loaded": loaded, "backend": backend}))
"""


def _after(statement: str) -> dict:
    """Run ``statement`` in a fresh interpreter: the top-level packages it loaded and
    matplotlib's backend (None when matplotlib was not loaded)."""
    proc = subprocess.run(
        [sys.executable, "-c", statement + "\n" + _REPORT], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "statement",
    [
        "import pqfl.benchmark.suite, pqfl.benchmark.statistics, pqfl.benchmark.report, pqfl.plots",
        "import benchmarks.fisher_direction, benchmarks.odds_summary, benchmarks.tune_odds_val",
        "import benchmarks.vmap_seeds",
    ],
)
def test_no_prefect_or_mlflow(statement):
    loaded = set(_after(statement)["loaded"])
    assert not loaded & ORCHESTRATION, sorted(loaded & ORCHESTRATION)


def test_plots_draw_off_screen_and_importing_pqfl_stays_light():
    assert _after("import pqfl.plots")["backend"] == "agg"
    assert "matplotlib" not in _after("import pqfl")["loaded"]
