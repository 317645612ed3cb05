"""Crash-resume: `pqfl run` killed with SIGKILL during round 3 of 6, then `pqfl run --resume`,
ends with the metrics of an uninterrupted run, in the same MLflow runs, with no step twice."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from flows.checkpoint import read_checkpoint
from flows.tracking import ROUND_METRICS, MethodRun
from pqfl.errors import PQFLInputError
from pqfl.results import ClientEvaluation, ClientRound, RoundReport, RoundSummary
from tests.servers import pqfl_in_process, prefect_home
from tests.tiny import TINY, write_config

ROOT = Path(__file__).resolve().parent.parent
PQFL = [sys.executable, "-m", "flows.cli"]
ROUNDS = 6

pytestmark = pytest.mark.timeout(600)


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_HOME"] = prefect_home(tmp_path / "prefect")  # this test's own Prefect database
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "240"  # a fresh database on a busy machine
    env["PYTHONPATH"] = str(ROOT)
    env.pop("PQFL_FAULT_RATE", None)
    return env


def _cli(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        PQFL + args, capture_output=True, text=True, timeout=timeout, env=_env(tmp_path), cwd=tmp_path
    )


def _metrics(result: dict) -> dict:
    return {
        m: {k: v for k, v in r.items() if k not in ("wall_s", "retries_total", "timings")}
        for m, r in result["methods"].items()
    }


def _flow_states(tmp_path: Path, ids: list[str]) -> dict[str, str]:
    """State of each flow run, read from the Prefect database the CLI runs used."""
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        rows = db.execute(
            f"SELECT id, state_type FROM flow_run WHERE id IN ({','.join('?' * len(ids))})", ids
        ).fetchall()
    assert len(rows) == len(ids), rows
    return dict(rows)


def _kill_during_round_3(args: list[str], tmp_path: Path) -> str:
    """Start `pqfl run`, SIGKILL its whole process group (the CLI and its temporary Prefect
    server) as soon as round 2 is reported, i.e. while round 3 trains; return its stderr."""
    proc = subprocess.Popen(
        PQFL + args,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        start_new_session=True,
    )
    seen: list[str] = []
    deadline = time.monotonic() + 300
    try:
        for line in proc.stderr:
            seen.append(line)
            if f"round  2/{ROUNDS}" in line:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "no round 2 within 300 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    return "".join(seen)


def test_sigkill_in_round_3_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, prefect_server):
    # lr_decay: each round's rate comes from its index, so the resumed rounds must train at
    # the rates the uninterrupted run used. restarts: the checkpoint holds both restarts'
    # clients and server models, and the resumed run must continue each of them.
    federation = {
        **TINY["federation"],
        "methods": ["pqfl"],
        "rounds": ROUNDS,
        "local_epochs": 2,
        "lr_decay": 0.8,
        "restarts": 2,
    }
    (tmp_path / "clean").mkdir()
    clean_cfg = write_config(tmp_path / "clean", federation=federation)
    # The interrupted run also meets a transient fault in every job (each retried once after
    # 0.4 s): round 3 lasts long enough to be killed inside it, and the resumed run must
    # still match the fault-free one. It sends its round metrics only when the method ends,
    # so at the kill rounds 1-2 are in the checkpoint, not in MLflow, and the resume sends them.
    (tmp_path / "faulty").mkdir()
    faulty_cfg = write_config(
        tmp_path / "faulty",
        federation=federation,
        faults={"transient_rate": 1.0},
        retries={"max_retries": 1, "backoff_s": 0.4, "jitter": 0.0},
        tracking={"metrics_every_s": 3600},
    )

    # The uninterrupted reference runs in this process; the killed and resumed runs cross it.
    out_clean = tmp_path / "clean.json"
    assert (
        pqfl_in_process(
            ["run", "--config", str(clean_cfg), "--json", str(out_clean)], tmp_path, monkeypatch, prefect_server
        )
        == 0
    )
    clean = json.loads(out_clean.read_text())

    stderr = _kill_during_round_3(["run", "--config", str(faulty_cfg)], tmp_path)
    assert f"round  3/{ROUNDS}" not in stderr
    client = MlflowClient(tracking_uri=_env(tmp_path)["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(TINY["name"])
    killed = client.search_runs(
        [exp.experiment_id], filter_string="tags.`pqfl.role` = 'parent' and attributes.status = 'RUNNING'"
    )
    assert len(killed) == 1, "the killed run is left RUNNING until it is resumed"
    run_id = killed[0].info.run_id
    ckpt_path = Path(killed[0].data.tags["pqfl.checkpoint"])
    assert ckpt_path.parent.parent == tmp_path / "store" / "checkpoints"
    ckpt = read_checkpoint(ckpt_path)
    assert ckpt.round == 2 and not ckpt.finished  # killed inside round 3
    assert client.get_metric_history(run_id, ROUND_METRICS[0]) == []
    assert sorted({row[3] for rows in ckpt.unlogged.values() for row in rows}) == [1, 2]
    assert set(ckpt.unlogged) == {run_id, *ckpt.client_run_ids.values()}
    assert not [p for p in ckpt_path.parent.iterdir() if p.name.endswith(".tmp")]
    killed_flows = sorted(ckpt.flow_runs.values())
    assert set(_flow_states(tmp_path, killed_flows).values()) == {"RUNNING"}

    out = tmp_path / "resumed.json"
    resumed_proc = _cli(["run", "--resume", run_id, "--json", str(out)], tmp_path)
    assert resumed_proc.returncode == 0, resumed_proc.stderr[-3000:]
    assert f"resuming after round 2/{ROUNDS}" in resumed_proc.stderr
    assert "round  1/" not in resumed_proc.stderr and "round  2/" not in resumed_proc.stderr
    resumed = json.loads(out.read_text())

    # the same MLflow run continued, with the metrics of the uninterrupted run
    assert resumed["mlflow_parent_run_ids"] == {"pqfl": run_id}
    assert _metrics(resumed) == _metrics(clean)
    assert [h["round"] for h in resumed["methods"]["pqfl"]["history"]] == list(range(1, ROUNDS + 1))
    # local-train per client and restart, evaluate (the ensemble) per client
    jobs_per_round = (federation["restarts"] + 1) * len(TINY["clients"])
    assert resumed["methods"]["pqfl"]["retries_total"] == ROUNDS * jobs_per_round * 1
    assert clean["methods"]["pqfl"]["retries_total"] == 0

    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["pqfl.resumes"] == "1"
    for key in (*ROUND_METRICS, "fl/retries", "fl/clients_in_round"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, ROUNDS + 1)), (key, steps)
    for key in ("time/wall_s", "fl/retries_total"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [ROUNDS]
    assert client.get_metric_history(run_id, "fl/retries_total")[0].value == ROUNDS * jobs_per_round
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == len(TINY["clients"])
    for child in children:
        assert child.info.status == "FINISHED"
        for key in ("test/auroc", "train/loss", "fl/retries"):
            steps = Counter(m.step for m in client.get_metric_history(child.info.run_id, key))
            assert sorted(steps) == list(range(1, ROUNDS + 1)) and set(steps.values()) == {1}, (key, steps)
    running = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert running == []
    # the killed Prefect flow runs (pqfl-train and its pqfl-method subflow) are closed too
    assert set(_flow_states(tmp_path, killed_flows).values()) == {"CRASHED"}
    assert {a.path for a in client.list_artifacts(run_id)} >= {"config.yaml", "results.csv", "plots"}

    # resuming a finished run changes nothing and starts no new run
    assert pqfl_in_process(["run", "--resume", run_id], tmp_path, monkeypatch, prefect_server) == 0
    assert len(client.search_runs([exp.experiment_id], filter_string="tags.`pqfl.role` = 'parent'")) == 2
    assert [m.step for m in client.get_metric_history(run_id, "time/wall_s")] == [ROUNDS]


def test_resume_of_an_unknown_run_is_bad_input(tmp_path, capsys, monkeypatch):
    """Through the CLI's entry point in this process (the test above crosses the process
    boundary; a new process costs seconds of imports)."""
    from flows.cli import main

    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _env(tmp_path)["MLFLOW_TRACKING_URI"])
    MlflowClient().create_experiment("other")
    capsys.readouterr()  # MLflow's note that it created the store's tables
    assert main(["run", "--resume", "0123456789abcdef"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--resume" in lines[0] and "0123456789abcdef" in lines[0]
    assert main(["run", "--resume", "0123456789abcdef", "--rounds", "3"]) == 2
    assert "drop the options" in capsys.readouterr().err


def test_runs_orphaned_before_their_first_checkpoint_are_failed(tmp_path):
    """Killed between creating its runs and writing its first checkpoint, a method starts
    afresh on resume; the runs it left behind are closed as FAILED, not left RUNNING."""
    from flows.tracking import Tracker
    from tasks.settings import parse_run_config

    cfg = parse_run_config({**TINY, "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    tracker = Tracker(cfg, "flow-1")
    orphan = tracker.client.create_run(tracker.experiment_id, tags={"pqfl.invocation": "inv", "pqfl.method": "pqfl"})
    child = tracker.client.create_run(tracker.experiment_id, tags={"mlflow.parentRunId": orphan.info.run_id})
    other = tracker.client.create_run(tracker.experiment_id, tags={"pqfl.invocation": "inv", "pqfl.method": "local"})
    assert tracker.fail_orphans("inv", "pqfl", "crashed") == [orphan.info.run_id]
    statuses = {
        r: tracker.client.get_run(r).info.status for r in (orphan.info.run_id, child.info.run_id, other.info.run_id)
    }
    assert statuses == {orphan.info.run_id: "FAILED", child.info.run_id: "FAILED", other.info.run_id: "RUNNING"}
    assert tracker.client.get_run(orphan.info.run_id).data.tags["pqfl.failure"] == "crashed"


def _report(k: int, retries: int = 0) -> RoundReport:
    """A one-client round ``k`` of client ``a``, with ``retries`` in its row and its report."""
    ev = ClientEvaluation(
        client="a",
        threshold=0.0,
        val_auroc=0.6,
        auroc=0.5 + k / 100,
        aupr=0.5,
        false_error=0.1,
        missing_error=0.2,
        f1=0.3,
        test_scores=np.zeros(3),
    )
    summary = RoundSummary(round=k, **{f: 0.5 for f in RoundSummary.__dataclass_fields__ if f != "round"})
    return RoundReport(k, summary, [ClientRound(ev, loss=1.0, retries=retries, dropped=False)], 1, [], retries, 0.1)


def _queue_store(tmp_path: Path, every_s: float) -> tuple[MlflowClient, MethodRun, list[str]]:
    """A store with a parent and one client run, a ``MethodRun`` over them, and the ids of the
    runs each ``log_batch`` call named (the real call, counted)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("queue")
    parent, child = (client.create_run(exp).info.run_id for _ in range(2))
    calls, real = [], client.log_batch

    def log_batch(run_id, **kw):
        calls.append(run_id)
        return real(run_id, **kw)

    client.log_batch = log_batch
    return client, MethodRun(client, parent, {"a": child}, every_s=every_s), calls


def test_relogging_a_round_adds_no_duplicate_steps(tmp_path):
    """A crash between a round's checkpoint and its MLflow log makes the resume log that round
    again; runs that already hold the step are skipped."""
    client, run, _ = _queue_store(tmp_path, every_s=0)
    parent, child = run.parent_id, run.client_run_ids["a"]
    run.log_round(_report(1, 2))
    run.log_round(_report(1, 2), only_missing=True)
    run.log_round(_report(2, 0), only_missing=True)  # missing: logged
    assert [m.step for m in client.get_metric_history(parent, "test/mean_auroc")] == [1, 2]
    assert sorted(m.step for m in client.get_metric_history(child, "fl/retries")) == [1, 2]
    run.log_final({"wall_s": 3.0}, step=2)
    run.log_final({"wall_s": 4.0}, step=2, only_missing=True)
    assert [m.value for m in client.get_metric_history(parent, "time/wall_s")] == [3.0]


def test_queued_rounds_are_sent_together_one_batch_per_run(tmp_path):
    """Rounds queued within ``metrics_every_s`` reach MLflow in one ``log_batch`` per run,
    each at its own step, with the values of its round; with 0 every round is sent as it ends."""
    client, run, calls = _queue_store(tmp_path, every_s=3600)
    for k in (1, 2, 3):
        run.queue_round(_report(k))
        run.flush_if_due()
    assert calls == [] and client.get_metric_history(run.parent_id, "test/mean_auroc") == []
    run.flush()
    assert sorted(calls) == sorted([run.parent_id, run.client_run_ids["a"]])
    steps = {m.step: m.value for m in client.get_metric_history(run.client_run_ids["a"], "test/auroc")}
    assert steps == {k: 0.5 + k / 100 for k in (1, 2, 3)}
    assert run.pending == {} and run.unlogged == {}

    client, run, calls = _queue_store(tmp_path / "every", every_s=0)
    for k in (1, 2):
        run.queue_round(_report(k))
        run.flush_if_due()
        assert len(calls) == 2 * k
    assert [m.step for m in client.get_metric_history(run.parent_id, "test/mean_auroc")] == [1, 2]


def test_a_resume_sends_what_the_checkpoint_holds_unsent_once(tmp_path):
    """The queue goes into the checkpoint as plain data; a crash may come after part of it
    was sent (here: the parent's). The resume's ``requeue`` + ``flush(only_missing=True)``
    sends the rest, and every (metric, step) is in MLflow exactly once."""
    from dataclasses import replace

    from flows.checkpoint import decode, encode
    from pqfl.federated.rounds import FederationState

    client, run, _ = _queue_store(tmp_path, every_s=3600)
    for k in (1, 2):
        run.queue_round(_report(k))
    state = FederationState(round=2, global_theta=np.zeros((1, 1, 1, 3)), states=[])
    ckpt = decode(encode(_checkpoint(run, state, run.unlogged)), "test")
    assert ckpt.unlogged == run.unlogged
    client.log_batch(run.parent_id, metrics=run.pending[run.parent_id])  # sent, then the crash

    resumed = MethodRun(client, run.parent_id, dict(run.client_run_ids))
    resumed.requeue(ckpt.unlogged)
    resumed.flush(only_missing=True)
    for run_id in (run.parent_id, run.client_run_ids["a"]):
        for key in client.get_run(run_id).data.metrics:
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [1, 2], (run_id, key)
    for run_id, metrics in run.round_metrics(_report(1)).items():
        assert set(client.get_run(run_id).data.metrics) == {m.key for m in metrics}

    bad = replace(ckpt, unlogged={run.parent_id: [["test/mean_auroc", 0.5, "t", 1]]})
    with pytest.raises(PQFLInputError, match="unlogged"):
        decode(encode(bad), "test")


def _checkpoint(run: MethodRun, state, unlogged):
    from flows.checkpoint import MethodCheckpoint

    return MethodCheckpoint(
        method="pqfl",
        state=state,
        elapsed_s=1.0,
        parent_run_id=run.parent_id,
        client_run_ids=dict(run.client_run_ids),
        unlogged=unlogged,
    )


def test_a_checkpoint_of_another_format_is_refused_by_name(tmp_path):
    """Formats before 4 were pickles; a format-4 archive whose header names another format is
    refused too. Either way the file and the fix are named, and nothing is resumed."""
    import io
    import json
    from types import SimpleNamespace

    from flows.checkpoint import FORMAT, HEADER, CheckpointStore

    store = CheckpointStore(tmp_path, "0b7c1f54-3f4e-4a40-9d0b-0d6f2bba1c11")
    store.folder.mkdir(parents=True)
    store.path("pqfl").write_bytes(pickle.dumps(SimpleNamespace(method="pqfl", format=FORMAT - 2)))
    with pytest.raises(PQFLInputError, match=r"pqfl\.ckpt is not a pqfl checkpoint .*a pickle of pqfl before format 4"):
        store.load("pqfl")
    buffer = io.BytesIO()
    np.savez(buffer, **{HEADER: np.frombuffer(json.dumps({"format": FORMAT - 1}).encode(), dtype=np.uint8)})
    store.path("pqfl").write_bytes(buffer.getvalue())
    with pytest.raises(PQFLInputError, match=r"pqfl\.ckpt was written by another pqfl version \(format 3"):
        store.load("pqfl")
    assert store.load("fedavg") is None
