"""Prefect tasks: thin, retriable wrappers around the library's per-client steps.

Tasks take and return small arrays and dicts; they never touch MLflow. Caching is off:
inputs are arrays that change every round, and hashing them would cost more than it saves.

``local-train`` and ``evaluate`` are per-client jobs: the flow gives them retry options
(``tasks.retry.retry_options``) and a :class:`~tasks.retry.FaultPlan`, which may fail an
attempt on purpose before any work is done. Each returns how many retries it needed.
"""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from pqfl.compile_cache import enable_persistent_cache
from pqfl.config import Config, FederationConfig
from pqfl.experiment import prepare
from pqfl.federated import client as client_lib
from pqfl.federated.aggregation import grouped_average
from tasks.retry import NO_FAULTS, FaultPlan

# Worker processes import this module too: they share the on-disk compilation cache.
enable_persistent_cache()


@task(name="prepare-clients", cache_policy=NO_CACHE)
def prepare_clients(cfg: Config):
    """Load, partition and preprocess (federated statistics) the data for every client."""
    return prepare(cfg)


@task(name="local-train", cache_policy=NO_CACHE, task_run_name="local-train-{setup.profile.name}-r{round_index}")
def local_train(
    setup: client_lib.ClientSetup,
    state: client_lib.ClientState,
    start_theta: np.ndarray,
    anchor: np.ndarray | None,
    prox: float,
    fed: FederationConfig,
    simulator: str,
    round_index: int,
    faults: FaultPlan = NO_FAULTS,
) -> tuple[client_lib.ClientState, float, int]:
    """One client's local epochs for this round (fan-out): (new state, loss, retries used)."""
    attempt = max(task_run.run_count, 1)
    faults.check("train", setup.name, round_index, attempt)
    new_state, loss = client_lib.local_round(
        setup, state, start_theta=start_theta, anchor=anchor, prox=prox, fed=fed, simulator=simulator, round_index=round_index
    )
    return new_state, loss, attempt - 1


@task(name="aggregate", cache_policy=NO_CACHE)
def aggregate(previous: np.ndarray, blocks: list[np.ndarray], weights: list[float], groups: list[int]) -> np.ndarray:
    """Masked, size-weighted average of the uploaded blocks within each sharing group (join)."""
    return grouped_average(previous, blocks, weights, groups)


@task(name="evaluate", cache_policy=NO_CACHE, task_run_name="evaluate-{setup.profile.name}-r{round_index}")
def evaluate(
    setup: client_lib.ClientSetup,
    states: list[client_lib.ClientState],
    thetas: list[np.ndarray],
    fed: FederationConfig,
    simulator: str,
    round_index: int,
    faults: FaultPlan = NO_FAULTS,
) -> dict:
    """The model a method evaluates for this client (one member per restart), scored on its
    own validation/test data; ``retries`` says how many retries the evaluation needed."""
    attempt = max(task_run.run_count, 1)
    faults.check("evaluate", setup.name, round_index, attempt)
    row = client_lib.evaluate_members(setup, list(zip(states, thetas)), fed=fed, simulator=simulator, round_index=round_index)
    return {**row, "retries": attempt - 1}
