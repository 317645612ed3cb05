"""Hardware evaluation of device clients after training, logged beside the simulated metrics.

For every client whose profile names a backend (``from_device`` → qiskit-aer with the
device's ``NoiseModel.from_backend``; ``backend: ibm_runtime`` → IBM Quantum), the final
model the method evaluates is run on that backend: the client's circuit transpiled to the
device, validation and test rows in one ``execute-circuits`` job, ⟨Z_i⟩ from the counts,
the client's head → scores; the threshold is chosen on the hardware validation scores
and the metrics are computed on the hardware test scores.

MLflow, in the chart view's ``hw/`` section: ``hw/auroc``, ``hw/aupr``,
``hw/false_error``, ``hw/missing_error``, ``hw/f1``, ``hw/threshold``, ``hw/retries``,
``hw/depth``, ``hw/two_qubit_gates`` and ``hw/wall_s`` in the client's nested run;
``hw/mean_*``, ``hw/worst_auroc`` and ``hw/sim_device_mean_auroc`` (the simulated AUROC
of the same clients) in the method's parent run, all at step = last round; the table
``hardware.csv``. The method's result (and so ``pqfl run --json``) carries the same
summary and rows under ``hardware``, with the keys ``hw_auroc`` … ``sim_device_mean_auroc``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from mlflow.entities import Metric

from pqfl.federated.client import circuit_inputs
from pqfl.metrics import choose_threshold, client_metrics
from pqfl.model import scores_from_expvals
from pqfl.results import ClientEvaluation
from pqfl.rng import derive_seed
from tasks.retry import FaultPlan, retry_options
from tasks.settings import RunConfig

log = logging.getLogger("pqfl.progress")

HW_METRICS = ("auroc", "aupr", "false_error", "missing_error", "f1")


def device_clients(setups) -> list[int]:
    """Indices of the setups whose profile asks for a hardware evaluation."""
    return [i for i, s in enumerate(setups) if getattr(s.profile, "backend", None)]


def hardware_metrics(setup, state, theta, z_val: np.ndarray, z_test: np.ndarray, objective: str) -> dict:
    """Metrics of the client's detector on hardware ⟨Z⟩: threshold on validation, metrics on test."""
    params = state.params(theta=theta)
    s_val = np.asarray(scores_from_expvals(objective, params, state.center, z_val))
    s_test = np.asarray(scores_from_expvals(objective, params, state.center, z_test))
    threshold = choose_threshold(setup.y_val, s_val)
    return {"threshold": threshold, **client_metrics(setup.y_test, s_test, threshold)}


def evaluate_on_hardware(
    run, cfg: RunConfig, method: str, setups, states, thetas, final: list[ClientEvaluation]
) -> list[dict]:
    """Run each device client's final model on its backend and log ``hw_*`` metrics; returns
    one row per device client (empty when the fleet has none)."""
    indices = device_clients(setups)
    if not indices:
        return []
    from pqfl.quantum.qiskit_backend import prepare_job  # qiskit is imported only for device clients
    from tasks.circuits import backend_for, execute_circuits

    fed = cfg.federation
    execute = execute_circuits.with_options(**retry_options(cfg.retries))
    faults = FaultPlan.from_config(cfg, method)
    rows = []
    for i in indices:
        setup, state, theta = setups[i], states[i], thetas[i]
        profile = setup.profile
        seed = derive_seed(fed.seed, "hardware", setup.index)
        started = time.perf_counter()
        backend, target, layout = backend_for(profile, seed=seed)
        X = circuit_inputs(setup, state, np.concatenate([setup.X_val, setup.X_test]))
        job = prepare_job(setup.spec, X, theta, target, layout, seed=seed)
        z, retries = execute(backend, job, profile.hardware_shots, seed, setup.name, faults)
        n_val = len(setup.y_val)
        metrics = hardware_metrics(setup, state, theta, z[:n_val], z[n_val:], fed.objective)
        ops = job.circuit.count_ops()
        rows.append(
            {
                "client": setup.name,
                "backend": profile.backend,
                "device": profile.device or profile.from_device,
                "shots": profile.hardware_shots,
                "sim_auroc": final[i].auroc,
                **{f"hw_{k}": v for k, v in metrics.items()},
                "hw_retries": retries,
                "hw_depth": job.circuit.depth(),
                "hw_two_qubit_gates": sum(ops.get(g, 0) for g in ("cx", "ecr", "cz")),
                "hw_wall_s": time.perf_counter() - started,
            }
        )
        log.info(
            "%-11s %s on %s: hardware AUROC %.3f (simulated %.3f, %.1f s)",
            method,
            setup.name,
            rows[-1]["device"],
            metrics["auroc"],
            final[i].auroc,
            rows[-1]["hw_wall_s"],
        )
    _log(run, fed.rounds, method, rows)
    return rows


def hardware_summary(rows: list[dict]) -> dict:
    """Mean hardware metrics over the device clients, the worst hardware AUROC, and the mean
    simulated AUROC of the same clients (the parent run's ``hw_*`` metrics)."""
    summary = {f"hw_mean_{k}": float(np.mean([r[f"hw_{k}"] for r in rows])) for k in HW_METRICS}
    summary["hw_worst_auroc"] = float(min(r["hw_auroc"] for r in rows))
    summary["sim_device_mean_auroc"] = float(np.mean([r["sim_auroc"] for r in rows]))
    return summary


def _mlflow_name(key: str) -> str:
    """``hw_auroc`` → ``hw/auroc``, ``sim_device_mean_auroc`` → ``hw/sim_device_mean_auroc``."""
    return f"hw/{key.removeprefix('hw_')}"


def _log(run, step: int, method: str, rows: list[dict]) -> None:
    ts = int(time.time() * 1000)
    client_keys = [f"hw_{k}" for k in (*HW_METRICS, "threshold")] + [
        "hw_retries",
        "hw_depth",
        "hw_two_qubit_gates",
        "hw_wall_s",
    ]
    for row in rows:
        run_id = run.client_run_ids[row["client"]]
        if run.has_step(run_id, "hw/auroc", step):  # a resumed run already logged it
            continue
        run.client.log_batch(run_id, metrics=[Metric(_mlflow_name(k), float(row[k]), ts, step) for k in client_keys])
    summary = hardware_summary(rows)
    if not run.has_step(run.parent_id, "hw/mean_auroc", step):
        run.client.log_batch(run.parent_id, metrics=[Metric(_mlflow_name(k), v, ts, step) for k, v in summary.items()])
    table = pd.DataFrame(rows)
    table.insert(0, "method", method)
    run.client.log_text(run.parent_id, table.to_csv(index=False), "hardware.csv")
