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


def test_e2e_runs_each_command_on_a_prefect_database_without_history(tmp_path, monkeypatch):
    """`pqfl bench e2e` runs each command on a Prefect database without runs, whatever the
    user's environment names: otherwise the temporary server writes into the user's
    ``PREFECT_HOME``, whose database keeps every earlier command's runs and makes the server
    slower (docs/speed.md). A real temporary server started with a command's environment
    records into the benchmark's home, and the next command's database no longer has it;
    the home keeps Prefect's memo of its block registration, as a user's home does."""
    import sqlite3
    import urllib.request

    from benchmarks.e2e import _command_env
    from flows.runners import TemporaryServer

    user_home = tmp_path / "user-prefect"
    monkeypatch.setenv("PREFECT_HOME", str(user_home))
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{user_home / 'other.db'}")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    env = _command_env(tmp_path / "cache", tmp_path / "run")
    home = Path(env["PREFECT_HOME"])
    assert home != user_home and (home / "memo_store.toml").is_file()
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in env and "PREFECT_API_URL" not in env

    def flows() -> int:
        with sqlite3.connect(home / "prefect.db") as db:
            return db.execute("SELECT count(*) FROM flow WHERE name = 'e2e-home-check'").fetchone()[0]

    server = TemporaryServer(env)
    try:
        api = server.wait(timeout=240)
        body = json.dumps({"name": "e2e-home-check"}).encode()
        request = urllib.request.Request(f"{api}/flows/", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status in (200, 201)
    finally:
        server.stop()
    assert flows() == 1
    assert _command_env(tmp_path / "cache", tmp_path / "next")["PREFECT_HOME"] == str(home)
    assert flows() == 0  # the next command starts without the first one's records
    assert not user_home.exists()
