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
from pqfl.federated.local_update import predict_outputs, predict_scores
from pqfl.federated.server import ServerRule
from pqfl.federated.strategies import FitInstructions, Strategy, pack_head, unpack_head
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
    separate block to upload (Ditto, APFL), that block; when it shares heads, the uploaded
    fit's head (packed, ``pack_head``)."""

    state: ClientState
    loss: float
    retries: int = 0  # retries an orchestrator spent on the job
    upload: np.ndarray | None = None
    upload_head: np.ndarray | None = None
    upload_mean: np.ndarray | None = None  # the mean circuit output over the training rows (FedDBE)
    upload_scores: np.ndarray | None = None  # logits on the reference rows (distillation)
    upload_encoder: np.ndarray | None = None  # the trained shared encoder's A, flattened (fedenc)


def _distilled(job: TrainJob, fit: FitInstructions) -> tuple | None:
    """The reference rows with the teacher's soft labels, weighing κ times a minibatch."""
    if fit.teacher is None or not fit.distill:
        return None
    n = len(fit.reference)
    weight = np.full(n, fit.distill * job.federation.batch_size / n)
    return fit.reference, 1.0 / (1.0 + np.exp(-np.asarray(fit.teacher, dtype=np.float64))), weight


def _fit(job: TrainJob, state: ClientState, fit: FitInstructions, stream: tuple = ()) -> tuple[ClientState, float]:
    if fit.head is not None:
        w, b = unpack_head(fit.head, len(state.w))
        state = replace(state, w=w, b=b)
    if fit.encoder is not None:
        d = int(round(np.sqrt(len(fit.encoder))))
        state = replace(state, enc=np.asarray(fit.encoder, dtype=np.float64).reshape(d, d))
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
        mean_target=fit.mean_target,
        mean_reg=fit.mean_reg,
        extra=_distilled(job, fit),
    )


def _mean_output(job: TrainJob, theta: np.ndarray) -> np.ndarray:
    """The mean circuit output over the client's training rows under ``theta``."""
    setup = job.setup
    z = predict_outputs(setup.spec, simulator=job.simulator, shots=setup.profile.shots, theta=theta,
                        X=setup.X_train, seed=job.federation.seed,
                        stream=("mean", *setup.stream_id, job.round_index))  # fmt: skip
    return z.mean(axis=0)


def _reference_scores(job: TrainJob, state: ClientState) -> np.ndarray:
    """The client's logits on its reference rows."""
    setup, fed = job.setup, job.federation
    return predict_scores(setup.spec, objective=fed.objective, simulator=job.simulator, shots=setup.profile.shots,
                          params=state.params(), center=state.center, X=job.fit.reference, seed=fed.seed,
                          stream=("reference", *setup.stream_id, job.round_index))  # fmt: skip


def train_client(job: TrainJob) -> Trained:
    state, loss = _fit(job, job.state, job.fit)
    if job.fit.upload is None:
        head = None if job.fit.head is None else pack_head(state.w, state.b)
        mean = _mean_output(job, state.theta) if job.fit.report_mean else None
        scores = None if job.fit.reference is None else _reference_scores(job, state)
        encoder = None if job.fit.encoder is None else state.enc.ravel()
        return Trained(state, loss, upload_head=head, upload_mean=mean, upload_scores=scores, upload_encoder=encoder)
    # The upload fit starts from the client's head as the round began (or the shared head);
    # its head is dropped unless heads are shared.
    upload = job.fit.upload
    shared, _ = _fit(job, replace(job.state, alpha=None), upload, stream=("upload",))
    head = None if upload.head is None else pack_head(shared.w, shared.b)
    return Trained(state, loss, upload=shared.theta, upload_head=head)


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
    previous_heads: np.ndarray | None = None  # (sharing groups, 1 + outputs_max), strategies that share heads
    heads: list[np.ndarray] | None = None  # the uploaded packed heads, one per block
    previous_means: np.ndarray | None = None  # (sharing groups, outputs_max), strategies that share means
    means: list[np.ndarray] | None = None  # the uploaded mean circuit outputs, one per block
    previous_scores: np.ndarray | None = None  # (sharing groups, reference rows), strategies that share scores
    scores: list[np.ndarray] | None = None  # the uploaded logits on the reference rows, one per block
    previous_encoders: np.ndarray | None = None  # (sharing groups, d·d), strategies that share encoders
    encoders: list[np.ndarray] | None = None  # the uploaded encoders (flattened A), one per block


def aggregate_uploads(job: AggregateJob) -> np.ndarray | tuple:
    """The new global tensors; with ``heads``, ``means``, ``scores`` or ``encoders``, (tensors,
    heads, means, scores, encoders): the tensors combined by the strategy, the rest by the
    job's rule (None where nothing of the kind was uploaded)."""
    G = job.strategy.aggregate(job.previous, job.blocks, job.weights, job.groups, job.rule, job.round_index)
    if job.heads is None and job.means is None and job.scores is None and job.encoders is None:
        return G
    rule = job.rule or ServerRule()

    def combine(previous, uploads):
        return None if uploads is None else rule.combine(previous, uploads, job.weights, job.groups, job.round_index)

    return (
        G,
        combine(job.previous_heads, job.heads),
        combine(job.previous_means, job.means),
        combine(job.previous_scores, job.scores),
        combine(job.previous_encoders, job.encoders),
    )
