"""The deployments as an operator runs them, against a real Prefect server on 127.0.0.1.

The test starts ``prefect server start`` with its own PREFECT_HOME and database, runs
``deployments/deploy.sh`` (work pool + ``prefect --no-prompt deploy --all``), checks that
the nightly benchmark's cron schedule is registered and has produced scheduled runs,
triggers ``pqfl-train`` on the tiny config with ``prefect deployment run``, lets a process
worker (``deployments/worker.sh --run-once``) execute it, and reads the run's round
metrics back from MLflow. Every process it starts is bounded in time and killed with its
process group, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.tracking import PARENT_TAG
from pqfl.config import load_config
from tests.servers import prefect_home, reporting_to
from tests.tiny import TINY, write_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
NIGHTLY = DEPLOYMENTS["pqfl-nightly-benchmark"]
METHODS = ["pqfl", "fedavg"]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Terminate a process started with start_new_session=True and everything it spawned."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
        except ProcessLookupError:
            pass
    try:  # children that outlived the leader (e.g. a flow-run subprocess)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


class Server:
    def __init__(self, api: str, env: dict[str, str], folder: Path):
        self.api, self.env, self.folder = api, env, folder
        self.http = httpx.Client(base_url=api, timeout=30)
        self.timings: dict[str, float] = {}

    def post(self, path: str, body: dict | None = None):
        response = self.http.post(path, json=body or {})
        response.raise_for_status()
        return response.json()

    def get(self, path: str):
        response = self.http.get(path)
        response.raise_for_status()
        return response.json()

    def run(
        self, name: str, args: list[str], timeout: float, extra_env: dict | None = None
    ) -> subprocess.CompletedProcess:
        started = time.perf_counter()
        proc = subprocess.run(
            args, cwd=ROOT, env={**self.env, **(extra_env or {})}, capture_output=True, text=True, timeout=timeout
        )
        self.timings[name] = time.perf_counter() - started
        assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def deployment(self, name: str) -> dict:
        matches = [d for d in self.post("/deployments/filter") if d["name"] == name]
        assert len(matches) == 1, f"expected one deployment {name!r}, found {len(matches)}"
        return matches[0]

    def runs_of(self, deployment_id: str) -> list[dict]:
        return self.post("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prefect")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PREFECT_HOME=prefect_home(folder / "home"),  # a copy of a served database: no migrations
        PREFECT_API_URL=api,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{folder / 'home' / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",  # schedule the cron runs promptly
        PREFECT_CLI_WRAP_LINES="false",
        PREFECT=str(BIN / "prefect"),  # deployments/*.sh use this executable
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    log = folder / "server.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"prefect server exited early:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"prefect server not healthy after 120 s:\n{_tail(log)}"
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        srv = Server(api, env, folder)
        srv.timings["server start"] = time.perf_counter() - started
        yield srv
        server_log = log.read_text(errors="replace")
        assert "Traceback" not in server_log, f"the server logged an error:\n{_tail(log, 60)}"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def deployed(server):
    proc = server.run("deploy.sh", ["bash", "deployments/deploy.sh"], timeout=180)
    assert "Traceback" not in proc.stdout + proc.stderr
    return server


@pytest.fixture(scope="module")
def train_run(deployed, tmp_path_factory):
    """pqfl-train triggered from the CLI on the tiny config, executed by a run-once worker."""
    server = deployed
    folder = tmp_path_factory.mktemp("train")
    config = write_config(folder)
    store = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    # One injected transient fault per few jobs, retried at once: the retries' reasons must
    # reach the Prefect API's task-run logs.
    overrides = {"federation.methods": METHODS, "faults.transient_rate": 0.3, "retries.backoff_s": 0.01}
    server.run(
        "deployment run",
        [
            str(BIN / "prefect"),
            "deployment",
            "run",
            "pqfl-train/pqfl-train",
            "--param",
            f"config_path={config}",
            "--params",
            json.dumps({"overrides": overrides}),
        ],
        timeout=120,
    )
    train = server.deployment("pqfl-train")
    runs = server.runs_of(train["id"])
    assert len(runs) == 1, runs
    run_id = runs[0]["id"]

    log = folder / "worker.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        worker = subprocess.Popen(
            ["bash", "deployments/worker.sh", "--run-once"],
            cwd=ROOT,
            env={**server.env, "MLFLOW_TRACKING_URI": store},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            worker.wait(timeout=480)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 60  # the run-once worker returns once its run has ended
        while (run := server.get(f"/flow_runs/{run_id}"))["state_type"] not in TERMINAL:
            assert time.monotonic() < deadline, f"flow run still {run['state_type']}:\n{_tail(log)}"
            time.sleep(1)
    finally:
        _stop(worker)
    server.timings["worker run"] = time.perf_counter() - started
    return run, MlflowClient(tracking_uri=store), load_config(config), log.read_text(errors="replace")


def test_deploy_registers_every_deployment_on_the_process_pool(deployed):
    pool = deployed.get(f"/work_pools/{NIGHTLY['work_pool']['name']}")
    assert pool["type"] == "process"
    for name, spec in DEPLOYMENTS.items():
        dep = deployed.deployment(name)
        assert dep["entrypoint"] == spec["entrypoint"]
        assert dep["work_pool_name"] == spec["work_pool"]["name"]
        assert dep["parameters"] == spec["parameters"]
        # the worker starts flow runs in the checkout the deployment was made from
        assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    assert deployed.deployment("pqfl-train")["schedules"] == []


@pytest.mark.parametrize(
    "name, flow_name, days",
    [("pqfl-nightly-benchmark", "pqfl-benchmark", 1), ("pqfl-weekly-regime-map", "pqfl-regime-map", 7)],
)
def test_scheduled_deployments_cron_is_registered_and_scheduled(deployed, name, flow_name, days):
    wanted = DEPLOYMENTS[name]["schedules"][0]
    dep = deployed.deployment(name)
    flow = deployed.get(f"/flows/{dep['flow_id']}")
    assert flow["name"] == flow_name
    [schedule] = dep["schedules"]
    assert schedule["active"] is True
    assert schedule["schedule"]["cron"] == wanted["cron"]
    assert schedule["schedule"]["timezone"] == wanted["timezone"] == "UTC"

    # The server's scheduler turns the cron into upcoming runs: every one at the cron's
    # minute and hour (UTC), ``days`` apart, the first within the next ``days``.
    minute, hour = (int(v) for v in wanted["cron"].split()[:2])
    deadline = time.monotonic() + 60
    while not (runs := [r for r in deployed.runs_of(dep["id"]) if r["state_type"] == "SCHEDULED"]):
        assert time.monotonic() < deadline, f"no scheduled runs for {name} after 60 s"
        time.sleep(1)
    starts = sorted(datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")) for r in runs)
    now = datetime.now(UTC)
    for start in starts:
        assert (start.hour, start.minute, start.second) == (hour, minute, 0), start
    assert now < starts[0] <= now + timedelta(days=days)
    assert all(b - a == timedelta(days=days) for a, b in zip(starts, starts[1:]))
    if days == 7:  # cron weekday 0 is Sunday
        assert {s.weekday() for s in starts} == {6}


def test_triggered_train_run_completes_and_logs_round_metrics(train_run, deployed):
    run, client, cfg, worker_log = train_run
    assert run["state_type"] == "COMPLETED", worker_log[-4000:]
    assert run["parameters"]["overrides"]["federation.methods"] == METHODS
    assert "Traceback" not in worker_log

    experiment = client.get_experiment_by_name(TINY["name"])
    assert experiment is not None
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = 'parent' and tags.`prefect.flow_run_id` = '{run['id']}'",
    )
    assert sorted(p.data.tags["pqfl.method"] for p in parents) == sorted(METHODS)
    rounds = list(range(1, cfg.federation.rounds + 1))
    for parent in parents:
        assert parent.info.status == "FINISHED"
        for metric in (
            "test/mean_auroc", "test/worst_auroc", "test/mean_aupr", "test/mean_false_error", "test/mean_missing_error"
        ):  # fmt: skip
            history = client.get_metric_history(parent.info.run_id, metric)
            assert sorted(m.step for m in history) == rounds, metric
            assert all(0.0 <= m.value <= 1.0 for m in history), metric
        mean = {m.step: m.value for m in client.get_metric_history(parent.info.run_id, "test/mean_auroc")}
        worst = {m.step: m.value for m in client.get_metric_history(parent.info.run_id, "test/worst_auroc")}
        assert all(worst[k] <= mean[k] for k in rounds)
    print("\ndeployment test timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in deployed.timings.items()))


def test_prefect_shows_the_runs_logs_names_tags_and_results(train_run, deployed):
    """What a Prefect user looks for in the UI, read back through the API: subflow runs
    named after their methods and tagged with method, config and invocation; the round
    lines and the reasons of retried tasks in the logs; the results table artifact with
    links to the MLflow runs."""
    run, client, cfg, worker_log = train_run
    flows = {f["id"]: f["name"] for f in deployed.post("/flows/filter")}
    runs = [r for r in deployed.post("/flow_runs/filter") if flows[r["flow_id"]] == "pqfl-method"]
    subflows = {r["name"]: r for r in runs if r["parameters"]["parent_flow_run_id"] == run["id"]}
    assert set(subflows) == set(METHODS)
    invocation = {t for r in subflows.values() for t in r["tags"] if t.startswith("invocation:")}
    assert len(invocation) == 1
    for method, sub in subflows.items():
        assert {f"method:{method}", f"config:{cfg.name}"} <= set(sub["tags"])
    logs = deployed.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [r["id"] for r in subflows.values()]}}})
    messages = [entry["message"] for entry in logs]
    rounds = cfg.federation.rounds
    for method in METHODS:
        assert any(m.startswith(method) and f"round  {rounds}/{rounds}  mean AUROC" in m for m in messages), method
    retried = [
        entry for entry in logs if "Retry 1/" in entry["message"] and "injected transient fault" in entry["message"]
    ]
    assert retried and all(entry["task_run_id"] for entry in retried), messages[:20]
    [artifact] = deployed.post("/artifacts/filter", {"artifacts": {"key": {"any_": ["pqfl-results"]}}})
    assert artifact["type"] == "markdown" and artifact["flow_run_id"] == run["id"]
    parents = client.search_runs(
        [client.get_experiment_by_name(TINY["name"]).experiment_id], "tags.`pqfl.role` = 'parent'"
    )
    for parent in parents:
        assert f"/runs/{parent.info.run_id})" in artifact["data"]
        assert deployed.api.removesuffix("/api") in parent.data.tags["mlflow.note.content"]  # the Prefect flow-run page


def test_the_nightly_flow_runs_on_a_fresh_clone_with_its_defaults(server, tmp_path, monkeypatch):
    """The nightly deployment's flow with the parameters prefect.yaml gives it, in a copy of
    the tracked files (what a fresh clone holds), at a tiny size: it needs nothing that is
    not in the repository or shipped with the dependencies."""
    from flows.benchmark import pqfl_benchmark

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    clone = tmp_path / "clone"
    for name in files:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        (clone / name).write_bytes((ROOT / name).read_bytes())
    monkeypatch.chdir(clone)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PQFL_CHECKPOINT_DIR", raising=False)
    # batch 16 as the embedded default's: its four circuits then share their compiled steps with
    # the default's run in test_packaging (at batch 64 three of them were shared with the
    # three-client example's; one compile fewer on an empty cache, whichever test runs first)
    tiny = {"federation.rounds": 1, "federation.local_epochs": 1, "federation.batch_size": 16,
            "federation.methods": ["pqfl"]}  # fmt: skip
    with reporting_to(server.api):  # the logs reach this server, not a stopped one later
        result = pqfl_benchmark(**NIGHTLY["parameters"], overrides=tiny, seeds=[0])
    assert {r["dataset"] for r in result["rows"]} == {"digits-0", "breast-cancer"}
    assert {r["method"] for r in result["rows"]} >= {"pqfl", "logreg-client"}
    assert (clone / NIGHTLY["parameters"]["json_out"]).is_file()
    assert (clone / "mlruns" / "mlflow.db").is_file()


def test_pqfl_run_reports_to_the_users_prefect_server(server, tmp_path):
    """`pqfl run` with ``PREFECT_API_URL`` set uses that server (no temporary one), prints
    the flow run's page on it, keeps the console to its own lines, and the server holds the
    run's logs: the round lines of each method's subflow and the one-line pqfl messages."""
    config = write_config(tmp_path)
    env = {**server.env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    proc = subprocess.run(
        [str(BIN / "pqfl"), "run", "--config", str(config), "--methods", "local", "--rounds", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [page] = [line.split()[-1] for line in proc.stderr.splitlines() if line.startswith("[pqfl] Prefect flow run ")]
    ui = server.api.removesuffix("/api")
    assert page.startswith(f"{ui}/runs/flow-run/")
    flow_run = server.get(f"/flow_runs/{page.rsplit('/', 1)[1]}")
    assert flow_run["state_type"] == "COMPLETED"
    # the console: pqfl's own lines and the table, nothing of Prefect's INFO logging
    assert all(line.startswith("[pqfl]") for line in proc.stderr.splitlines()), proc.stderr[-3000:]
    [sub] = server.post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run["id"]]}}})
    assert sub["name"] == "local"
    deadline = time.monotonic() + 30  # the API log handler ships in batches
    while True:
        logs = server.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [sub["id"]]}}})
        if any(e["message"].startswith("local ") and "round  1/1  mean AUROC" in e["message"] for e in logs):
            break
        assert time.monotonic() < deadline, [entry["message"] for entry in logs]
        time.sleep(1)
