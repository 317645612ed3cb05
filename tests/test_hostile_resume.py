"""`pqfl run --resume` against planted and tampered checkpoints, through the real CLI and a
real SQLite store: nothing planted runs, nothing outside the checkpoint root is read, and
each refusal is one line with exit code 2 that leaves the MLflow runs as they were."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main
from tests.servers import prefect_home
from tests.tiny import TINY, write_config

ROOT = Path(__file__).resolve().parent.parent
PQFL = [sys.executable, "-m", "flows.cli"]

pytestmark = pytest.mark.timeout(600)


class Planted:
    """Unpickling this creates the file ``path``: the code a trusted pickle would run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _env(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PQFL_FAULT_RATE", "PQFL_CHECKPOINT_DIR")}
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'store' / 'mlflow.db'}",
        PREFECT_HOME=prefect_home(folder / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(ROOT),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="240",
    )
    return env


def _cli(args: list[str], folder: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`pqfl ARGS` as a user runs it, in a new process."""
    return subprocess.run(PQFL + args, capture_output=True, text=True, timeout=300, env=env or _env(folder), cwd=folder)


@pytest.fixture
def cli(capsys, monkeypatch):
    """`pqfl ARGS` through the CLI's entry point in this process (a new process costs seconds
    of imports; each test still runs one case in a new process)."""

    def run(args: list[str], folder: Path, env: dict | None = None) -> subprocess.CompletedProcess:
        for key in ("PQFL_FAULT_RATE", "PQFL_CHECKPOINT_DIR"):
            monkeypatch.delenv(key, raising=False)
        for key, value in (env or _env(folder)).items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(folder)
        code = main(args)
        return subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)

    return run


@pytest.fixture(scope="module")
def served_env(prefect_server):
    """``_env`` reporting to the test worker's Prefect server, for the runs that get past the
    checks (the refusals stop before a server would start); this file's subject is the
    checkpoints, not the temporary server, whose start on a new database costs 10 s of CPU."""
    return lambda folder: {**_env(folder), "PREFECT_API_URL": prefect_server}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, served_env):
    """One finished `pqfl run` (pqfl, 1 round); its parent run id, checkpoint path and store."""
    folder = tmp_path_factory.mktemp("hostile")
    cfg = write_config(folder, federation={**TINY["federation"], "methods": ["pqfl"], "rounds": 1})
    proc = _cli(["run", "--config", str(cfg)], folder, served_env(folder))
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(_env(folder)["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs(
        [client.get_experiment_by_name(TINY["name"]).experiment_id], "tags.`pqfl.role` = 'parent'"
    )
    return folder, client, run.info.run_id, Path(run.data.tags["pqfl.checkpoint"])


def _refused(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pqfl: error: --resume: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _unchanged(client: MlflowClient, run_id: str) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "pqfl.failure" not in run.data.tags and "pqfl.resumes" not in run.data.tags


def test_a_planted_pickle_is_refused_and_never_runs(finished, cli):
    folder, client, run_id, ckpt = finished
    sentinel = folder / "planted-code-ran"
    good = ckpt.read_bytes()
    try:
        ckpt.write_bytes(pickle.dumps(Planted(str(sentinel))))
        _refused(_cli(["run", "--resume", run_id], folder), str(ckpt), "not a pqfl checkpoint", "start a new run")
        ckpt.write_bytes(good[: len(good) // 2])  # truncated
        _refused(cli(["run", "--resume", run_id], folder), "not a pqfl checkpoint")
    finally:
        ckpt.write_bytes(good)
    assert not sentinel.exists()
    _unchanged(client, run_id)


def test_an_invocation_tag_that_climbs_out_of_the_root_is_refused(finished, cli):
    folder, client, run_id, ckpt = finished
    sentinel = folder / "escaped-code-ran"
    evil = folder / "evil" / "inv"  # what ``../../evil/inv`` under the root would reach
    evil.mkdir(parents=True)
    (evil / "invocation.json").write_text(ckpt.parent.joinpath("invocation.json").read_text())
    (evil / "pqfl.ckpt").write_bytes(pickle.dumps(Planted(str(sentinel))))
    invocation = client.get_run(run_id).data.tags["pqfl.invocation"]
    try:
        client.set_tag(run_id, "pqfl.invocation", "../../evil/inv")
        _refused(cli(["run", "--resume", run_id], folder), "not a Prefect flow-run id")
    finally:
        client.set_tag(run_id, "pqfl.invocation", invocation)
    assert not sentinel.exists()


def test_a_checkpoint_tag_pointing_elsewhere_is_not_followed(finished, cli):
    folder, client, run_id, ckpt = finished
    sentinel = folder / "elsewhere-code-ran"
    elsewhere = folder / "elsewhere" / ckpt.parent.name
    elsewhere.mkdir(parents=True)
    (elsewhere / "invocation.json").write_text(ckpt.parent.joinpath("invocation.json").read_text())
    (elsewhere / "pqfl.ckpt").write_bytes(pickle.dumps(Planted(str(sentinel))))
    tag = client.get_run(run_id).data.tags["pqfl.checkpoint"]
    try:
        client.set_tag(run_id, "pqfl.checkpoint", str(elsewhere / "pqfl.ckpt"))
        _refused(
            cli(["run", "--resume", run_id], folder), "not under this store's checkpoint root", "PQFL_CHECKPOINT_DIR"
        )
        # Pointing PQFL_CHECKPOINT_DIR there on purpose still runs nothing from the file.
        env = {**_env(folder), "PQFL_CHECKPOINT_DIR": str(elsewhere.parent)}
        _refused(cli(["run", "--resume", run_id], folder, env), "not a pqfl checkpoint")
    finally:
        client.set_tag(run_id, "pqfl.checkpoint", tag)
    assert not sentinel.exists()
    _unchanged(client, run_id)


def test_a_manifest_that_is_not_json_is_refused_before_any_run_changes(finished, cli):
    folder, client, run_id, ckpt = finished
    manifest = ckpt.parent / "invocation.json"
    good = manifest.read_text()
    try:
        manifest.write_text("{not json")
        _refused(cli(["run", "--resume", run_id], folder), "invocation.json is not readable JSON")
    finally:
        manifest.write_text(good)
    _unchanged(client, run_id)


def test_resuming_a_finished_run_leaves_it_untouched(finished, served_env):
    """Every method of the invocation finished: the resume reports its results again and
    changes nothing in MLflow (not even the runs' end times)."""
    folder, client, run_id, _ = finished
    before = client.get_run(run_id).info
    proc = _cli(["run", "--resume", run_id], folder, served_env(folder))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finished before the resume" in proc.stderr and "pqfl" in proc.stdout
    after = client.get_run(run_id).info
    assert (after.status, after.end_time) == (before.status, before.end_time)
    _unchanged(client, run_id)
