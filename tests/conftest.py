"""Shared test setup.

Importing ``pqfl.quantum`` turns on JAX float64 before any test touches JAX, so results
do not depend on which test module happens to run first. Prefect's ``prefect.main`` is imported
here for the same reason: it configures logging (``logging.config.dictConfig``), which
closes the handlers already there, and absl's handler (absl comes with the JAX stack)
closes the stream it writes to, which inside a test is pytest's capture. When that
happened in a test (test_bad_input.py run first in a process: its first test calls
``pqfl`` in process), that test and every later one in the process failed.

The suite compiles with ``XLA_FLAGS=--xla_backend_optimization_level=0`` (here, so that the
``pqfl`` processes the tests start inherit it; a level already in ``XLA_FLAGS`` is kept).
CI starts with an empty compilation cache, and at level 0 XLA compiles pqfl's circuits
faster while running them somewhat slower (figures in docs/maintaining.md). Results then
differ from a user's in the last bits only; test_compile_level.py checks that.
"""

import os

# before JAX starts its backend (see the docstring)
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

from collections.abc import Iterator

import prefect.main  # noqa: F401  (see the docstring)
import pytest

import pqfl.quantum  # noqa: F401  (enables jax_enable_x64)
from flows.runners import RECORDER_BATCHING
from tests.servers import SHARED, VENV_BIN, free_port, prefect_home, reporting_to, running, server_env


@pytest.fixture(scope="session", autouse=True)
def shared_tmp(tmp_path_factory, worker_id) -> None:
    """The session's temporary folder that every test worker shares (``servers.SHARED``)."""
    base = tmp_path_factory.getbasetemp()
    SHARED["tmp"] = base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """The API URL of one ``prefect server start`` per test worker, started when a test first
    asks for it and stopped at the end of the session. Prefect's ``prefect_test_harness``
    starts a server on a new database each time (9.5 s wall and 9 s CPU here, mostly the
    database migrations), and seven modules used it; a user who runs many jobs keeps one
    server up the same way."""
    folder = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    cmd = [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    home = prefect_home(folder / "home")
    env = server_env(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    env = {**RECORDER_BATCHING, **env}  # as docs/deployments.md advises for a long-lived server
    env.pop("PREFECT_API_URL", None)
    with running(cmd, f"http://127.0.0.1:{port}/api/health", folder / "server.log", env):
        yield f"http://127.0.0.1:{port}/api"


@pytest.fixture(scope="module")
def harness(prefect_server) -> Iterator[str]:
    """Prefect in this process reports to the worker's server for the module's tests (the
    settings are the module's; the server is shared), and the logs still queued are sent
    before the module ends."""
    with reporting_to(prefect_server):
        yield prefect_server


@pytest.fixture
def cli_reports_to_the_worker_server(prefect_server, monkeypatch) -> str:
    """``PREFECT_API_URL`` set to the worker's server for the test, so the ``pqfl`` commands it
    runs (in this process or as subprocesses, which inherit the environment) use that server
    instead of launching a temporary one each: about 8 s of CPU per run measured (a tiny
    one-method run, 23.0 s against 15.2 s with the shared server's own CPU, medians of 3).
    For modules whose subject is not the temporary server; test_progress, test_interrupt,
    test_resume, test_dask and test_packaging keep it."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    return prefect_server


@pytest.fixture(scope="session", autouse=True)
def prefect_temporary_servers_stop_with_the_session() -> Iterator[None]:
    """A flow run with no API set makes Prefect start a temporary server of its own in the
    test process, which Prefect stops at interpreter exit, after pytest has closed its output
    capture; the line it logs then fails with a traceback. Stopped here, at the end of the
    session, while the capture is still open."""
    yield
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()
