"""``pqfl ui``: the MLflow UI on this project's store — the tracking URI the flow logs to
(``MLFLOW_TRACKING_URI`` first, else the config's) and, for SQLite, the ``artifacts`` folder
beside the database, so runs, plots, circuits and registered detectors all show up.

Lifecycle: a busy port is refused before anything starts; the address is printed once the
server answers it; the server (``mlflow server`` and its uvicorn and job-runner processes)
runs in a session of its own, and the whole session is stopped when ``pqfl ui`` ends — on
Ctrl-C, SIGTERM or an error — and, on Linux, also when ``pqfl ui`` is killed.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pqfl.errors import PQFLInputError, PQFLRunError
from tasks.settings import RunConfig

START_TIMEOUT_S = 300.0  # one worker answers after 25-50 s on 2 cores under load
STOP_TIMEOUT_S = 10.0  # SIGTERM's grace before the server's processes are killed


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


def check_port(host: str, port: int) -> None:
    """Refuse, before the server starts, a port it could not listen on: bind it as uvicorn will
    (``SO_REUSEADDR``, so a closed connection's TIME_WAIT does not count) and let it go."""
    if not 0 < port < 65536:
        raise PQFLInputError(f"--port: {port} is not a TCP port; use 1-65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as err:
        raise PQFLInputError(f"--host: cannot resolve {host!r} ({err}); use an address such as 127.0.0.1") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise PQFLInputError(
                    f"--port: {port} on {host} is already in use (another `pqfl ui` or MLflow server?); "
                    "stop it or choose another port with --port"
                ) from None
            if err.errno in (errno.EACCES, errno.EPERM):
                raise PQFLInputError(f"--port: no permission to listen on {port}; choose a port above 1023") from None
            raise PQFLInputError(
                f"--host: cannot listen on {host}:{port} ({err.strerror or err}); use an address of this machine"
            ) from None


def _probe_url(url: str, host: str) -> str:
    """``url`` as this machine reaches it: a wildcard address is asked on the loopback interface."""
    loopback = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}
    if host in loopback:
        return url.replace(f"//{'[::]' if host == '::' else host}:", f"//{loopback[host]}:", 1)
    return url


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (a zombie waiting to be reaped is not)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                return True
    return False


def stop_group(server: subprocess.Popen, grace: float = STOP_TIMEOUT_S) -> None:
    """Stop every process of the server's group: SIGTERM, up to ``grace`` s to exit, then SIGKILL.
    A second interrupt while waiting goes straight to SIGKILL."""
    pgid = server.pid  # the session leader's pid is its group's id
    try:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            server.poll()  # reap the leader, so it stops counting
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _wait_until_answers(server: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if server.poll() is not None:
            raise PQFLRunError(
                f"mlflow server exited with code {server.returncode} before it answered at {url}; its messages are above"
            )
        if time.monotonic() > deadline:
            raise PQFLRunError(f"mlflow server did not answer at {url} within {timeout:.0f} s; it was stopped")
        time.sleep(0.5)


def serve_ui(cfg: RunConfig, host: str, port: int, start_timeout: float = START_TIMEOUT_S) -> int:
    """Run the UI in the foreground until Ctrl-C or SIGTERM (KeyboardInterrupt, re-raised after
    the server's processes are stopped); 0 if the server ends by itself without an error."""
    from flows.tracking import _artifact_root, tracking_uri

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise PQFLInputError(f"--config: no MLflow store at {uri}; run `pqfl run` first or set MLFLOW_TRACKING_URI")
    check_port(host, port)

    from mlflow.tracking import MlflowClient

    from flows.runners import _exit_with_parent

    experiment = MlflowClient(uri).get_experiment_by_name(cfg.experiment_name)
    base = f"http://[{host}]:{port}" if ":" in host and not host.startswith("[") else f"http://{host}:{port}"
    page = runs_page(base, experiment.experiment_id if experiment else None)
    print(f"[pqfl] starting the MLflow UI for {uri} on port {port} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    # MLflow's job runners (huey consumers for its GenAI jobs, eight processes that each import
    # MLflow) serve nothing this UI shows: off unless the user turned them on, which starts the
    # UI on a third of the CPU (docs/mlflow.md, benchmarks/ui_start.py).
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # Its own session: a terminal's Ctrl-C reaches pqfl ui only, which stops the whole group;
    # PR_SET_PDEATHSIG: SIGTERM to the server should pqfl ui be killed (Linux).
    server = subprocess.Popen(
        ui_command(uri, _artifact_root(uri), host, port),
        env=env,
        start_new_session=True,
        preexec_fn=_exit_with_parent,
    )
    try:
        _wait_until_answers(server, _probe_url(page, host), start_timeout)
        print(f"[pqfl] MLflow UI for {uri}: {page}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
        code = server.wait()
        if code != 0:
            raise PQFLRunError(f"mlflow server exited with code {code}; its messages are above")
        return 0
    finally:
        stop_group(server)
