"""The `pqfl` command as a user runs it: bad input, a real run, and `pqfl compare`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import TINY, write_config

PQFL = [sys.executable, "-m", "flows.cli"]
ROOT = Path(__file__).resolve().parent.parent


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
    "zero rounds flag": (lambda p: ["run", "--config", str(write_config(p)), "--rounds", "0"], "federation.rounds"),
    "unknown option": (lambda p: ["run", "--frobnicate"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2(case, tmp_path):
    make_args, needle = BAD[case]
    proc = _run(make_args(tmp_path), tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "store").exists(), "no MLflow run may be started for bad input"


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nclients: [\n  {name: a, qubits: 2\n")
    proc = _run(["run", "--config", str(bad)], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "YAML syntax error" in proc.stderr and "line" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_run_then_compare(tmp_path):
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
    proc = _run(["bench", "sim", "--qubits", "3", "--json", str(out)], tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    cells = result["cells"]
    for name in ("fast_q3", "per_sample_q3", "broadcast_q3", "fast_noisy_q3", "default_mixed_q3"):
        assert cells[name]["step_s"] > 0, (name, cells[name])
        assert cells[name]["peak_rss_mb"] > 0
    assert "qubits | fast ms" in proc.stdout
    # the compiled batched path beats a Python loop over samples even at 3 qubits
    assert cells["per_sample_q3"]["step_s"] > cells["fast_q3"]["step_s"]


def test_bench_bad_qubits(tmp_path):
    proc = _run(["bench", "sim", "--qubits", "eight"], tmp_path, timeout=60)
    assert proc.returncode == 2 and "--qubits" in proc.stderr
