"""runner kind processes: the client tasks run on a process pool and report to the command's
temporary Prefect server, and to no other."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.server.api.server import SubprocessASGIServer

from flows.runners import RECORDER_BATCHING, prefect_api, server_environment
from flows.train import pqfl_train
from tests.servers import prefect_home
from tests.tiny import TINY, write_config

pytestmark = pytest.mark.timeout(600)


def _recorded_task_runs(db: Path, flow_run_id: str) -> dict[str, list[str]]:
    """From a Prefect database: each task run of the subflows of flow run ``flow_run_id``
    (the method's client tasks), with the types of the states recorded for it."""
    query = """
        SELECT t.name, s.type FROM task_run t JOIN task_run_state s ON s.task_run_id = t.id
        WHERE t.flow_run_id IN (SELECT f.id FROM flow_run f JOIN task_run p ON f.parent_task_run_id = p.id
                                WHERE p.flow_run_id = ?)
        ORDER BY s.timestamp"""
    runs: dict[str, list[str]] = {}
    with closing(sqlite3.connect(db)) as con:
        for name, state in con.execute(query, (flow_run_id,)):
            runs.setdefault(name, []).append(state)
    return runs


def test_a_process_pool_run_reports_to_the_temporary_server_alone(tmp_path, monkeypatch):
    """The pool's message forwarding thread runs without the command's settings context; it
    read Prefect's global settings, found no API and started a second, Prefect-owned
    temporary server in the process for the workers' events. The temporary server records
    task runs in batches (``RECORDER_BATCHING``): every task run and each of its states is
    in its database when the command's server has stopped."""
    for name in ("PREFECT_API_URL", *RECORDER_BATCHING):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", prefect_home(tmp_path / "prefect"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    federation = {**TINY["federation"], "methods": ["local"], "rounds": 1}
    cfg = write_config(tmp_path, federation=federation, runner={"kind": "processes", "max_workers": 2},
                       tracking={"log_models": False})  # fmt: skip
    before = set(map(id, SubprocessASGIServer._instances.values()))
    with prefect_api() as api, api.active():
        server_env = Path(f"/proc/{api.server.process.pid}/environ").read_bytes().split(b"\0")
        result = pqfl_train(str(cfg))
    assert set(map(id, SubprocessASGIServer._instances.values())) == before
    assert {f"{k}={v}".encode() for k, v in RECORDER_BATCHING.items()} <= set(server_env)
    parent = MlflowClient().get_run(result["mlflow_parent_run_ids"]["local"])
    runs = _recorded_task_runs(tmp_path / "prefect" / "prefect.db", parent.data.tags["prefect.flow_run_id"])
    expected = {f"{kind}-{c['name']}-r1" for kind in ("local-train", "evaluate") for c in TINY["clients"]}
    assert set(runs) >= expected
    assert all(runs[name] == ["PENDING", "RUNNING", "COMPLETED"] for name in expected), runs
    assert all(0.0 <= c["auroc"] <= 1.0 for c in result["methods"]["local"]["per_client"])


def test_the_temporary_servers_environment_batches_the_recorder_unless_the_user_sets_it():
    """Prefect's default (one task-run event per database transaction) is replaced in the
    temporary server only where the environment names no value; the UI stays off."""
    env = server_environment({"PATH": "/bin", "PREFECT_UI_ENABLED": "1"})
    assert env["PATH"] == "/bin" and env["PREFECT_UI_ENABLED"] == "0"
    assert {k: env[k] for k in RECORDER_BATCHING} == RECORDER_BATCHING
    mine = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"
    assert server_environment({mine: "1"})[mine] == "1"


def test_a_server_named_in_the_environment_after_prefect_was_imported_is_used(prefect_server, monkeypatch):
    """A process that imports Prefect, then sets ``PREFECT_API_URL`` and calls pqfl's entry
    point (a notebook, a test): Prefect's settings were read at import and lack the URL. pqfl
    launched no temporary server, then failed with an AttributeError waiting for one; it now
    reports to the named server, in the command's settings and in the process-wide ones."""
    from prefect.settings import PREFECT_API_URL

    def in_a_new_thread() -> str | None:  # a thread Prefect starts reads the global settings
        seen = []
        thread = threading.Thread(target=lambda: seen.append(PREFECT_API_URL.value()))
        thread.start()
        thread.join()
        return seen[0]

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    assert PREFECT_API_URL.value() != prefect_server  # the situation under test
    with prefect_api() as api, api.active() as url:
        assert api.server is None and url == prefect_server
        assert PREFECT_API_URL.value() == in_a_new_thread() == prefect_server
    assert PREFECT_API_URL.value() == in_a_new_thread() != prefect_server  # restored afterwards
