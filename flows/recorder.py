"""What the training flow records around the library's round loop: a method's MLflow runs
and its round checkpoints — opened fresh, or reopened after a crash — updated after every
round (the checkpoint first, holding the metrics not yet sent, then MLflow when due, so a
resume sends only what is missing), and
closed with the method's artifacts, detectors and hardware evaluation."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import replace
from typing import ClassVar
from uuid import UUID

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from prefect import get_client
from prefect.exceptions import ObjectNotFound, TerminationSignal
from prefect.states import Crashed

import pqfl
from flows.checkpoint import CheckpointStore, MethodCheckpoint
from flows.device_evaluation import evaluate_on_hardware, hardware_summary
from flows.runners import flow_run_url
from flows.tracking import MethodRun, Tracker
from pqfl.compile_cache import compile_stats
from pqfl.detector import QuantumDetector
from pqfl.errors import PQFLInputError, PQFLRunError
from pqfl.federated.rounds import Federation, FederationResult, FederationState
from pqfl.fleet import Fleet
from tasks.settings import RunConfig

log = logging.getLogger("pqfl.progress")


def _mark_crashed(flow_run_id: str, by: str) -> None:
    """Set a Prefect flow run that a killed process left RUNNING to CRASHED (its work resumes elsewhere)."""
    try:
        with get_client(sync_client=True) as client:
            old = client.read_flow_run(UUID(flow_run_id))
            if old.state is not None and not old.state.is_final():
                client.set_flow_run_state(
                    old.id, Crashed(message=f"process died; resumed by flow run {by}"), force=True
                )
    except (ObjectNotFound, ValueError):  # another Prefect database, or not a flow-run id
        pass


def _dropped_tag(dropped) -> str:
    return "; ".join(f"r{d.round}:{d.client}" for d in dropped)[:5000]


class MethodRecorder:
    """One method's MLflow runs and checkpoints within a flow run (``flow_runs`` names it)."""

    # (parent run id, what its checkpoint holds) of each method closed as KILLED in this process
    interrupted: ClassVar[list[tuple[str, str]]] = []

    def __init__(
        self,
        cfg: RunConfig,
        method: str,
        tracker: Tracker,
        store: CheckpointStore,
        federation: Federation,
        flow_runs: dict[str, str],
        started: float,
        fleet: Fleet,
    ):
        self.cfg, self.method, self.tracker, self.store = cfg, method, tracker, store
        self.flow_runs, self.since = flow_runs, started  # time.perf_counter() when the method's flow began
        self.compiles = compile_stats()
        self.phases = {"train_s": 0.0, "evaluate_s": 0.0}  # summed over the rounds this process ran
        ckpt = store.load(method)
        self.resumed = ckpt is not None
        if ckpt is not None and ckpt.finished:
            self.run = MethodRun(tracker.client, ckpt.parent_run_id, ckpt.client_run_ids)
        elif ckpt is not None:
            for old in ckpt.flow_runs.values():
                _mark_crashed(old, by=tracker.flow_run_id)
            self.run = tracker.reopen_method(ckpt.parent_run_id, ckpt.client_run_ids)
        else:
            tracker.fail_orphans(store.invocation, method, "crashed before its first checkpoint; started again")
            tags = {"pqfl.invocation": store.invocation, "pqfl.checkpoint": str(store.path(method))}
            url = flow_run_url(flow_runs["pqfl-method"])
            description = (
                f"pqfl {pqfl.__version__}: {method} on {cfg.dataset.source[:200]}, {len(cfg.clients)} clients, "
                f"{cfg.federation.rounds} rounds, seed {cfg.federation.seed}, invocation {store.invocation}."
                + (f" Prefect flow run: {url}" if url else "")
            )
            if federation.attacker_names:  # who attacks, for filtering runs in the UI
                tags["pqfl.attackers"] = ",".join(federation.attacker_names)
                description += f" Attacking clients ({cfg.federation.attack.kind}): {tags['pqfl.attackers']}."
            self.run = tracker.start_method(method, federation.clients, tags=tags, description=description)
            for name in federation.attacker_names:
                tracker.client.set_tag(self.run.client_run_ids[name], "pqfl.attacker", "true")
            self.run.log_datasets(fleet.datas, cfg.dataset.source)
            fed = cfg.federation
            ckpt = MethodCheckpoint(
                method=method,
                state=federation.initial_state(),
                elapsed_s=0.0,
                parent_run_id=self.run.parent_id,
                client_run_ids=dict(self.run.client_run_ids),
                # Nothing random is carried between rounds: each draw derives from (seed, stream, client, round).
                rng={
                    "seed": fed.seed,
                    "streams": "derived per (seed, stream, client, round); no generator state carried",
                },
                optimizer={
                    "name": fed.optimizer,
                    "lr": fed.lr,
                    "lr_decay": fed.lr_decay,
                    "state": "re-initialised at the start of every local round",
                },
                flow_runs=flow_runs,
            )
            store.save(ckpt)
        self.ckpt = ckpt
        self.monitor = None
        if not ckpt.finished:  # CPU, memory, disk and network of this process as system/ metrics
            self.monitor = SystemMetricsMonitor(
                self.run.parent_id, sampling_interval=5, resume_logging=self.resumed, tracking_uri=tracker.uri
            )
            self.monitor.start()

    def _stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()
            # MLflow's monitor drops the samples of its last, unfinished interval: a method that
            # trains in less than one interval would have no system metrics at all.
            if last := self.monitor.aggregate_metrics():
                self.monitor.publish_metrics(last)
                self.monitor.mlflow_logger.flush()
            self.monitor = None

    @property
    def finished(self) -> bool:
        return self.ckpt.finished

    def finished_result(self) -> dict:
        """The result of a method that completed before a crash. Its runs are closed only if the
        crash came before that was recorded; a FINISHED run is left as it is."""
        if self.tracker.client.get_run(self.run.parent_id).info.status != "FINISHED":
            self.run.finish("FINISHED")
        log.info("%-11s finished before the resume; MLflow run %s", self.method, self.run.parent_id)
        return self.ckpt.result

    def resume_state(self) -> FederationState:
        """The state to train from; when resuming, the metrics the checkpoint holds as unsent
        are sent, skipping what the crash let through."""
        state = self.ckpt.state
        if state.round > 0:
            log.info(
                "%-11s resuming after round %d/%d in MLflow run %s",
                self.method,
                state.round,
                self.cfg.federation.rounds,
                self.run.parent_id,
            )
            if self.ckpt.unlogged is None:  # a checkpoint from before the queue: its last round
                self.run.log_round(state.last, only_missing=True)
            else:
                self.run.requeue(self.ckpt.unlogged)
                self.run.flush(only_missing=True)
        return state

    def _elapsed(self) -> float:
        now = time.perf_counter()
        elapsed, self.since = self.ckpt.elapsed_s + (now - self.since), now
        return elapsed

    def on_round(self, state: FederationState) -> None:
        """The round loop's hook: queue the round's metrics, checkpoint the round with what is
        unsent, then send the queue to MLflow if it is due, and print the progress line."""
        report = state.last
        self.run.queue_round(report)
        ckpt = replace(
            self.ckpt, state=state, elapsed_s=self._elapsed(), flow_runs=self.flow_runs, unlogged=self.run.unlogged
        )
        self.store.save(ckpt)
        self.ckpt = ckpt  # only once it is on disk: an interruption reports the round a resume starts after
        self.phases["train_s"] += report.train_s
        self.phases["evaluate_s"] += report.evaluate_s
        if report.dropped:
            self.tracker.client.set_tag(self.run.parent_id, "pqfl.dropped", _dropped_tag(state.dropped))
        self.run.flush_if_due()
        summary = report.summary
        log.info(
            "%-11s round %2d/%d  mean AUROC %.3f  worst %.3f  (%.1f s)",
            self.method,
            state.round,
            self.cfg.federation.rounds,
            summary.mean_auroc,
            summary.worst_auroc,
            self.ckpt.elapsed_s,
        )

    def finish(self, result: FederationResult) -> dict:
        """Log the artifacts, detectors and hardware evaluation of a finished method; close its runs."""
        cfg, state, run = self.cfg, result.state, self.run
        states = [[st for st, _ in members] for members in result.members]
        thetas = [[th for _, th in members] for members in result.members]
        final = result.evaluations
        run.flush()  # the last rounds first: log_models links the final round's metrics to each model
        # The circuit drawings and a device run show the first restart (config refuses restarts with a device run).
        firsts, first_thetas = [s[0] for s in states], [t[0] for t in thetas]
        run.log_artifacts(cfg, self.method, result.history, final, result.clients, first_thetas)
        run.log_models(
            cfg,
            self.method,
            {
                c.name: QuantumDetector.from_federation(
                    c, members, ev.threshold, cfg.federation, cfg.dataset, cfg.simulator
                )
                for c, members, ev in zip(result.clients, result.members, final)
            },
        )
        hw_rows = evaluate_on_hardware(run, cfg, self.method, result.clients, firsts, first_thetas, final)
        wall_s = self._elapsed()
        compiles = {f"compile_{k}": v - self.compiles[k] for k, v in compile_stats().items()}
        run.log_final(
            {"wall_s": wall_s, "retries_total": state.retries_total, **compiles},
            step=cfg.federation.rounds,
            only_missing=self.resumed,
        )
        out = {
            "method": self.method,
            "mlflow_parent_run_id": run.parent_id,
            **result.summary.metrics(),
            "wall_s": wall_s,
            "retries_total": state.retries_total,
            "clients_dropped": len(state.dropped),
            # where the method's time went: its rounds' training and evaluation, its compiling
            "timings": {**self.phases, **compiles},
            "history": [h.as_dict() for h in result.history],
            "per_client": [{"client": ev.client, **ev.metrics()} for ev in final],
        }
        if result.attackers:  # metrics over the honest clients, and who attacked
            out["attackers"] = list(result.attackers)
            out["honest"] = result.honest_summary.metrics()
            for row in out["per_client"]:
                row["attacker"] = row["client"] in result.attackers
        if state.last is not None and state.last.epsilon is not None:
            out["epsilon"] = state.last.epsilon
        if cfg.federation.select == "best_val":  # which round's model each client kept
            for row, k in zip(out["per_client"], result.selected_rounds):
                row["selected_round"] = k
        if hw_rows:  # the device clients' hardware evaluation, as logged to MLflow
            out["hardware"] = {**hardware_summary(hw_rows), "per_client": hw_rows}
        self.store.save(replace(self.ckpt, state=state, finished=True, result=out, elapsed_s=wall_s, unlogged={}))
        self._stop_monitor()
        run.finish("FINISHED")
        return out

    def _checkpointed_round(self) -> int:
        """The round of the checkpoint on disk, which a resume starts after: a signal can land
        inside the checkpoint's write after its rename, before ``self.ckpt`` is the new one."""
        try:
            ckpt = self.store.load(self.method)
        except Exception:  # noqa: BLE001 — unreadable: the last checkpoint this process wrote
            ckpt = None
        return (ckpt or self.ckpt).round

    def fail(self, err: BaseException) -> BaseException:
        """Close the runs: KILLED after an interruption (Ctrl-C, SIGTERM), which comes back
        carrying the run id to resume; FAILED otherwise, with the reason in ``pqfl.failure``
        and, for an unexpected error, its traceback as the artifact ``failure.txt``. A run
        error comes back with how to resume."""
        if isinstance(err, (KeyboardInterrupt, TerminationSignal)):
            signal = "SIGTERM" if isinstance(err, TerminationSignal) or type(err).__name__ == "Terminated" else "SIGINT"
            # The signal can land after a round's checkpoint and before its progress line: the
            # line printed on exit says which round the resume starts after.
            done = self._checkpointed_round()
            held = (
                f"round {done}/{self.cfg.federation.rounds} of {self.method}" if done else f"no round of {self.method}"
            )
            MethodRecorder.interrupted.append((self.run.parent_id, held))
            try:
                self._stop_monitor()
                self.run.flush()
                self.run.finish(
                    "KILLED",
                    reason=f"interrupted by {signal} after round {done}; resume with "
                    f"`pqfl run --resume {self.run.parent_id}`",
                )
            except Exception as store_err:  # noqa: BLE001 — the signal may have landed in the store's own write
                # The runs stay RUNNING, as after a SIGKILL; the checkpoint resumes them the same way.
                reason = f"{type(store_err).__name__}: {store_err}".splitlines()[0][:200]
                log.warning("%s: its MLflow runs stay RUNNING after %s (%s)", self.method, signal, reason)
            return err
        self._stop_monitor()
        try:
            self.run.flush()
        except Exception as store_err:  # noqa: BLE001 — the checkpoint keeps them for a resume
            reason = f"{type(store_err).__name__}: {store_err}".splitlines()[0][:200]
            log.warning("%s: its unsent round metrics stay in its checkpoint for a resume (%s)", self.method, reason)
        if not isinstance(err, (PQFLRunError, PQFLInputError)):
            try:
                self.tracker.client.log_text(
                    self.run.parent_id, "".join(traceback.format_exception(err)), "failure.txt"
                )
            except Exception:  # noqa: BLE001 — the store itself may be what failed; the reason still goes below
                pass
        if isinstance(err, PQFLRunError):
            dropped = [*self.ckpt.state.dropped, *getattr(err, "dropped", [])]
            if dropped:
                self.tracker.client.set_tag(self.run.parent_id, "pqfl.dropped", _dropped_tag(dropped))
            err = PQFLRunError(
                f"{err}; the checkpoint of round {self.ckpt.round} is intact: fix the failing "
                f"clients, then `pqfl run --resume {self.run.parent_id}`"
            )
        self.run.finish("FAILED", reason=f"{type(err).__name__}: {err}")
        return err
