"""runner kind dask: the client tasks run on a real Dask cluster (two worker processes)
and give exactly the metrics of the default thread runner."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster, get_task_stream

from flows.runners import task_runner_for
from flows.train import pqfl_train
from pqfl.errors import PQFLInputError
from tasks.settings import RunnerConfig, load_run_config
from tests.servers import free_port, reporting_to, stop
from tests.tiny import write_config

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytestmark = pytest.mark.timeout(600)

METHODS = ["pqfl"]  # fans out training and evaluation to every client, aggregates, personalizes


@pytest.fixture(scope="module")
def cluster():
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        yield cluster, client


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory, prefect_server):
    """The tiny config trained once on threads and once on the Dask cluster, with the
    Dask scheduler's task stream recorded during the Dask run."""
    cluster, client = cluster
    folder = tmp_path_factory.mktemp("dask")
    cfg = write_config(folder)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    try:
        with reporting_to(prefect_server):
            started = time.perf_counter()
            threads = pqfl_train(str(cfg), {"federation.methods": METHODS, "runner.kind": "threads"})
            threads_s = time.perf_counter() - started
            started = time.perf_counter()
            with get_task_stream(client) as stream:
                dask = pqfl_train(
                    str(cfg),
                    {"federation.methods": METHODS, "runner.kind": "dask", "runner.address": cluster.scheduler_address},
                )
            dask_s = time.perf_counter() - started
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    print(f"\ntiny config, methods {METHODS}: threads {threads_s:.1f} s, dask {dask_s:.1f} s")
    return threads, dask, stream.data, client.run(os.getpid), load_run_config(cfg)


def _metrics(result: dict) -> dict:
    return {m: {k: v for k, v in r.items() if k not in ("wall_s", "timings")} for m, r in result["methods"].items()}


def test_dask_gives_the_thread_runners_metrics(runs):
    threads, dask, *_ = runs
    assert set(dask["methods"]) == set(METHODS)
    assert _metrics(dask) == _metrics(threads)
    assert dask["mlflow_parent_run_ids"] != threads["mlflow_parent_run_ids"]


def test_client_tasks_ran_in_the_dask_worker_processes(runs):
    _, _, stream, worker_pids, cfg = runs
    rounds, clients = cfg.federation.rounds, len(cfg.clients)
    by_kind: dict[str, list[str]] = {}
    for record in stream:
        by_kind.setdefault(record["key"].split("-")[0], []).append(record["worker"])
    # Per round of every federated method each client trains and, in every method, each client
    # is evaluated (centralized's one pooled trainer is not a fan-out: it may run in the flow).
    federated = [m for m in METHODS if m != "centralized"]
    assert len(by_kind.get("local_train", [])) >= rounds * clients * len(federated)
    assert len(by_kind.get("evaluate", [])) == rounds * clients * len(METHODS)
    workers = set(by_kind["local_train"]) | set(by_kind["evaluate"])
    assert workers == set(worker_pids), "both worker processes should have run client tasks"
    assert os.getpid() not in set(worker_pids.values())
    assert len(set(worker_pids.values())) == 2


def test_dask_without_address_starts_a_local_cluster_of_max_workers():
    runner = task_runner_for(RunnerConfig(kind="dask", max_workers=2))
    assert runner.address is None
    assert runner.cluster_kwargs["n_workers"] == 2 and runner.cluster_kwargs["processes"] is True
    remote = task_runner_for(RunnerConfig(kind="dask", address="tcp://10.0.0.5:8786"))
    assert remote.address == "tcp://10.0.0.5:8786" and remote.cluster_kwargs == {}


@pytest.mark.parametrize(
    "runner, needle",
    [
        ({"kind": "dask", "address": "10.0.0.5:8786"}, "runner.address"),
        ({"kind": "dask", "address": "tcp://10.0.0.5"}, "tcp://HOST:PORT"),
        ({"kind": "dask", "address": "tcp://host:70000"}, "port 1-65535"),
        ({"kind": "threads", "address": "tcp://host:8786"}, "kind: dask"),
        ({"kind": "ray"}, "runner.kind"),
    ],
)
def test_bad_runner_config_names_the_field(runner, needle, tmp_path):
    path = write_config(tmp_path, runner=runner)
    with pytest.raises(PQFLInputError, match=needle.replace(".", r"\.")) as err:
        load_run_config(path)
    assert str(path) in str(err.value)


def test_pqfl_run_on_a_cluster_started_with_the_dask_commands(runs, tmp_path):
    """The recipe of docs/dask.md on one machine: `dask scheduler`, `dask worker`, then
    `pqfl run --dask-address` from a plain shell (no Prefect settings): no client is
    dropped, the metrics equal the thread runner's, and the workers ran the tasks."""
    threads, *_ = runs
    bin_dir = Path(sys.executable).parent
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    procs = []
    try:
        for args, name in (
            (["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], "scheduler"),
            (
                ["worker", address, "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
                "worker",
            ),
        ):
            with open(tmp_path / f"{name}.log", "w") as log:
                procs.append(
                    subprocess.Popen(
                        [str(bin_dir / "dask"), *args],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            if name == "scheduler":
                deadline = time.monotonic() + 60
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
                        time.sleep(0.5)
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            client.get_task_stream()  # switch the scheduler's task stream on
            started = time.time()
            out = tmp_path / "out.json"
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "flows.cli",
                    "run",
                    "--config",
                    str(write_config(tmp_path)),
                    "--methods",
                    ",".join(METHODS),
                    "--dask-address",
                    address,
                    "--json",
                    str(out),
                ],
                capture_output=True,
                text=True,
                timeout=480,
                env=env,
                cwd=tmp_path,
            )
            assert proc.returncode == 0, proc.stderr[-4000:]
            stream = client.get_task_stream(start=started)
            worker_pids = client.run(os.getpid)
    finally:
        for p in reversed(procs):
            stop(p)
    assert "dropped" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    noise = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[pqfl] ")]
    assert noise == [], "only pqfl's own lines on stderr:\n" + "\n".join(noise[:20])
    result = json.loads(out.read_text())
    assert _metrics(result) == _metrics(threads)
    ran_on = {r["worker"] for r in stream if r["key"].startswith(("local_train", "evaluate"))}
    assert ran_on and ran_on <= set(worker_pids)
