"""The benchmark's plain logic is library code: reading a suite, computing its tables and
report, and drawing its plots pull in neither Prefect nor MLflow, and neither do the
tools under ``benchmarks/`` built on them."""

from __future__ import annotations

import json
import os
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


#: Burns 0.4 s of this process's CPU (user and system, as ``getrusage`` counts it).
_BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end:\n    pass\n"
#: Burns its own 0.4 s, then waits for a child that burns 0.4 s more, then writes ``argv[1]``.
_PARENT = _BURN + f"import json, subprocess, sys\nsubprocess.run([sys.executable, '-c', {_BURN!r}], check=True)\n"
_PARENT += "open(sys.argv[1], 'w').write(json.dumps({'ok': True}))\n"


def test_e2e_counts_the_cpu_of_a_run_and_of_the_children_it_waited_for(tmp_path):
    """`pqfl bench e2e` prices a run's CPU with its Prefect server's (a child that
    ``pqfl run`` waits for): the figure holds the process's own CPU and its child's."""
    from benchmarks.e2e import _child

    out = tmp_path / "out" / "run.json"
    cmd = [sys.executable, "-c", _PARENT, str(out)]
    _, wall, result = _child("burner", cmd, dict(os.environ), out.parent, out, timeout=120, cwd=tmp_path)
    assert result["ok"] is True
    assert 0.8 <= result["process_cpu_s"] <= 2 * wall + 0.1  # two cores at most


def test_e2e_times_the_odds_suites_first_case_as_the_suite_runs_it(tmp_path):
    """`pqfl bench e2e --odds-dir` times a one-case suite cut from benchmarks/suites/odds.yaml:
    it must expand to exactly the full suite's first case, config and all."""
    from benchmarks.e2e import ODDS_SUITE, first_case_suite
    from pqfl.benchmark.suite import expand_cases, load_suite

    label = first_case_suite(ODDS_SUITE, tmp_path / "one.yaml")
    first = expand_cases(load_suite(ODDS_SUITE), tmp_path)[0]
    assert expand_cases(load_suite(tmp_path / "one.yaml"), tmp_path) == [first]
    assert label == f"{first.dataset} {first.objective} seed {first.seed}"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_e2e_refuses_an_odds_dir_without_the_case_file_before_any_run(make, tmp_path, capsys):
    from flows.cli import main

    folder = tmp_path / "odds"
    if make == "empty":
        folder.mkdir()
    assert main(["bench", "e2e", "--odds-dir", str(folder)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("pqfl: error: --odds-dir") and str(folder) in line
    assert ("cardio.mat not found" if make == "empty" else "is not a folder") in line
