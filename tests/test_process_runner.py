"""runner kind processes: the client tasks run on a process pool and report to the command's
temporary Prefect server, and to no other."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
from mlflow.tracking import MlflowClient
from prefect.server.api.server import SubprocessASGIServer

from flows.runners import prefect_api
from flows.train import pqfl_train
from tests.tiny import TINY, write_config

pytestmark = pytest.mark.timeout(600)


def _post(url: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _task_runs_under(url: str, flow_run_id: str) -> list[dict]:
    """The task runs of the subflows of flow run ``flow_run_id`` (the method's client tasks)."""
    subflows = _post(url, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}})
    return _post(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [f["id"] for f in subflows]}}})


def test_a_process_pool_run_reports_to_the_temporary_server_alone(tmp_path, monkeypatch):
    """The pool's message forwarding thread runs without the command's settings context; it
    read Prefect's global settings, found no API and started a second, Prefect-owned
    temporary server in the process for the workers' events."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    federation = {**TINY["federation"], "methods": ["local"], "rounds": 1}
    cfg = write_config(tmp_path, federation=federation, runner={"kind": "processes", "max_workers": 2},
                       tracking={"log_models": False})  # fmt: skip
    before = set(map(id, SubprocessASGIServer._instances.values()))
    with prefect_api() as api, api.active() as url:
        result = pqfl_train(str(cfg))
        parent = MlflowClient().get_run(result["mlflow_parent_run_ids"]["local"])
        runs = _task_runs_under(url, parent.data.tags["prefect.flow_run_id"])
    assert set(map(id, SubprocessASGIServer._instances.values())) == before
    trained = [r for r in runs if r["name"].startswith("local-train-")]
    assert len(trained) == len(TINY["clients"]) and {r["state_type"] for r in trained} == {"COMPLETED"}
    assert all(0.0 <= c["auroc"] <= 1.0 for c in result["methods"]["local"]["per_client"])


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
