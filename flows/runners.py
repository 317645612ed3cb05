"""Where the client tasks run: the Prefect task runner a config asks for, and the Prefect
API the run reports to.

With ``PREFECT_API_URL`` set, that server is used as is (a user who runs many jobs keeps
one up; remote Dask workers need one they can reach: ``prefect server start --host
0.0.0.0``). Without it, :func:`prefect_api` launches Prefect's temporary server once for
the whole command, first thing, so it starts while pqfl imports and prepares, and sets its
address, so every subflow, and every Dask worker on this
machine, uses that one server (left to themselves, Dask workers each started a server of
their own: measured, a 165 s first round with clients dropped).

The server runs in a session of its own, so a terminal's Ctrl-C reaches ``pqfl``, which
still needs the server to record the interruption, and not the server; it is stopped when
the command ends, and on Linux it is also told to exit if ``pqfl`` itself is killed
(``PR_SET_PDEATHSIG``), so no server outlives the command.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path

from pqfl.errors import PQFLRunError
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
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if runner.kind == "processes":
        return ProcessPoolTaskRunner(max_workers=runner.max_workers)
    return ThreadPoolTaskRunner(max_workers=runner.max_workers)


def _exit_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


#: Prefect's task-run recorder settings for the temporary server: up to 50 task-run events
#: per transaction, and every event on disk within a second (and at the server's stop).
#: Prefect's default, one event per transaction, compiles and commits an upsert for every
#: state: about a quarter of the server's samples in py-spy. Batched, the server's CPU
#: halved (docs/speed.md).
RECORDER_BATCHING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The temporary server's environment: ``environ`` with :data:`RECORDER_BATCHING` where
    it sets no value of its own, and the UI off and the server marked ephemeral, always."""
    env = {**RECORDER_BATCHING, **environ}
    env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    return env


class TemporaryServer:
    """Prefect's temporary API server, run as Prefect runs it (``create_app`` under uvicorn,
    UI off) but launched without waiting, in a session of its own that exits with this
    process.

    Prefect's own ``SubprocessASGIServer`` waits for the server as it starts it and costs
    1.8 s to import; launched here first, the server comes up while pqfl imports its
    modules and prepares the data, and :meth:`wait` then finds it (mostly) ready.

    Its task-run recorder writes the task runs in batches (:data:`RECORDER_BATCHING`)
    instead of one database transaction per state event, Prefect's default: that about
    halves the CPU the server takes from training on the same cores. A setting in the
    environment wins.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ  # what the server's environment is made from
        self.process: subprocess.Popen | None = None
        self.port = 0
        self._launch()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _launch(self) -> None:
        with socket.socket() as probe:  # a free port on the loopback interface
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = server_environment(self.environ)
        app_dir = Path(importlib.util.find_spec("prefect").origin).parent.parent
        args = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
                "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on"]  # fmt: skip
        self.process = subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=_exit_with_parent)

    def wait(self, timeout: float) -> str:
        """Block until the server answers its health check; returns its API URL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code == 3:  # uvicorn could not bind: the port was taken in between
                self._launch()
            elif code is not None:
                raise PQFLRunError(f"Prefect's temporary server exited with code {code} while starting")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self.api_url
            except OSError:
                pass
            time.sleep(0.05)
        raise PQFLRunError(
            f"Prefect's temporary server did not answer within {timeout:.0f} s; start one "
            "(`prefect server start`) and set PREFECT_API_URL to use it"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


#: Settings that point a Prefect server at another database than the one in its home.
DATABASE_SETTINGS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")


def served_database(home: Path, timeout: float = 240) -> Path:
    """``home``'s Prefect database once a :class:`TemporaryServer` on it has come up and
    stopped: Prefect's migrations run and its block types added, no flow runs yet. For
    copying (:func:`copy_database`) into homes that should start without history, which then
    skip the migrations (13.7 s to healthy against 5.8 s on a copy, tests/servers.py)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in DATABASE_SETTINGS}
    server = TemporaryServer({**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    try:
        server.wait(timeout)
    finally:
        server.stop()
    return home / "prefect.db"


def copy_database(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` to ``target`` by SQLite's online backup, which is
    consistent even with the source's write-ahead log beside it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


_TEMPORARY: dict[str, str | None] = {"api": None}  # the API URL of the server prefect_api started


def flow_run_url(flow_run_id: str) -> str | None:
    """The Prefect UI page of a flow run, when the run reports to a real server (a user's
    ``PREFECT_API_URL``); None for the temporary server, which serves no UI and stops with
    the command."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    api = PREFECT_API_URL.value()
    if not api or api == _TEMPORARY["api"]:
        return None
    ui = PREFECT_UI_URL.value() or api.removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


class PrefectAPI:
    """The Prefect API a command reports to: ``PREFECT_API_URL`` if set, else a temporary
    server launched when this is made. :meth:`active` waits for it and points Prefect at it."""

    def __init__(self) -> None:
        # The environment is checked first, so the server launches before Prefect is imported;
        # a profile that sets the URL is found in active() and the launched server stopped.
        self.configured = os.environ.get("PREFECT_API_URL")
        self.server = None if self.configured else TemporaryServer()
        self.waited_s = 0.0  # how long the command blocked on the temporary server's start

    @contextmanager
    def active(self) -> Iterator[str]:
        from prefect.logging.handlers import APILogWorker
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
            temporary_settings,
        )

        configured = PREFECT_API_URL.value() or self.configured
        if configured:  # the user's server
            self.close()
            # Set in the environment after Prefect was imported (a process that calls pqfl's
            # entry point), the URL is not in Prefect's settings yet: it is put there.
            url, settings = configured, {PREFECT_API_URL: configured}
        else:
            # A loaded machine (Dask workers importing JAX) can take longer than Prefect's 20 s default.
            waiting = time.monotonic()
            url = self.server.wait(timeout=max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), 120))
            self.waited_s = time.monotonic() - waiting
            # No flow-run heartbeats for a server that stops with the command: they detect crashed
            # runs for a server that outlives them, and the end of every flow run waited up to 1 s
            # for the heartbeat thread (measured 4.2 s of the default run's six flow runs).
            settings = {PREFECT_API_URL: url, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": None}
        with temporary_settings(settings), _process_wide():
            _TEMPORARY["api"] = None if configured else url
            try:
                yield url
            finally:
                # The logs still queued are sent now: the temporary server stops with the command,
                # and a process that goes on (one that called pqfl's entry point) should not find
                # them waiting at its exit.
                APILogWorker.drain_all(timeout=5)
                _TEMPORARY["api"] = None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextmanager
def _process_wide() -> Iterator[None]:
    """The settings of the enclosing ``temporary_settings`` made Prefect's process-global
    ones for the block, as Prefect's own ``prefect_test_harness`` does. Threads that Prefect
    starts itself run without the block's context and read the global settings: the
    process runner's message forwarding thread found no API there and started Prefect's
    temporary server in this process, a second server that got the workers' events."""
    from prefect import context

    swap = getattr(context, "_temporary_global_settings_context", None)  # private: absent, no swap
    if swap is None:
        yield
        return
    with swap(context.SettingsContext.get()):
        yield


@contextmanager
def prefect_api() -> Iterator[PrefectAPI]:
    """The command's :class:`PrefectAPI`; a temporary server it launched is stopped on the
    way out (also on an interruption or an error before the run started)."""
    api = PrefectAPI()
    try:
        yield api
    finally:
        api.close()
