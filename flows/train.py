"""The training flow: for each method, rounds of fan-out local training, aggregation (join),
and per-client evaluation; the flow process alone logs to MLflow.

``pqfl_train`` (deployment ``pqfl-train``) runs the configured methods one after another
as ``pqfl-method`` subflows on identical prepared data. Each subflow uses the task
runner the config asks for (threads by default, or processes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from uuid import UUID

import numpy as np

from prefect import flow, get_client, unmapped
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Crashed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows.checkpoint import CheckpointStore, MethodCheckpoint, checkpoint_root, resume_target
from flows.hardware import evaluate_on_hardware, hardware_summary
from flows.tracking import MethodRun, Tracker, tracking_uri
from pqfl.config import Config, RunnerConfig, load_config, parse_config
from pqfl.errors import PQFLRunError
from pqfl.experiment import pooled_setup, prepare
from pqfl.federated.aggregation import block_of, share_groups
from pqfl.federated.client import init_state, replicas, restart_members
from pqfl.federated.methods import RULES, prox_weight
from pqfl.federated.server import init_shared, replica_groups, sample_clients
from pqfl.metrics import summarize
from tasks.federated import aggregate, evaluate, local_train
from tasks.retry import FaultPlan, retries_used, retry_options, with_fault_env

log = logging.getLogger("pqfl.progress")


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


def _client_row(ev: dict, loss: float | None) -> dict:
    row = {k: v for k, v in ev.items() if k != "test_scores"}
    if loss is not None:
        row["loss"] = loss
    return row


def _eval_models(method: str, setups, states, G, vgroups: list[int], restarts: int) -> tuple[list, list]:
    """Per client, the (states, θs) of its detector's members, one per restart: its own v_n,
    its group's global w, or the pooled model. ``states`` and ``vgroups`` are per virtual
    client r·N + n (``pqfl.federated.client.replicas``)."""
    if method == "centralized":
        members = [states[r] for r in range(restarts)]
        return [members] * len(setups), [[st.theta for st in members]] * len(setups)
    members = restart_members(setups, states, G, vgroups, personal=RULES[method].evaluate_personal)
    return [[st for st, _ in m] for m in members], [[th for _, th in m] for m in members]


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0][:300]


def _mark_crashed(flow_run_id: str, by: str) -> None:
    """Set a Prefect flow run that a killed process left RUNNING to CRASHED (its work resumes elsewhere)."""
    try:
        with get_client(sync_client=True) as client:
            old = client.read_flow_run(UUID(flow_run_id))
            if old.state is not None and not old.state.is_final():
                client.set_flow_run_state(old.id, Crashed(message=f"process died; resumed by flow run {by}"), force=True)
    except (ObjectNotFound, ValueError):  # another Prefect database, or not a flow-run id
        pass


def _start(cfg: Config, method: str, tracker: Tracker, store: CheckpointStore, eval_setups, train_setups, groups, vgroups):
    """A new method run and its round-0 checkpoint, or the runs and last round of a crashed one."""
    ckpt = store.load(method)
    if ckpt is not None and ckpt.finished:
        return MethodRun(tracker.client, ckpt.parent_run_id, ckpt.client_run_ids), ckpt, True
    if ckpt is not None:
        for old in ckpt.flow_runs.values():
            _mark_crashed(old, by=tracker.flow_run_id)
        return tracker.reopen_method(ckpt.parent_run_id, ckpt.client_run_ids), ckpt, True
    fed = cfg.federation
    tracker.fail_orphans(store.invocation, method, "crashed before its first checkpoint; started again")
    tags = {"pqfl.invocation": store.invocation, "pqfl.checkpoint": str(store.path(method))}
    run = tracker.start_method(method, eval_setups, tags=tags)
    G = init_shared(cfg.max_layers, cfg.max_qubits, fed.seed, fed.init_scale, groups, fed.restarts)
    ckpt = MethodCheckpoint(
        method=method,
        round=0,
        global_theta=G,
        states=[init_state(s, block_of(G[g], s.spec.layers, s.spec.qubits), fed.seed) for s, g in zip(train_setups, vgroups)],
        history=[],
        per_client=[],
        final=[],
        round_extra={},
        retries_total=0,
        dropped=[],
        elapsed_s=0.0,
        parent_run_id=run.parent_id,
        client_run_ids=dict(run.client_run_ids),
        # Nothing random is carried between rounds: each draw derives from (seed, stream, client, round).
        rng={"seed": fed.seed, "streams": "derived per (seed, stream, client, round); no generator state carried"},
        optimizer={"name": fed.optimizer, "lr": fed.lr, "lr_decay": fed.lr_decay,
                   "state": "re-initialised at the start of every local round"},
        flow_runs={"pqfl-train": tracker.flow_run_id, "pqfl-method": str(flow_run.id)},
    )
    store.save(ckpt)
    return run, ckpt, False


@flow(name="pqfl-method")
def train_method(
    config: dict, method: str, parent_flow_run_id: str | None = None, invocation: str | None = None
) -> dict:
    """Train and evaluate one method for ``federation.rounds`` rounds; returns its final metrics.

    After every round the method's state is checkpointed (flows/checkpoint.py) before the
    round is logged; if a checkpoint of this ``invocation`` exists, training continues
    after its round, in the same MLflow runs.
    """
    cfg = parse_config(config)
    fed, sim = cfg.federation, cfg.simulator
    started = time.perf_counter()
    setups, datas, stats = prepare(cfg)
    eval_setups, train_setups = setups, setups
    groups = share_groups([s.profile.encoding for s in setups], fed.share)
    if method == "centralized":
        trainer, eval_setups = pooled_setup(cfg, datas, stats)
        train_setups, groups = [trainer], [0]
    # Restart r of trainer n is virtual trainer r·N + n, in its own sharing groups.
    R, n_tr = fed.restarts, len(train_setups)
    train_setups, vgroups = replicas(train_setups, R), replica_groups(groups, R)
    tracker = Tracker(cfg, parent_flow_run_id or str(flow_run.id))
    store = CheckpointStore(checkpoint_root(tracker.uri), invocation or parent_flow_run_id or str(flow_run.id))
    run, ckpt, resumed = _start(cfg, method, tracker, store, eval_setups, train_setups, groups, vgroups)
    if ckpt.finished:  # this method completed before the crash (its end may not have been recorded)
        run.finish("FINISHED")
        log.info("%-11s finished before the resume; MLflow run %s", method, run.parent_id)
        return ckpt.result
    try:
        if ckpt.round > 0:  # resuming: the crash may have come between checkpoint and log
            log.info("%-11s resuming after round %d/%d in MLflow run %s", method, ckpt.round, fed.rounds, run.parent_id)
            summary = {k: v for k, v in ckpt.history[-1].items() if k != "round"}
            run.log_round(ckpt.round, summary, ckpt.per_client, ckpt.round_extra, only_missing=True)
        plan = FaultPlan.from_config(cfg, method)
        train_task = local_train.with_options(**retry_options(cfg.retries))
        eval_task = evaluate.with_options(**retry_options(cfg.retries))
        G, states, history = ckpt.global_theta, list(ckpt.states), list(ckpt.history)
        retries_total, dropped_log = ckpt.retries_total, list(ckpt.dropped)
        final, per_client = ckpt.final, ckpt.per_client
        for k in range(ckpt.round + 1, fed.rounds + 1):
            round_start = time.perf_counter()
            # Fan-out: local training of the round's participants (the pooled trainer for centralized).
            if method == "centralized":
                participants, prox = list(range(R)), 0.0
                starts, anchors = [states[i].theta for i in participants], [None] * R
            else:
                rule = RULES[method]
                sampled = sample_clients(len(setups), fed.client_fraction, fed.min_clients, fed.seed, k)
                participants = [i + r * n_tr for r in range(R) for i in sampled]
                prox = prox_weight(method, fed.lam, fed.mu)
                global_blocks = [
                    block_of(G[vgroups[i]], train_setups[i].spec.layers, train_setups[i].spec.qubits) for i in participants
                ]
                starts = global_blocks if rule.start_from_global else [states[i].theta for i in participants]
                anchors = global_blocks if rule.prox else [None] * len(participants)
            futures = train_task.map(
                [train_setups[i] for i in participants],
                [states[i] for i in participants],
                starts,
                anchors,
                unmapped(prox),
                unmapped(fed),
                unmapped(sim),
                unmapped(k),
                unmapped(plan),
            )
            losses: dict[int, float] = {}
            retries: dict[int, int] = {}
            failed: dict[int, BaseException] = {}
            for i, fut in zip(participants, futures):
                try:
                    states[i], losses[i], retries[i] = fut.result()
                except Exception as err:  # the client is dropped from this round; its state is kept
                    failed[i] = err
                    retries[i] = retries_used(err, cfg.retries)
            survivors = [i for i in participants if i not in failed]
            for i, err in failed.items():
                name = train_setups[i].name + (f" (restart {train_setups[i].replica})" if train_setups[i].replica else "")
                dropped_log.append({"round": k, "client": name, "reason": _reason(err)})
                log.warning(
                    "%-11s round %2d/%d  client %s dropped after %d retries (%s); %d of %d clients remain",
                    method, k, fed.rounds, name, retries[i], _reason(err), len(survivors), len(participants),
                )
            if failed:
                tracker.client.set_tag(
                    run.parent_id, "pqfl.dropped", "; ".join(f"r{d['round']}:{d['client']}" for d in dropped_log)[:5000]
                )
            quorum = 1 if method == "centralized" else fed.min_clients  # centralized: its one pooled job
            done = min(sum(1 for i in survivors if i // n_tr == r) for r in range(R))  # in the worst restart
            if done < quorum:
                raise PQFLRunError(
                    f"{method} round {k}: only {done} of {len(participants) // R} clients finished local training "
                    f"({'; '.join(f'{train_setups[i].name}: {_reason(e)}' for i, e in failed.items())}), below the quorum "
                    f"federation.min_clients = {quorum}; the checkpoint of round {k - 1} is intact: fix the "
                    f"clients, then `pqfl run --resume {run.parent_id}`"
                )
            # A client's loss is its restarts' mean; its retries, their sum.
            losses = {n: float(np.mean([v for i, v in losses.items() if i % n_tr == n])) for n in {i % n_tr for i in losses}}
            retries = {n: sum(v for i, v in retries.items() if i % n_tr == n) for n in {i % n_tr for i in retries}}
            if method == "centralized":
                losses = {i: losses[0] for i in range(len(eval_setups))} if losses else {}
            elif RULES[method].uploads:  # join: masked FedAvg over the clients that finished
                G = aggregate(
                    G, [states[i].theta for i in survivors], [float(train_setups[i].n_train) for i in survivors],
                    [vgroups[i] for i in survivors],
                )
            eval_states, eval_thetas = _eval_models(method, eval_setups, states, G, vgroups, R)
            evals = eval_task.map(
                eval_setups, eval_states, eval_thetas, unmapped(fed), unmapped(sim), unmapped(k), unmapped(plan)
            )
            final = []
            for setup, fut in zip(eval_setups, evals):
                try:
                    final.append(fut.result())
                except Exception as err:
                    raise PQFLRunError(
                        f"{method} round {k}: evaluating client {setup.name} failed ({_reason(err)}); the checkpoint "
                        f"of round {k - 1} is intact: `pqfl run --resume {run.parent_id}`"
                    ) from err
            eval_retries = [ev.pop("retries") for ev in final]
            dropped_now = {train_setups[i].name for i in failed}
            per_client = []
            for i, ev in enumerate(final):
                row = _client_row(ev, losses.get(i))
                trained = retries.get(i, 0) if method != "centralized" else 0
                row["retries"] = trained + eval_retries[i]
                row["dropped"] = int(ev["client"] in dropped_now)
                per_client.append(row)
            round_retries = sum(retries.values()) + sum(eval_retries)
            retries_total += round_retries
            summary = summarize(per_client)
            history.append({"round": k, **summary})
            extra = {
                "round_wall_s": time.perf_counter() - round_start,
                "clients_in_round": len(eval_setups) if method == "centralized" else done,
                "clients_dropped": len(failed),
                "retries": round_retries,
            }
            ckpt = replace(
                ckpt,
                round=k,
                global_theta=G,
                states=list(states),
                history=list(history),
                per_client=per_client,
                final=final,
                round_extra=extra,
                retries_total=retries_total,
                dropped=list(dropped_log),
                elapsed_s=ckpt.elapsed_s + (time.perf_counter() - started),
                flow_runs={"pqfl-train": tracker.flow_run_id, "pqfl-method": str(flow_run.id)},
            )
            started = time.perf_counter()
            store.save(ckpt)  # before logging: a resume re-logs only what is missing
            run.log_round(k, summary, per_client, extra=extra)
            log.info(
                "%-11s round %2d/%d  mean AUROC %.3f  worst %.3f  (%.1f s)",
                method, k, fed.rounds, summary["mean_auroc"], summary["worst_auroc"], ckpt.elapsed_s,
            )
        eval_states, eval_thetas = _eval_models(method, eval_setups, states, G, vgroups, R)
        # The circuit drawings and a device run show the first restart (config refuses restarts with a device run).
        first_states, first_thetas = [m[0] for m in eval_states], [t[0] for t in eval_thetas]
        run.log_artifacts(cfg, method, history, final, eval_setups, first_thetas)
        run.log_models(cfg, method, eval_setups, eval_states, eval_thetas, final)
        hw_rows = evaluate_on_hardware(run, cfg, method, eval_setups, first_states, first_thetas, final)  # device clients only
        wall_s = ckpt.elapsed_s + (time.perf_counter() - started)
        run.log_final({"wall_s": wall_s, "retries_total": retries_total}, step=fed.rounds, only_missing=resumed)
        summary = history[-1]
        result = {
            "method": method,
            "mlflow_parent_run_id": run.parent_id,
            **{k: v for k, v in summary.items() if k != "round"},
            "wall_s": wall_s,
            "retries_total": retries_total,
            "clients_dropped": len(dropped_log),
            "history": history,
            "per_client": [
                {"client": r["client"], **{m: r[m] for m in ("auroc", "aupr", "false_error", "missing_error", "f1")}}
                for r in per_client
            ],
        }
        if hw_rows:  # the device clients' hardware evaluation, as logged to MLflow
            result["hardware"] = {**hardware_summary(hw_rows), "per_client": hw_rows}
        store.save(replace(ckpt, finished=True, result=result, elapsed_s=wall_s))
        run.finish("FINISHED")
    except BaseException as err:
        run.finish("FAILED", reason=f"{type(err).__name__}: {err}")
        raise
    return result


@flow(name="pqfl-train")
def pqfl_train(config_path: str | None = None, overrides: dict | None = None, resume: str | None = None) -> dict:
    """Run every configured method on identical data; returns per-method results and wall time.

    ``resume`` is an MLflow parent run id of an earlier, interrupted invocation: its stored
    config is used, finished methods are skipped and the others continue after their last
    checkpointed round, in their own MLflow runs.
    """
    started = time.perf_counter()
    if resume:
        store, cfg = resume_target(resume, config_path)
    else:
        cfg = with_fault_env(load_config(config_path).with_overrides(overrides))
        store = CheckpointStore(checkpoint_root(tracking_uri(cfg)), str(flow_run.id))
        store.write_manifest(cfg.model_dump(mode="json", by_alias=True), list(cfg.federation.methods), cfg.experiment_name)
    method_flow = train_method.with_options(task_runner=task_runner_for(cfg.runner))
    config = cfg.model_dump(mode="json", by_alias=True)
    results = {m: method_flow(config, m, str(flow_run.id), store.invocation) for m in cfg.federation.methods}
    return {
        "experiment": cfg.experiment_name,
        "mlflow_parent_run_ids": {m: r["mlflow_parent_run_id"] for m, r in results.items()},
        "wall_s": time.perf_counter() - started,
        "methods": {m: {k: v for k, v in r.items() if k not in ("mlflow_parent_run_id", "method")} for m, r in results.items()},
    }
