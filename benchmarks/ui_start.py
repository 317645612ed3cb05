"""What does ``pqfl ui`` cost to start, with and without MLflow's job runners?

``mlflow server`` starts job runners (huey consumers for MLflow's GenAI jobs, each a Python
process that imports MLflow) unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is false, which
``pqfl ui`` sets when the user has not. This starts ``pqfl ui`` on an empty SQLite store,
alternating the two settings, and prints for each start the seconds until ``/health``
answers, the CPU seconds of ``pqfl ui`` and everything it started up to 3 s after that,
and how many processes that was; then the medians.

    python -m benchmarks.ui_start        # 3 starts of each (about 2 min on 2 cores)
    python -m benchmarks.ui_start 5      # 5 of each
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from flows.mlflow_ui import _answers  # the probe pqfl ui itself waits on

PQFL = Path(sys.executable).with_name("pqfl")
SETTLE_S = 3.0  # MLflow starts its job runners once the server answers


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_once(uri: str, job_runners: bool) -> tuple[float, float, int]:
    """(seconds to healthy, CPU seconds of the process tree, processes in it) for one start."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if job_runners else "false"
    started = time.monotonic()
    proc = subprocess.Popen([str(PQFL), "ui", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while not _answers(f"http://127.0.0.1:{port}/health"):
            if proc.poll() is not None:
                raise RuntimeError(f"pqfl ui exited with {proc.returncode} before it answered")
            time.sleep(0.1)
        healthy = time.monotonic() - started
        time.sleep(SETTLE_S)
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        cpu = 0.0
        for member in tree:
            try:
                times = member.cpu_times()
                cpu += times.user + times.system + times.children_user + times.children_system
            except psutil.Error:
                continue
        return healthy, cpu, len(tree)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main(argv: list[str]) -> None:
    repeats = int(argv[0]) if argv else 3
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        MlflowClient(uri).create_experiment("ui-start")  # the store pqfl ui requires
        seen: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
        for _ in range(repeats):
            for job_runners in (True, False):  # alternated, so load drifts hit both alike
                row = start_once(uri, job_runners)
                seen[job_runners].append(row)
                print(_line(job_runners, *row), flush=True)
    for job_runners, rows in seen.items():
        print("median, " + _line(job_runners, *(statistics.median(r[i] for r in rows) for i in range(3))))


def _line(job_runners: bool, healthy: float, cpu: float, processes: float) -> str:
    return f"job runners {'on ' if job_runners else 'off'}: healthy {healthy:5.1f} s, cpu {cpu:5.1f} s, {processes:.0f} processes"


if __name__ == "__main__":
    main(sys.argv[1:])
