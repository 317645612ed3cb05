"""``pqfl ui``: the MLflow UI on this project's store — the tracking URI the flow logs to
(``MLFLOW_TRACKING_URI`` first, else the config's) and, for SQLite, the ``artifacts`` folder
beside the database, so runs, plots, circuits and registered detectors all show up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pqfl.errors import PQFLInputError
from tasks.settings import RunConfig


def ui_command(uri: str, artifact_root: str | None, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line for ``uri`` (``mlflow ui`` is the same server).

    One worker: MLflow's default of four each import MLflow, which slows the start on two
    cores (64 s to healthy against 49 s with one, measured under load) for a UI one person uses.
    """
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    cmd += ["--workers", "1"]
    if artifact_root:
        cmd += ["--default-artifact-root", artifact_root]
    return cmd


def runs_page(base_url: str, experiment_id: str | None) -> str:
    """The experiment's runs table (MLflow 3 opens experiments on its GenAI overview otherwise)."""
    if experiment_id is None:
        return base_url
    return f"{base_url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def serve_ui(cfg: RunConfig, host: str, port: int) -> int:
    """Run the UI in the foreground until Ctrl-C; returns the server's exit code."""
    from mlflow.tracking import MlflowClient

    from flows.tracking import _artifact_root, tracking_uri

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise PQFLInputError(f"--config: no MLflow store at {uri}; run `pqfl run` first or set MLFLOW_TRACKING_URI")
    if not 0 < port < 65536:
        raise PQFLInputError(f"--port: {port} is not a TCP port; use 1-65535")
    experiment = MlflowClient(uri).get_experiment_by_name(cfg.experiment_name)
    page = runs_page(f"http://{host}:{port}", experiment.experiment_id if experiment else None)
    print(f"[pqfl] MLflow UI for {uri}: {page}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    server = subprocess.Popen(ui_command(uri, _artifact_root(uri), host, port), env=env)
    try:
        return server.wait()
    except KeyboardInterrupt:  # the server got the same Ctrl-C: let it shut down cleanly
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.terminate()
            server.wait()
        return 0
