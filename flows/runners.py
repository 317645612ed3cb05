"""Where the client tasks run: the Prefect task runner a config asks for, and the Prefect
API the run reports to.

With ``PREFECT_API_URL`` set, that server is used as is (a user who runs many jobs keeps
one up; remote Dask workers need one they can reach: ``prefect server start --host
0.0.0.0``). Without it, :func:`prefect_api` starts Prefect's temporary server once for the
whole command and sets its address, so every subflow, and every Dask worker on this
machine, uses that one server (left to themselves, Dask workers each started a server of
their own: measured, a 165 s first round with clients dropped).

The server runs in a session of its own, so a terminal's Ctrl-C reaches ``pqfl``, which
still needs the server to record the interruption, and not the server; it is stopped when
the command ends, and on Linux it is also told to exit if ``pqfl`` itself is killed
(``PR_SET_PDEATHSIG``), so no server outlives the command.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import prefect
from prefect.logging.handlers import APILogWorker
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    PREFECT_UI_URL,
    get_current_settings,
    temporary_settings,
)
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from tasks.settings import RunnerConfig


def task_runner_for(runner: RunnerConfig):
    """The Prefect task runner ``runner`` asks for.

    ``dask`` with an address connects to that running scheduler (workers elsewhere must
    have this project installed); without one, each method subflow starts and stops a
    local cluster of ``max_workers`` single-threaded worker processes.
    """
    if runner.kind == "dask":
        from prefect_dask import DaskTaskRunner  # imported only when asked for: it pulls in distributed

        if runner.address:
            return DaskTaskRunner(address=runner.address)
        cluster_kwargs = {"processes": True, "threads_per_worker": 1, "host": "127.0.0.1", "dashboard_address": None}
        if runner.max_workers:
            cluster_kwargs["n_workers"] = runner.max_workers
        return DaskTaskRunner(cluster_kwargs=cluster_kwargs)
    if runner.kind == "processes":
        return ProcessPoolTaskRunner(max_workers=runner.max_workers)
    return ThreadPoolTaskRunner(max_workers=runner.max_workers)


def _exit_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TemporaryServer(SubprocessASGIServer):
    """Prefect's temporary API server, started as Prefect starts it but in a session of its
    own that exits with this process."""

    def _run_uvicorn_command(self) -> subprocess.Popen:
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
        args = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on"]  # fmt: skip
        return subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=_exit_with_parent)


_TEMPORARY: dict[str, str | None] = {"api": None}  # the API URL of the server prefect_api started


def flow_run_url(flow_run_id: str) -> str | None:
    """The Prefect UI page of a flow run, when the run reports to a real server (a user's
    ``PREFECT_API_URL``); None for the temporary server, which serves no UI and stops with
    the command."""
    api = PREFECT_API_URL.value()
    if not api or api == _TEMPORARY["api"]:
        return None
    ui = PREFECT_UI_URL.value() or api.removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL the command uses: ``PREFECT_API_URL``, else a temporary
    server started here and stopped on the way out (also on an interruption)."""
    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    with socket.socket() as probe:  # a free port on the loopback interface
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = TemporaryServer(port)
    # A loaded machine (Dask workers importing JAX) can take longer than Prefect's 20 s default.
    try:
        server.start(timeout=max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), 120))
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            _TEMPORARY["api"] = server.api_url
            try:
                yield server.api_url
            finally:
                APILogWorker.drain_all(timeout=5)  # send the logs still queued while the server is up
                _TEMPORARY["api"] = None
    finally:
        server.stop()
