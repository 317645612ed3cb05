"""The `pqfl` command as a user runs it: bad input, a real run, and `pqfl compare`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from flows.cli import format_table, main
from tests.tiny import TINY, write_config

PQFL = [sys.executable, "-m", "flows.cli"]
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("cli_reports_to_the_worker_server")


def _run(args, tmp_path, timeout=300):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return subprocess.run(PQFL + args, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def _bad_config(tmp_path, **sections):
    return ["run", "--config", str(write_config(tmp_path, **sections))]


BAD = {
    "negative lr": (lambda p: _bad_config(p, federation={"lr": -0.1}), "federation.lr"),
    "negative lambda": (lambda p: _bad_config(p, federation={"lambda": -1}), "federation.lambda"),
    "zero rounds": (lambda p: _bad_config(p, federation={"rounds": 0}), "federation.rounds"),
    "min_clients above count": (lambda p: _bad_config(p, federation={"min_clients": 9}), "min_clients"),
    "duplicate names": (
        lambda p: _bad_config(p, clients=[TINY["clients"][0], TINY["clients"][0]]),
        "duplicate client names",
    ),
    "unknown encoding": (
        lambda p: _bad_config(p, clients=[{**TINY["clients"][0], "encoding": "basis"}]),
        "clients.0.encoding",
    ),
    "unknown ansatz": (
        lambda p: _bad_config(p, clients=[{**TINY["clients"][0], "entangling": "star"}]),
        "clients.0.entangling",
    ),
    "missing dataset file": (lambda p: _bad_config(p, dataset={"source": "odds:/no/such/file.mat"}), "not found"),
    "missing config file": (lambda p: ["run", "--config", str(p / "nope.yaml")], "nope.yaml"),
    "unknown method flag": (lambda p: ["run", "--config", str(write_config(p)), "--methods", "fedsgd"], "--methods"),
    "zero rounds flag": (
        lambda p: ["run", "--config", str(write_config(p)), "--rounds", "0"],
        "--rounds: must be at least 1",
    ),
    "negative seed flag": (
        lambda p: ["run", "--config", str(write_config(p)), "--seed", "-1"],
        "--seed: must be at least 0",
    ),
    "unknown command": (lambda p: ["train"], "command: invalid choice: 'train'"),
    "unknown option": (lambda p: ["run", "--frobnicate"], "unrecognized arguments"),
}


#: The cases also run as a user runs them, in a new process: one the argument parser refuses
#: and one the config's validation refuses. The others go through the CLI's entry point in
#: this process (a new process costs seconds of imports).
AS_A_USER = ("unknown option", "negative lr")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys, monkeypatch):
    make_args, needle = BAD[case]
    if case in AS_A_USER:
        proc = _run(make_args(tmp_path), tmp_path, timeout=120)
        code, err = proc.returncode, proc.stderr
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", _store_uri(tmp_path))
        monkeypatch.chdir(tmp_path)
        code, err = main(make_args(tmp_path)), capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "store").exists(), "no MLflow run may be started for bad input"


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nclients: [\n  {name: a, qubits: 2\n")
    proc = _run(["run", "--config", str(bad)], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "YAML syntax error" in proc.stderr and "line" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_run_then_compare(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _store_uri(tmp_path))  # the in-process compares' store
    cfg = write_config(tmp_path)
    out = tmp_path / "res" / "out.json"
    proc = _run(["run", "--config", str(cfg), "--methods", "pqfl,local", "--rounds", "1", "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "round  1/1" in proc.stderr  # progress over rounds
    result = json.loads(out.read_text())
    assert set(result) >= {"mlflow_parent_run_ids", "wall_s", "methods"}
    assert set(result["methods"]) == {"pqfl", "local"}
    assert set(result["mlflow_parent_run_ids"]) == {"pqfl", "local"}
    for r in result["methods"].values():
        assert {"mean_auroc", "mean_aupr", "mean_false_error", "mean_missing_error", "worst_auroc"} <= set(r)
        assert [set(c) >= {"client", "auroc", "aupr", "false_error", "missing_error"} for c in r["per_client"]] == [
            True
        ] * 3
    header = next(line for line in proc.stdout.splitlines() if "mean AUROC" in line)
    assert "worst AUROC" in header and "wall s" in header
    for method in ("pqfl", "local"):
        row = next(line for line in proc.stdout.splitlines() if line.startswith(method + " "))
        assert f"{result['methods'][method]['mean_auroc']:.3f}" in row

    cmp_ = _run(["compare", "--config", str(cfg)], tmp_path)
    assert cmp_.returncode == 0, cmp_.stderr
    for method in ("pqfl", "local"):
        row = next(line for line in cmp_.stdout.splitlines() if line.startswith(method + " "))
        assert f"{result['methods'][method]['mean_auroc']:.3f}" in row
        assert f"{result['methods'][method]['worst_auroc']:.3f}" in row

    # A second invocation into the same store, with other rounds and only one method: compare
    # shows it alone (never pqfl from the first beside local from the second) ...
    # (in this process: the first run crossed the process boundary)
    later_out = tmp_path / "res" / "later.json"
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config", str(cfg), "--methods", "local", "--rounds", "2", "--json", str(later_out)]) == 0
    second = json.loads(later_out.read_text())
    assert second["invocation"] != result["invocation"]
    shown = _compare_json(tmp_path, cfg)
    assert (
        shown["invocation"] == second["invocation"]
        and shown["rounds"] == 2
        and shown["seed"] == TINY["federation"]["seed"]
    )
    assert list(shown["methods"]) == ["local"]
    assert shown["methods"]["local"]["run_id"] == second["mlflow_parent_run_ids"]["local"]
    assert shown["methods"]["local"]["mean_auroc"] == pytest.approx(second["methods"]["local"]["mean_auroc"])
    # ... and a newer invocation that never finished is left out, with a note saying so.
    client = mlflow.MlflowClient(tracking_uri=_store_uri(tmp_path))
    experiment = client.get_experiment_by_name(shown["experiment"]).experiment_id
    crashed = client.create_run(
        experiment, tags={"pqfl.role": "parent", "pqfl.invocation": "crashed-one", "pqfl.method": "pqfl"}
    )
    client.log_param(crashed.info.run_id, "federation.methods", "['pqfl']")
    capsys.readouterr()
    assert main(["compare", "--config", str(cfg)]) == 0
    note = capsys.readouterr()
    assert f"invocation {second['invocation']}" in note.out
    assert "crashed-one left out: not complete (pqfl RUNNING)" in note.err
    assert second["mlflow_parent_run_ids"]["local"] in note.out  # the run ids are shown
    assert "rounds 2, seed" in note.out

    # The first invocation by its id, or by any of its runs (a client run names its parent's).
    first = _compare_json(tmp_path, cfg, "--invocation", result["invocation"])
    assert first["rounds"] == 1 and list(first["methods"]) == ["local", "pqfl"]  # table order
    for method in ("pqfl", "local"):
        assert first["methods"][method]["run_id"] == result["mlflow_parent_run_ids"][method]
        assert first["methods"][method]["mean_auroc"] == pytest.approx(result["methods"][method]["mean_auroc"])
    child = client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{result['mlflow_parent_run_ids']['pqfl']}'", max_results=1
    )[0]
    assert _compare_json(tmp_path, cfg, "--run", child.info.run_id) == first
    capsys.readouterr()
    for args, needle in (
        (["--invocation", "crashed-one"], "not complete (pqfl RUNNING); finish it with `pqfl run --resume"),
        (["--invocation", "nope"], "--invocation: no invocation 'nope'"),
        (["--run", "0" * 32], "--run: no MLflow run"),
    ):
        code = main(["compare", "--config", str(cfg), *args])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert needle in err, err


def _store_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def _compare_json(tmp_path, cfg, *args) -> dict:
    """`pqfl compare --json` through the CLI's entry point in this process, on the store
    ``MLFLOW_TRACKING_URI`` names (the test's first compare crosses the process boundary;
    each new process costs seconds of imports)."""
    out = tmp_path / "res" / "compare.json"
    out.unlink(missing_ok=True)
    assert main(["compare", "--config", str(cfg), *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_version_and_help(tmp_path):
    from pqfl import __version__

    version = _run(["--version"], tmp_path, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"pqfl {__version__}"
    bare = _run([], tmp_path, timeout=120)
    assert bare.returncode == 2
    usage, error = bare.stderr.strip().splitlines()
    assert usage.startswith("usage: pqfl") and "{run,compare,ui,bench,benchmark}" in usage
    assert error.startswith("pqfl: error: no command given") and "pqfl: error: pqfl" not in bare.stderr


def test_compare_loads_no_simulator_plotting_or_scikit_learn():
    """`pqfl compare` reads MLflow runs and prints a table: JAX, PennyLane, matplotlib and
    scikit-learn took 2.4 s of its 4.4 s when it imported them with the tracking module."""
    code = (
        "import sys, flows.cli, flows.compare; loaded = {m.split('.')[0] for m in sys.modules}; "
        "print(sorted({'jax', 'pennylane', 'matplotlib', 'sklearn', 'prefect'} & loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_compare_without_store_or_experiment(tmp_path):
    proc = _run(["compare", "--experiment", "never-ran"], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "no MLflow store" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()
    import mlflow

    mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}").create_experiment("other")
    proc = _run(["compare", "--experiment", "never-ran"], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "never-ran" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bench_sim_small(tmp_path):
    out = tmp_path / "bench.json"
    # 2 qubits, the smallest circuit: 35 s of CPU for the five cells against 47 s at 3 qubits
    proc = _run(["bench", "sim", "--qubits", "2", "--json", str(out)], tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    cells = result["cells"]
    for name in ("fast_q2", "per_sample_q2", "broadcast_q2", "fast_noisy_q2", "default_mixed_q2"):
        assert cells[name]["step_s"] > 0, (name, cells[name])
        assert cells[name]["peak_rss_mb"] > 0
    assert "qubits | fast ms" in proc.stdout
    # the compiled batched path beats a Python loop over samples even at 2 qubits
    assert cells["per_sample_q2"]["step_s"] > cells["fast_q2"]["step_s"]


def test_bench_bad_qubits(tmp_path):
    proc = _run(["bench", "sim", "--qubits", "eight"], tmp_path, timeout=60)
    assert proc.returncode == 2 and "--qubits" in proc.stderr


def test_the_table_adds_honest_auroc_and_epsilon_only_when_a_run_has_them():
    plain = {"mean_auroc": 0.7, "mean_aupr": 0.5, "mean_false_error": 0.1, "mean_missing_error": 0.2}
    plain |= {"worst_auroc": 0.6, "wall_s": 3.0}
    assert "honest" not in format_table({"local": plain}) and "epsilon" not in format_table({"local": plain})
    attacked = {**plain, "honest": {"mean_auroc": 0.812}, "epsilon": 4.25}
    table = format_table({"local": plain, "fedavg": attacked})
    header, local, fedavg = table.splitlines()[0], table.splitlines()[2], table.splitlines()[3]
    assert "honest AUROC" in header and "epsilon" in header
    assert "0.812" in fedavg and "4.250" in fedavg and local.count("NaN") == 2


def test_an_attacked_run_prints_honest_auroc_and_names_its_attackers(tmp_path, capsys, monkeypatch):
    # In this process: what it prints is the subject, not the process boundary.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _store_uri(tmp_path))
    monkeypatch.chdir(tmp_path)
    fed = {**TINY["federation"], "attack": {"kind": "gaussian", "fraction": 0.34}, "aggregator": {"rule": "median"}}
    out = tmp_path / "out.json"
    args = ["run", "--config", str(write_config(tmp_path, federation=fed)), "--methods", "fedavg", "--rounds", "1"]
    assert main([*args, "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    (attacker,) = json.loads(out.read_text())["methods"]["fedavg"]["attackers"]
    assert "honest AUROC" in stdout and f"attacking clients (gaussian): {attacker}\n" in stdout
