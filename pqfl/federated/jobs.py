"""The units of work of a round, each a small picklable job and the function that runs it.

The round loop hands every job to a ``map_fn`` (``map_fn(run_fn, jobs)``): plain ``map``
runs them in process one after another; an orchestrator maps each function to a task of
its own (the Prefect flow runs ``train_client`` and ``evaluate_client`` as retried,
fanned-out tasks and ``aggregate_uploads`` as the join), on threads, processes or a Dask
cluster. A job carries everything it needs, so it gives the same result wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pqfl.config import FederationConfig
from pqfl.federated.client import ClientSetup, ClientState, evaluate_members, local_round
from pqfl.federated.server import ServerRule
from pqfl.federated.strategies import FitInstructions, Strategy
from pqfl.results import ClientEvaluation


@dataclass(frozen=True)
class TrainJob:
    """One trainer's local epochs of one round, as its strategy's ``FitInstructions`` say."""

    setup: ClientSetup
    state: ClientState
    fit: FitInstructions
    federation: FederationConfig
    simulator: str
    round_index: int


@dataclass(frozen=True)
class Trained:
    """A trainer's new state, its last epoch's mean loss and, when its strategy trains a
    separate block to upload (Ditto, APFL), that block."""

    state: ClientState
    loss: float
    retries: int = 0  # retries an orchestrator spent on the job
    upload: np.ndarray | None = None


def _fit(job: TrainJob, state: ClientState, fit: FitInstructions, stream: tuple = ()) -> tuple[ClientState, float]:
    return local_round(
        job.setup,
        state,
        start_theta=fit.start,
        anchor=fit.anchor,
        prox=fit.prox,
        fed=job.federation,
        simulator=job.simulator,
        round_index=job.round_index,
        phases=fit.phases,
        mix=fit.mix,
        stream=stream,
    )


def train_client(job: TrainJob) -> Trained:
    state, loss = _fit(job, job.state, job.fit)
    if job.fit.upload is None:
        return Trained(state, loss)
    # The upload fit starts from the client's head as the round began; its head is dropped.
    shared, _ = _fit(job, replace(job.state, alpha=None), job.fit.upload, stream=("upload",))
    return Trained(state, loss, upload=shared.theta)


@dataclass(frozen=True)
class EvalJob:
    """One client's detector — one (state, θ) per restart — scored on the client's splits."""

    setup: ClientSetup
    members: list[tuple[ClientState, np.ndarray]]
    federation: FederationConfig
    simulator: str
    round_index: int


def evaluate_client(job: EvalJob) -> ClientEvaluation:
    return evaluate_members(
        job.setup, job.members, fed=job.federation, simulator=job.simulator, round_index=job.round_index
    )


@dataclass(frozen=True)
class AggregateJob:
    """The server's step: combine the uploaded blocks into new global tensors."""

    strategy: Strategy
    previous: np.ndarray  # (sharing groups, L_max, Q_max, 3)
    blocks: list[np.ndarray]
    weights: list[float]
    groups: list[int]
    round_index: int
    rule: ServerRule | None = None  # the aggregation rule; None = the weighted masked mean


def aggregate_uploads(job: AggregateJob) -> np.ndarray:
    return job.strategy.aggregate(job.previous, job.blocks, job.weights, job.groups, job.rule, job.round_index)
