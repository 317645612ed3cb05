"""The training flow: for each method, rounds of fan-out local training, aggregation (join),
and per-client evaluation; the flow process alone logs to MLflow.

``pqfl_train`` (deployment ``pqfl-train``) runs the configured methods one after another
as ``pqfl-method`` subflows on identical prepared data. Each subflow uses the task
runner the config asks for (threads by default, or processes).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from prefect import flow, unmapped
from prefect.runtime import flow_run
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows.tracking import Tracker
from pqfl.config import Config, RunnerConfig, load_config, parse_config
from pqfl.experiment import pooled_setup, prepare
from pqfl.federated.aggregation import block_of
from pqfl.federated.client import init_state
from pqfl.federated.methods import RULES, prox_weight
from pqfl.federated.server import init_global, sample_clients
from pqfl.metrics import summarize
from tasks.federated import aggregate, evaluate, local_train

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


@flow(name="pqfl-method")
def train_method(config: dict, method: str, parent_flow_run_id: str | None = None) -> dict:
    """Train and evaluate one method for ``federation.rounds`` rounds; returns its final metrics."""
    cfg = parse_config(config)
    fed, sim = cfg.federation, cfg.simulator
    started = time.perf_counter()
    setups, datas, stats = prepare(cfg)
    eval_setups, train_setups = setups, setups
    if method == "centralized":
        trainer, eval_setups = pooled_setup(cfg, datas, stats)
        train_setups = [trainer]
    tracker = Tracker(cfg, parent_flow_run_id or str(flow_run.id))
    run = tracker.start_method(method, eval_setups)
    try:
        G = init_global(cfg.max_layers, cfg.max_qubits, fed.seed)
        states = [init_state(s, block_of(G, s.spec.layers, s.spec.qubits), fed.seed) for s in train_setups]
        history: list[dict] = []
        for k in range(1, fed.rounds + 1):
            round_start = time.perf_counter()
            losses: dict[int, float] = {}
            if method == "centralized":
                new_state, loss = local_train(train_setups[0], states[0], states[0].theta, None, 0.0, fed, sim, k)
                states = [new_state]
                eval_states = [new_state] * len(eval_setups)
                eval_thetas = [new_state.theta] * len(eval_setups)
                participants = list(range(len(eval_setups)))
                losses = {i: loss for i in participants}
            else:
                rule = RULES[method]
                participants = sample_clients(len(setups), fed.client_fraction, fed.min_clients, fed.seed, k)
                chosen = [setups[i] for i in participants]
                global_blocks = [block_of(G, s.spec.layers, s.spec.qubits) for s in chosen]
                starts = global_blocks if rule.start_from_global else [states[i].theta for i in participants]
                anchors = global_blocks if rule.prox else [None] * len(chosen)
                futures = local_train.map(
                    chosen,
                    [states[i] for i in participants],
                    starts,
                    anchors,
                    unmapped(prox_weight(method, fed.lam, fed.mu)),
                    unmapped(fed),
                    unmapped(sim),
                    unmapped(k),
                )
                for i, fut in zip(participants, futures):
                    states[i], losses[i] = fut.result()
                if rule.uploads:
                    G = aggregate(
                        G, [states[i].theta for i in participants], [float(setups[i].n_train) for i in participants]
                    )
                eval_states = states
                eval_thetas = [
                    st.theta if rule.evaluate_personal else block_of(G, s.spec.layers, s.spec.qubits)
                    for s, st in zip(setups, states)
                ]
            evals = evaluate.map(eval_setups, eval_states, eval_thetas, unmapped(fed), unmapped(sim), unmapped(k))
            final = [f.result() for f in evals]
            per_client = [_client_row(ev, losses.get(i)) for i, ev in enumerate(final)]
            summary = summarize(per_client)
            run.log_round(
                k, summary, per_client, extra={"round_wall_s": time.perf_counter() - round_start, "clients_in_round": len(participants)}
            )
            history.append({"round": k, **summary})
            log.info(
                "%-11s round %2d/%d  mean AUROC %.3f  worst %.3f  (%.1f s)",
                method, k, fed.rounds, summary["mean_auroc"], summary["worst_auroc"], time.perf_counter() - started,
            )
        run.log_artifacts(cfg, method, history, final, eval_setups, eval_thetas)
        run.log_models(cfg, method, eval_setups, eval_states, eval_thetas, final)
        wall_s = time.perf_counter() - started
        run.log_final({"wall_s": wall_s}, step=fed.rounds)
        run.finish("FINISHED")
    except BaseException as err:
        run.finish("FAILED", reason=f"{type(err).__name__}: {err}")
        raise
    summary = history[-1]
    return {
        "method": method,
        "mlflow_parent_run_id": run.parent_id,
        **{k: v for k, v in summary.items() if k != "round"},
        "wall_s": wall_s,
        "history": history,
        "per_client": [
            {"client": r["client"], **{m: r[m] for m in ("auroc", "aupr", "false_error", "missing_error", "f1")}}
            for r in per_client
        ],
    }


@flow(name="pqfl-train")
def pqfl_train(config_path: str | None = None, overrides: dict | None = None) -> dict:
    """Run every configured method on identical data; returns per-method results and wall time."""
    started = time.perf_counter()
    cfg: Config = load_config(config_path).with_overrides(overrides)
    method_flow = train_method.with_options(task_runner=task_runner_for(cfg.runner))
    config = cfg.model_dump(mode="json", by_alias=True)
    results = {m: method_flow(config, m, str(flow_run.id)) for m in cfg.federation.methods}
    return {
        "experiment": cfg.experiment_name,
        "mlflow_parent_run_ids": {m: r["mlflow_parent_run_id"] for m, r in results.items()},
        "wall_s": time.perf_counter() - started,
        "methods": {m: {k: v for k, v in r.items() if k not in ("mlflow_parent_run_id", "method")} for m, r in results.items()},
    }
