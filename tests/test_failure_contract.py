"""One failure contract for `pqfl run`: what it cannot write or reach is refused before
anything starts (one line, exit 2, no run); a failure after the start ends with one
`pqfl: run failed:` line, exit 1, the traceback in a log file and in MLflow, and the runs
FAILED; processes opening a new store at once, and two runs started at once on it, all finish."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main
from tests.servers import free_port, prefect_home
from tests.tiny import TINY, write_config

ROOT = Path(__file__).resolve().parent.parent
PQFL = [sys.executable, "-m", "flows.cli"]

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("cli_reports_to_the_worker_server")]


def _one_line(code: int, stderr: str, expected_code: int, *needles: str) -> str:
    assert code == expected_code, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("[pqfl]")]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def store_is_a_folder(tmp: Path) -> tuple[dict, list[str], list[str]]:
    (tmp / "db").mkdir()
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'db'}"}, [], ["is a folder"]


def store_is_corrupt(tmp: Path):
    (tmp / "corrupt.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'corrupt.db'}"}, [], ["not a readable SQLite database"]


def store_is_not_mlflow(tmp: Path):
    with sqlite3.connect(tmp / "other.db") as db:
        db.execute("CREATE TABLE inventory (item TEXT)")
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'other.db'}"}, [], ["not an MLflow store", "refusing"]


def store_does_not_answer(tmp: Path):
    uri = f"http://127.0.0.1:{free_port()}"
    return {"MLFLOW_TRACKING_URI": uri, "PQFL_CHECKPOINT_DIR": str(tmp / "ckpt")}, [], ["does not answer", uri]


def json_is_a_folder(tmp: Path):
    (tmp / "out").mkdir()
    return {}, ["--json", str(tmp / "out")], ["--json", "is a folder"]


def json_under_a_file(tmp: Path):
    (tmp / "plain").write_text("x")
    return {}, ["--json", str(tmp / "plain" / "out.json")], ["--json", "under the regular file"]


def checkpoints_under_a_file(tmp: Path):
    (tmp / "plain").write_text("x")
    return {"PQFL_CHECKPOINT_DIR": str(tmp / "plain" / "ckpt")}, [], ["PQFL_CHECKPOINT_DIR", "cannot be written"]


def dask_scheduler_does_not_answer(tmp: Path):
    address = f"tcp://127.0.0.1:{free_port()}"
    return {}, ["--dask-address", address], ["--dask-address", address, "does not answer"]


CASES = {f.__name__: f for f in (store_is_a_folder, store_is_corrupt, store_is_not_mlflow, store_does_not_answer,
                                  json_is_a_folder, json_under_a_file, checkpoints_under_a_file,
                                  dask_scheduler_does_not_answer)}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_what_the_run_cannot_write_or_reach_is_refused_before_it_starts(case, tmp_path, capsys, monkeypatch):
    env, args, needles = CASES[case](tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.delenv("PQFL_CHECKPOINT_DIR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    code = main(["run", "--config", str(write_config(tmp_path)), *args])
    line = _one_line(code, capsys.readouterr().err, 2, *needles)
    assert line.startswith("pqfl: error: ")
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert {p: t for p, t in after.items() if p.name != "config.yaml"} == {
        p: t for p, t in before.items() if p.name != "config.yaml"
    }, "nothing is created or changed before the run starts"


def test_compare_on_a_corrupt_store_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "mlflow.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = main(["compare"])
    _one_line(code, capsys.readouterr().err, 2, "pqfl: error: ", "not a readable SQLite database")


def _env(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PQFL_FAULT_RATE", "PREFECT_API_URL", "QISKIT_IBM_TOKEN")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'store' / 'mlflow.db'}", PREFECT_HOME=prefect_home(folder / "prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="240")  # fmt: skip
    return env


def test_an_unexpected_failure_after_the_start_is_one_line_exit_1_and_failed_runs(tmp_path):
    """An IBM Quantum client without a token trains, then its hardware evaluation fails: one
    line naming the error and the log file, the traceback in that file and in MLflow. On
    the temporary Prefect server, as a user without a server of their own runs it."""
    ibm = {"name": "ibm-client", "qubits": 2, "layers": 1, "encoding": "angle", "backend": "ibm_runtime",
           "device": "ibm_nowhere"}  # fmt: skip
    federation = {**TINY["federation"], "methods": ["pqfl"], "rounds": 1}
    cfg = write_config(tmp_path, federation=federation, clients=[*TINY["clients"], ibm])
    proc = subprocess.run(PQFL + ["run", "--config", str(cfg)], capture_output=True, text=True, timeout=300,
                          env=_env(tmp_path), cwd=tmp_path)  # fmt: skip
    line = _one_line(proc.returncode, proc.stderr, 1, "pqfl: run failed: MissingTokenError", "QISKIT_IBM_TOKEN")
    log = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text() and "MissingTokenError" in log.read_text()
    client = MlflowClient(_env(tmp_path)["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name(TINY["name"]).experiment_id])
    assert {r.info.status for r in runs} == {"FAILED"}
    (parent,) = [r for r in runs if r.data.tags.get("pqfl.role") == "parent"]
    assert "MissingTokenError" in parent.data.tags["pqfl.failure"]
    failure = client.download_artifacts(parent.info.run_id, "failure.txt", str(tmp_path))
    assert "Traceback" in Path(failure).read_text()


def _failures(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    """The end of the stderr of each process that exited non-zero, after waiting for all."""
    errs = [proc.communicate(timeout=timeout)[1] for proc in procs]
    return [err[-1500:] for proc, err in zip(procs, errs) if proc.returncode != 0]


def test_processes_opening_new_stores_at_once_create_each_schema_once(tmp_path):
    """Five new stores, each opened by two processes at once (all ten together): MLflow's
    schema is created under a lock, and every process gets a working store. Without the lock
    (plain ``MlflowClient``) this failed in every one of three trials, in SQLAlchemy or
    Alembic's migration."""
    code = "import sys; from flows.tracking import open_store; open_store(sys.argv[1]).search_experiments()"
    uris = [f"sqlite:///{tmp_path / f'store{k}' / 'mlflow.db'}" for k in range(5)]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
        for uri in uris
        for _ in range(2)
    ]
    failed = _failures(procs, timeout=300)
    assert not failed, failed
    for uri in uris:
        assert MlflowClient(uri).search_experiments()[0].name == "Default"


def test_two_runs_started_at_once_on_a_new_store_both_finish(tmp_path, prefect_server):
    """Two `pqfl run` at once on one new store, the way a scheduler starts them: both create
    the store, the experiment and their runs, and both finish."""
    federation = {**TINY["federation"], "methods": ["local"], "rounds": 1}
    cfg = write_config(tmp_path, federation=federation, dataset={"max_samples": 400}, tracking={"log_models": False})
    env = {**_env(tmp_path), "PREFECT_API_URL": prefect_server}
    procs = [
        subprocess.Popen(
            PQFL + ["run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )  # fmt: skip
        for _ in range(2)
    ]
    failed = _failures(procs, timeout=500)
    assert not failed, failed
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(
        [client.get_experiment_by_name(TINY["name"]).experiment_id], "tags.`pqfl.role` = 'parent'"
    )
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
