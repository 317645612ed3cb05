"""Bad input through the `pqfl` command: one line naming the field or file and the fix,
exit code 2, no traceback, no MLflow run. tests/test_cli.py already covers negative lr and
λ, zero rounds, min_clients above the client count, duplicate client names, unknown
encoding and ansatz, a missing dataset or config file and YAML syntax errors; these are
the rest, hostile input included (unsafe names, NaN and boolean numbers, files that are
not UTF-8 or not numbers, values too long to echo, which the message cuts short). A
failure after a run has started (below quorum) marks that run FAILED."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from mlflow.tracking import MlflowClient

from flows.checkpoint import read_checkpoint
from flows.cli import main
from pqfl.config import MAX_QUBITS
from pqfl.fleet import MAX_FEATURES
from tests.tiny import TINY, write_config

PQFL = [sys.executable, "-m", "flows.cli"]
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("cli_reports_to_the_worker_server")]


def _run(args, tmp_path, extra_env: dict | None = None, timeout=120):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"}
    env.pop("PQFL_FAULT_RATE", None)
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(ROOT), **(extra_env or {})})
    return subprocess.run(PQFL + args, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def _odds(path: Path, X: np.ndarray, y: np.ndarray) -> str:
    scipy.io.savemat(path, {"X": X, "y": y.reshape(-1, 1)})
    return f"odds:{path}"


def _rows(n: int = 60, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)), (np.arange(n) % 5 == 0).astype(float)


def _with_source(tmp_path: Path, source: str, clients: list | None = None) -> list[str]:
    sections = {"dataset": {"source": source, "max_samples": None}}
    if clients is not None:
        sections["clients"] = clients
    return ["run", "--config", str(write_config(tmp_path, **sections))]


def corrupt_mat(p: Path):
    bad = p / "corrupt.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 3)
    return _with_source(p, f"odds:{bad}"), ["corrupt.mat", "not a readable MATLAB .mat file"]


def nan_features(p: Path):
    X, y = _rows()
    X[[3, 7], 2] = np.nan
    return _with_source(p, _odds(p / "nan.mat", X, y)), [
        "nan.mat",
        "2 rows have NaN or infinite features",
        "clean or impute",
    ]


def inf_features(p: Path):
    X, y = _rows()
    X[5, 0] = np.inf
    return _with_source(p, _odds(p / "inf.mat", X, y)), ["inf.mat", "1 rows have NaN or infinite features"]


def labels_not_binary(p: Path):
    X, y = _rows()
    y[:4] = 2
    return _with_source(p, _odds(p / "labels.mat", X, y)), [
        "labels.mat",
        "labels must be 0 (normal) or 1 (anomaly)",
        "2.0]",
    ]


def more_features_than_the_encodings_take(p: Path):
    X, y = _rows(d=MAX_FEATURES + 1)
    return _with_source(p, _odds(p / "wide.mat", X, y)), [f"{MAX_FEATURES + 1} features", "reduce the features"]


def encoding_needs_more_features_than_the_data_has(p: Path):
    X, y = _rows(d=2)
    clients = [{"name": "angle-3q", "qubits": 3, "layers": 1, "encoding": "angle"}]
    return _with_source(p, _odds(p / "narrow.mat", X, y), clients), [
        "clients.angle-3q.qubits",
        "needs 3 features",
        "at most 2",
    ]


def qubits_beyond_the_simulator(p: Path):
    q = MAX_QUBITS + 4
    gib = 64 * 16 * 2**q / 2**30  # a batch of 64 complex128 state vectors
    clients = [{**TINY["clients"][0], "qubits": q}]
    return ["run", "--config", str(write_config(p, clients=clients))], [
        "clients.0.qubits",
        f"{gib:,.1f} GiB",
        f"at most {MAX_QUBITS}",
    ]


def unknown_device(p: Path):
    clients = [{"name": "dev", "from_device": "FakeNowhere"}]
    return ["run", "--config", str(write_config(p, clients=clients))], ["clients.0", "unknown device 'FakeNowhere'"]


def fault_rate_env(p: Path):
    return ["run", "--config", str(write_config(p))], ["PQFL_FAULT_RATE", "between 0 and 1"]


def unknown_fault_client(p: Path):
    return ["run", "--config", str(write_config(p, faults={"outage": {"nobody": [1]}}))], ["faults.outage", "'nobody'"]


def _with_config(p: Path, **sections) -> list[str]:
    return ["run", "--config", str(write_config(p, **sections))]


def empty_experiment_name(p: Path):
    return _with_config(p, name=""), [f"{p / 'config.yaml'}: name: ", "1-128 letters, digits", "(got '')"]


def long_experiment_name(p: Path):
    return _with_config(p, name="x" * 600), [": name: ", "1-128 letters", "(602 characters)"]


def experiment_name_climbing_out(p: Path):
    return _with_config(p, name="../x"), [": name: ", "starting with a letter or digit", "(got '../x')"]


def experiment_path_as_tracking_experiment(p: Path):
    return _with_config(p, tracking={"experiment": "/tmp/x"}), ["tracking.experiment", "(got '/tmp/x')"]


def client_name_with_a_slash(p: Path):
    clients = [{**TINY["clients"][0], "name": "a/b"}]
    return _with_config(p, clients=clients), ["clients.0.name", "1-64 letters, digits", "(got 'a/b')"]


def nan_lr(p: Path):
    return _with_config(p, federation={"lr": float("nan")}), ["federation.lr", "finite number", "nan"]


def infinite_lambda(p: Path):
    return _with_config(p, federation={"lambda": float("inf")}), ["federation.lambda", "finite number", "inf"]


def boolean_seed(p: Path):
    return _with_config(p, federation={"seed": True}), ["federation.seed", "an integer, not true or false"]


def boolean_rounds(p: Path):
    return _with_config(p, federation={"rounds": True}), ["federation.rounds", "an integer, not true or false"]


def batch_size_beyond_every_client(p: Path):
    return _with_config(p, federation={"batch_size": 10_000_000_000}), [
        "federation.batch_size: 10000000000",
        "training rows of all 3 clients together (the largest client has",
        "use a batch_size of at most",
    ]


def latin1_config(p: Path):
    path = write_config(p)
    path.write_bytes(("# caf\u00e9 settings\n" + path.read_text()).encode("latin-1"))
    return ["run", "--config", str(path)], [str(path), "not UTF-8", "save it as UTF-8"]


def duplicate_csv_column(p: Path):
    X, y = _rows()
    lines = ["f0,label,f1,label"] + [f"{a},{int(b)},{c},{int(b)}" for a, b, c in zip(X[:, 0], y, X[:, 1])]
    (p / "dup.csv").write_text("\n".join(lines) + "\n")
    return _with_source(p, f"csv:{p / 'dup.csv'}#label=label"), ["dup.csv", "['label']", "unique name"]


def values_overflowing_the_statistics(p: Path):
    X, y = _rows()
    pd.DataFrame({"f0": X[:, 0] * 1e300, "f1": X[:, 1], "label": y.astype(int)}).to_csv(p / "big.csv", index=False)
    return _with_source(p, f"csv:{p / 'big.csv'}#label=label"), ["big.csv", "overflow", "rescale the features"]


def string_mat(p: Path):
    _, y = _rows(n=4)
    scipy.io.savemat(p / "text.mat", {"X": np.array(["abc", "def", "ghi", "jkl"]), "y": y.reshape(-1, 1)})
    return _with_source(p, f"odds:{p / 'text.mat'}"), ["text.mat", "X holds text", "numeric"]


def complex_mat(p: Path):
    X, y = _rows()
    return _with_source(p, _odds(p / "complex.mat", X + 1j, y)), ["complex.mat", "X holds complex numbers"]


def huge_dataset_source(p: Path):
    return ["run", "--config", str(write_config(p)), "--dataset", "odds:" + "x" * 20_000_000], [
        "dataset.source",
        "characters)",
    ]


def huge_unknown_source(p: Path):
    return _with_source(p, "nope:" + "x" * 2_000_000), ["dataset.source: unknown dataset source", "characters)"]


def no_anomalies_at_all(p: Path):
    X, _ = _rows()
    return _with_source(p, _odds(p / "normal.mat", X, np.zeros(len(X)))), ["has no anomalies (y = 1 rows)"]


def tiny_max_samples(p: Path):
    return _with_config(p, dataset={"max_samples": 12}), [
        "dataset.max_samples: 12",
        "3 clients",
        "raise max_samples",
    ]


def empty_methods_flag(p: Path):
    return ["run", "--config", str(write_config(p)), "--methods", ""], ["--methods", "no method"]


def blank_methods_flag(p: Path):
    return ["run", "--config", str(write_config(p)), "--methods", " , "], ["--methods", "no method", "' , '"]


def method_the_settings_cannot_run(p: Path):
    # local would run; fedenc after it cannot, and nothing may train before that is known
    fed = {**TINY["federation"], "methods": ["local", "fedenc"], "objective": "one_class"}
    return _with_config(p, federation=fed), ["federation.objective: fedenc", "use objective: supervised"]


def attack_that_leaves_shared_scores_honest(p: Path):
    fed = {**TINY["federation"], "methods": ["pqfl", "feddistill"], "attack": {"kind": "sign_flip", "fraction": 0.34}}
    return _with_config(p, federation=fed), ["federation.attack: sign_flip", "feddistill", "label_flip"]


CASES = {
    f.__name__: f
    for f in (
        corrupt_mat,
        nan_features,
        inf_features,
        labels_not_binary,
        more_features_than_the_encodings_take,
        encoding_needs_more_features_than_the_data_has,
        qubits_beyond_the_simulator,
        unknown_device,
        fault_rate_env,
        unknown_fault_client,
        empty_experiment_name,
        long_experiment_name,
        experiment_name_climbing_out,
        experiment_path_as_tracking_experiment,
        client_name_with_a_slash,
        nan_lr,
        infinite_lambda,
        boolean_seed,
        boolean_rounds,
        batch_size_beyond_every_client,
        latin1_config,
        duplicate_csv_column,
        values_overflowing_the_statistics,
        string_mat,
        complex_mat,
        huge_dataset_source,
        huge_unknown_source,
        no_anomalies_at_all,
        tiny_max_samples,
        empty_methods_flag,
        blank_methods_flag,
        method_the_settings_cannot_run,
        attack_that_leaves_shared_scores_honest,
    )
}


def _check_one_line(code: int, stderr: str, needles: list[str], tmp_path: Path) -> None:
    assert code == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith("pqfl: error: ")
    assert len(lines[0]) <= 1500, lines[0][:3000]  # values are cut short, not echoed whole
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in stderr
    assert not (tmp_path / "store").exists(), "bad input must not start an MLflow run"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_no_run(case, tmp_path, capsys, monkeypatch):
    """Each case through the CLI's entry point in this process (a new process costs
    seconds of imports; test_cli.py and the test below check the process boundary)."""
    args, needles = CASES[case](tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.delenv("PQFL_FAULT_RATE", raising=False)
    if case == "fault_rate_env":
        monkeypatch.setenv("PQFL_FAULT_RATE", "1.5")
    code = main(args)
    _check_one_line(code, capsys.readouterr().err, needles, tmp_path)


def test_bad_data_file_as_a_user_runs_it(tmp_path):
    args, needles = corrupt_mat(tmp_path)
    proc = _run(args, tmp_path)
    _check_one_line(proc.returncode, proc.stderr, needles, tmp_path)


def test_client_name_climbing_out_of_the_store_as_a_user_runs_it(tmp_path):
    """A client name that would be a path outside the store is refused before anything is written."""
    token = f"pqfl-escape-{uuid.uuid4().hex[:12]}"
    name = f"../../{token}"
    config = write_config(tmp_path, clients=[{**TINY["clients"][0], "name": name}])
    proc = _run(["run", "--config", str(config)], tmp_path)
    _check_one_line(proc.returncode, proc.stderr, ["clients.0.name", f"(got '{name}')"], tmp_path)
    assert not list(tmp_path.rglob(f"*{token}*"))
    for folder in (tmp_path.parent, tmp_path.parent.parent, Path("/tmp")):
        assert not list(folder.glob(f"*{token}*")), folder


def test_failure_after_the_run_started_marks_it_failed(tmp_path, capsys, monkeypatch):
    """Below quorum in round 2: exit 1 with one closing line, the run FAILED with its reason,
    no run left RUNNING, the round-1 checkpoint intact. In this process: test_failure_contract
    checks a failed run's exit across the process boundary."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.delenv("PQFL_FAULT_RATE", raising=False)
    monkeypatch.chdir(tmp_path)
    federation = {**TINY["federation"], "methods": ["pqfl"], "rounds": 2, "min_clients": 3}
    cfg = write_config(
        tmp_path, federation=federation, faults={"permanent": {"amp-3q": [2]}}, retries={"backoff_s": 0.01}
    )
    code, err = main(["run", "--config", str(cfg)]), capsys.readouterr().err
    assert code == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("pqfl: run failed: pqfl round 2: only 2 of 3 clients")
    assert "federation.min_clients = 3" in last and "--resume" in last
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(TINY["name"])
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.status for r in runs} == {"FAILED"} and len(runs) == 1 + len(TINY["clients"])
    (parent,) = [r for r in runs if r.data.tags.get("pqfl.role") == "parent"]
    assert "PQFLRunError" in parent.data.tags["pqfl.failure"] and "min_clients" in parent.data.tags["pqfl.failure"]
    assert parent.info.run_id in last
    ckpt = read_checkpoint(parent.data.tags["pqfl.checkpoint"])
    assert ckpt.round == 1 and not ckpt.finished
