"""Ctrl-C and SIGTERM during a round: `pqfl run` stops within seconds with one line and exit
code 130 or 143, marks its MLflow runs KILLED, leaves no child process behind, and
`--resume` then ends with the metrics of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.progress import _ROUND
from pqfl.config import parse_config
from pqfl.federated.rounds import run_federation
from pqfl.fleet import prepare
from tests.servers import alive as _alive
from tests.servers import children as _children
from tests.servers import pqfl_in_process, prefect_home
from tests.tiny import TINY, write_config

ROOT = Path(__file__).resolve().parent.parent
PQFL = [sys.executable, "-m", "flows.cli"]
ROUNDS = 5
FEDERATION = {**TINY["federation"], "methods": ["pqfl"], "rounds": ROUNDS, "local_epochs": 3}


def _progress_rounds(stderr: str) -> list[tuple[int, int]]:
    """(line index, round) of each per-round progress line, read as the CLI's bar reads them."""
    lines = stderr.splitlines()
    matches = ((i, _ROUND.match(line.removeprefix("[pqfl] "))) for i, line in enumerate(lines))
    return [(i, int(m["round"])) for i, m in matches if m]


pytestmark = pytest.mark.timeout(600)


def _env(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PQFL_FAULT_RATE", "PREFECT_API_URL")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'store' / 'mlflow.db'}", PREFECT_HOME=prefect_home(folder / "prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="240")  # fmt: skip
    return env


def _interrupt_in_round_2(folder: Path, sig: signal.Signals) -> tuple[subprocess.Popen, str, float, set[int]]:
    """Start `pqfl run`, send ``sig`` to its process group (as a terminal's Ctrl-C does)
    once round 1 is reported; return the process, its stderr, seconds to exit, its children."""
    cfg = write_config(folder, federation=FEDERATION)
    proc = subprocess.Popen(PQFL + ["run", "--config", str(cfg)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=_env(folder), cwd=folder, start_new_session=True)  # fmt: skip
    seen, children = [], set()
    try:
        for line in proc.stderr:
            seen.append(line)
            if "round  1/" in line:
                children = _children(proc.pid)
                sent = time.monotonic()
                os.killpg(proc.pid, sig)
                break
        seen.append(proc.stderr.read())
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    return proc, "".join(seen), time.monotonic() - sent, children


def _runs(folder: Path) -> list:
    client = MlflowClient(_env(folder)["MLFLOW_TRACKING_URI"])
    return client.search_runs([client.get_experiment_by_name(TINY["name"]).experiment_id])


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_an_interrupted_run_stops_cleanly_and_resumes_to_the_same_metrics(sig, code, tmp_path):
    proc, stderr, seconds, children = _interrupt_in_round_2(tmp_path, sig)
    assert proc.returncode == code, stderr[-3000:]
    assert seconds < 10, seconds
    assert children, "the temporary Prefect server is a child of pqfl run"
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if _alive(p)], "a child process outlived pqfl run"
    # The signal can land after a round's checkpoint and before its progress line (seen in CI,
    # with round 2): the exit line names the round the checkpoint holds and the resume starts after.
    *_, (at, last) = _progress_rounds(stderr)
    lines = [line for line in stderr.splitlines()[at + 1 :] if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"pqfl: interrupted by {sig.name}:"), stderr[-3000:]
    held = int(re.search(rf"KILLED and round (\d+)/{ROUNDS} of pqfl is checkpointed;", lines[0]).group(1))
    assert held in (last, last + 1), stderr[-3000:]
    assert "Traceback" not in stderr
    runs = _runs(tmp_path)
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) == 1 + len(TINY["clients"])
    (parent,) = [r for r in runs if r.data.tags.get("pqfl.role") == "parent"]
    assert f"--resume {parent.info.run_id}" in lines[0]
    assert f"interrupted by {sig.name} after round {held};" in parent.data.tags["pqfl.failure"]
    if sig is signal.SIGTERM:
        return  # the resume below is the same either way

    out = tmp_path / "resumed.json"
    resumed = subprocess.run(PQFL + ["run", "--resume", parent.info.run_id, "--json", str(out)], capture_output=True,
                             text=True, timeout=300, env=_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after round {held}/{ROUNDS}" in resumed.stderr
    # The uninterrupted run: the same federation through the library's loop (the flow runs
    # that loop; tests/test_resume.py compares two CLI runs the same way).
    cfg = parse_config(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    clean = run_federation(prepare(cfg), "pqfl", cfg.federation, simulator=cfg.simulator)
    got = json.loads(out.read_text())["methods"]["pqfl"]
    assert got["history"] == [h.as_dict() for h in clean.history]
    assert got["per_client"] == [{"client": ev.client, **ev.metrics()} for ev in clean.evaluations]
    assert got["retries_total"] == clean.state.retries_total == 0 and got["clients_dropped"] == 0
    parent = MlflowClient(_env(tmp_path)["MLFLOW_TRACKING_URI"]).get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and "pqfl.failure" not in parent.data.tags  # the stale reason is cleared


def _in_process(folder: Path, capsys, monkeypatch, prefect_server: str) -> tuple[int, str]:
    """A two-round `pqfl run` in this process, where the tests below inject the signal, on the
    worker's Prefect server. Returns the exit code and stderr."""
    cfg = write_config(folder, federation={**FEDERATION, "rounds": 2, "local_epochs": 1})
    code = pqfl_in_process(["run", "--config", str(cfg)], folder, monkeypatch, prefect_server)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("where", ["inside_the_write_after_its_rename", "before_the_progress_line"])
def test_a_signal_just_after_a_rounds_checkpoint_names_that_round(where, tmp_path, capsys, monkeypatch, prefect_server):
    """Ctrl-C once round 2's checkpoint is on disk, before its progress line: the console
    shows round 1 last, so the exit line must say that round 2 is what a resume starts after,
    as the KILLED run's reason and the checkpoint do (the line used to name no round). The
    signal can land inside the write itself, after the rename (the directory's fsync)."""
    from flows.checkpoint import CheckpointStore, read_checkpoint
    from flows.tracking import MethodRun

    fired = []
    if where == "before_the_progress_line":
        real_flush = MethodRun.flush_if_due

        def flush_if_due(self):
            if any(m.step == 2 for ms in self.pending.values() for m in ms):
                fired.append(True)
                raise KeyboardInterrupt
            return real_flush(self)

        monkeypatch.setattr(MethodRun, "flush_if_due", flush_if_due)
    else:
        real_save = CheckpointStore.save

        def save(self, ckpt):
            real_save(self, ckpt)
            if ckpt.round == 2 and not ckpt.finished:
                fired.append(True)
                raise KeyboardInterrupt

        monkeypatch.setattr(CheckpointStore, "save", save)
    code, err = _in_process(tmp_path, capsys, monkeypatch, prefect_server)
    assert fired and code == 130, err[-3000:]
    assert [k for _, k in _progress_rounds(err)] == [1]
    last = err.strip().splitlines()[-1]
    assert "the runs are marked KILLED and round 2/2 of pqfl is checkpointed;" in last, err[-3000:]
    (parent,) = [r for r in _runs(tmp_path) if r.data.tags.get("pqfl.role") == "parent"]
    assert parent.info.status == "KILLED" and f"--resume {parent.info.run_id}" in last
    assert "interrupted by SIGINT after round 2;" in parent.data.tags["pqfl.failure"]
    assert read_checkpoint(Path(parent.data.tags["pqfl.checkpoint"])).round == 2


def test_sigterm_inside_the_stores_own_write_is_an_interruption_not_a_failure(
    tmp_path, capsys, monkeypatch, prefect_server
):
    """SIGTERM that lands inside MLflow's SQLite write comes out of MLflow as its own error,
    with Prefect's TerminationSignal as the context (seen once in the suite: exit 1, "run
    failed: MlflowException: database is locked"). Injected here as round 2's metrics are sent, with a
    store that cannot be written afterwards: `pqfl run` still says it was interrupted, exits
    143 and names the run to resume, and round 2's checkpoint (saved before its log) is
    there; the runs it could not close stay RUNNING, as after a SIGKILL."""
    from mlflow.exceptions import MlflowException
    from prefect.exceptions import TerminationSignal

    from flows.checkpoint import read_checkpoint
    from flows.tracking import MethodRun

    real_flush, fired = MethodRun.flush, []

    def flush(self, only_missing=False):
        if any(m.step == 2 for ms in self.pending.values() for m in ms):
            fired.append(True)
            try:
                raise TerminationSignal(signal=signal.SIGTERM)
            except TerminationSignal:
                raise MlflowException("(sqlite3.OperationalError) database is locked") from None
        return real_flush(self, only_missing)

    def finish(self, status="FINISHED", reason=None):
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(MethodRun, "flush", flush)
    monkeypatch.setattr(MethodRun, "finish", finish)
    code, err = _in_process(tmp_path, capsys, monkeypatch, prefect_server)
    assert fired and code == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("pqfl: interrupted by SIGTERM:") and "run failed" not in err, err[-3000:]
    assert "stay RUNNING after SIGTERM" in err and "Traceback" not in err
    (parent,) = [r for r in _runs(tmp_path) if r.data.tags.get("pqfl.role") == "parent"]
    assert parent.info.status == "RUNNING" and f"--resume {parent.info.run_id}" in last
    ckpt = read_checkpoint(Path(parent.data.tags["pqfl.checkpoint"]))
    assert ckpt.round == 2 and not ckpt.finished


def test_sigterm_just_after_an_mlflow_query_leaves_the_store_unlocked_and_the_runs_killed(
    tmp_path, capsys, monkeypatch, prefect_server
):
    """A signal handler runs between two bytecodes, so SIGTERM can raise just after MLflow's
    SQLite query returned, with its statement still open in the raising frames: the
    database's read lock then lived as long as the error, and closing the runs waited
    MLflow's 20 s busy timeout, then failed ("database is locked"; reproduced this way).
    The finished frames are cleared first, and the runs are KILLED on the real store."""
    import sqlalchemy.engine.default
    from prefect.exceptions import TerminationSignal

    from flows.tracking import MethodRun

    dialect = sqlalchemy.engine.default.DefaultDialect
    real_execute, real_flush, armed = dialect.do_execute, MethodRun.flush, []

    def do_execute(self, cursor, statement, parameters, context=None):
        real_execute(self, cursor, statement, parameters, context)
        if armed == [threading.get_ident()] and statement.lstrip().upper().startswith("SELECT"):
            armed.append("fired")
            raise TerminationSignal(signal=signal.SIGTERM)

    def flush(self, only_missing=False):
        if not armed and any(m.step == 2 for ms in self.pending.values() for m in ms):
            armed.append(threading.get_ident())
        return real_flush(self, only_missing)

    monkeypatch.setattr(dialect, "do_execute", do_execute)
    monkeypatch.setattr(MethodRun, "flush", flush)
    started = time.monotonic()
    code, err = _in_process(tmp_path, capsys, monkeypatch, prefect_server)
    assert "fired" in armed and code == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("pqfl: interrupted by SIGTERM:") and "stay RUNNING" not in err, err[-3000:]
    runs = _runs(tmp_path)
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) == 1 + len(TINY["clients"])
    assert time.monotonic() - started < 60  # no busy timeout waited out
