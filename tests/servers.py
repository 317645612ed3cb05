"""Start a real server as a subprocess on 127.0.0.1, wait until it answers, and always tear it down;
find the processes a command left behind (Linux ``/proc``)."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """This venv first on PATH (``mlflow models serve`` runs ``uvicorn`` from PATH), telemetry off."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@contextmanager
def running(cmd: list[str], ready_url: str, log_path: Path, env: dict[str, str], timeout: float = 180.0):
    """Run ``cmd`` in its own process group until ``ready_url`` answers 200 (at most ``timeout`` s);
    yield the process; kill the whole group afterwards, whatever happened."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(ready_url, timeout=5) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{ready_url} did not answer within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            yield proc
        finally:
            stop(proc)


@contextmanager
def reporting_to(api: str):
    """Prefect in this process reports to the server at ``api`` inside the block; the logs
    still queued are sent before it ends. Tasks called outside a flow (the hardware tests
    call one directly) keep their logs local instead of warning that no flow run holds them.

    The settings are also made the process-global ones for the block, as ``pqfl run`` does
    (``flows.runners._process_wide``): threads Prefect starts itself do not see the block's
    context and read those (the process pool's message forwarding thread, which otherwise
    started Prefect's temporary server in this process to send its workers' events)."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

    from flows.runners import _process_wide

    with temporary_settings({PREFECT_API_URL: api, PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        with _process_wide():
            try:
                yield api
            finally:
                APILogWorker.drain_all(timeout=10)


def pqfl_in_process(args: list[str], folder: Path, monkeypatch, api: str) -> int:
    """`pqfl ARGS` through the CLI's entry point in this process, in ``folder``, on the store
    ``folder/store/mlflow.db`` and the Prefect server at ``api``: for runs whose subject is
    not the process boundary (a new process costs seconds of imports and a temporary
    server). The environment is restored afterwards, so commands the test starts later do
    not inherit it."""
    from flows.cli import main

    with monkeypatch.context() as m:
        m.chdir(folder)
        m.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'store' / 'mlflow.db'}")
        m.setenv("PREFECT_API_URL", api)
        m.delenv("PQFL_FAULT_RATE", raising=False)
        return main(args)


#: A folder every test process of the session shares (conftest sets it), where the first
#: call of :func:`prefect_home` leaves the Prefect database the others copy.
SHARED: dict[str, Path] = {}


def prefect_home(home: Path) -> str:
    """``home`` as a new ``PREFECT_HOME`` holding a copy of a Prefect database that a
    temporary server has already migrated and served; unchanged when it has a database
    already (a test's later commands continue it). A temporary server on an empty database
    first runs Prefect's migrations: 13.7 s to healthy against 5.8 s on a copy (a
    ``TemporaryServer`` alone, one run each, under load). test_packaging keeps an empty
    home, as a new user has."""
    from flows.runners import copy_database

    db = home / "prefect.db"
    if not db.exists():
        copy_database(_served_prefect_database(), db)
    return str(home)


@lru_cache(maxsize=1)
def _served_prefect_database() -> Path:
    """The session's Prefect database that pqfl's ``TemporaryServer`` migrated and served
    (``flows.runners.served_database``), made by the first process that needs it while the
    others wait (a file lock)."""
    from flows.runners import copy_database, served_database

    root = SHARED.get("tmp") or Path(tempfile.mkdtemp(prefix="pqfl-prefect-"))
    served = root / "prefect-served.db"
    with open(root / "prefect-served.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not served.exists():
            copy_database(served_database(root / "prefect-served-home"), served.with_suffix(".tmp"))
            os.replace(served.with_suffix(".tmp"), served)
    return served


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name: state, ppid, pgrp, session, …"""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> set[int]:
    """Every live process whose parent is ``pid``, and theirs."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(entry.name)[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = _stat(pid)[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def session_members(sid: int) -> set[int]:
    """The live (not zombie) processes of session ``sid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(entry.name)
            except (OSError, IndexError):
                continue
            if len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def session_of(pid: int) -> int | None:
    try:
        return int(_stat(pid)[3])
    except (OSError, IndexError, ValueError):
        return None
