"""One client's fixed setup and evolving state, and the two things it does each round:
train locally, and evaluate a model on its own validation/test splits."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import logsumexp

from pqfl.baselines import DETECTORS
from pqfl.config import ClientProfile, FederationConfig
from pqfl.data.preprocessing import FeatureMap
from pqfl.federated.local_update import predict_outputs, predict_scores, train_local
from pqfl.metrics import auroc, choose_threshold, client_metrics
from pqfl.model import SIMULATORS, encoded_inputs
from pqfl.quantum.spec import CircuitSpec
from pqfl.results import ClientEvaluation
from pqfl.rng import derive_rng


@dataclass
class ClientSetup:
    """Fixed for a run: hardware profile, feature map and circuit-ready private splits."""

    index: int
    profile: ClientProfile
    spec: CircuitSpec
    feature_map: FeatureMap
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    normal_classes: list[int]
    replica: int = 0  # restart r of this client (federation.restarts); 0 = the first
    # With a shared encoder (fedenc): the feature map's linear part L (``FeatureMap.linear_part``);
    # the splits then hold each row's pre-squash input followed by its standardised features.
    encoder_map: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def stream_id(self) -> tuple:
        """Identifies this client (and restart) in every random stream it draws from."""
        return (self.index,) if self.replica == 0 else (self.index, "replica", self.replica)

    @property
    def n_train(self) -> int:
        return len(self.y_train)


@dataclass
class ClientState:
    """What a client keeps between rounds: its quantum block v_n, its head, its centre."""

    theta: np.ndarray
    w: np.ndarray
    b: float
    center: np.ndarray | None = None
    alpha: float | None = None  # APFL: the weight of the personal block in its mix with the global one
    enc: np.ndarray | None = None  # fedenc: the shared encoder's A (d, d) as this client last trained it

    def params(self, theta: np.ndarray | None = None) -> dict:
        out = {"theta": self.theta if theta is None else theta, "w": self.w, "b": np.asarray(self.b)}
        return out if self.alpha is None else {**out, "alpha": np.asarray(self.alpha)}


def model_params(setup: ClientSetup, state: ClientState, theta: np.ndarray | None = None) -> dict:
    """``state.params(theta)`` plus, with a shared encoder, its A and the client's fixed L."""
    params = state.params(theta)
    if state.enc is None:
        return params
    return {**params, "enc": state.enc, "enc_map": setup.encoder_map}


def circuit_inputs(setup: ClientSetup, state: ClientState, X: np.ndarray) -> np.ndarray:
    """The circuit-ready rows of a split of ``setup`` (X_train, X_val or X_test) under
    ``state``: the split itself, or, with a shared encoder, what ``pqfl.model.encoded_inputs``
    makes of it (for a backend that runs the circuit alone, such as a device)."""
    if state.enc is None:
        return X
    return np.asarray(encoded_inputs(setup.spec.encoding, model_params(setup, state), X))


def init_state(setup: ClientSetup, theta_block: np.ndarray, seed: int) -> ClientState:
    """Start from the global block with a small random head (seeded per client)."""
    rng = derive_rng(seed, "head", *setup.stream_id)
    return ClientState(theta=np.array(theta_block), w=rng.normal(0.0, 0.1, setup.spec.n_outputs), b=0.0)


def _center(setup: ClientSetup, simulator: str, state: ClientState, kind: str = "zero_state") -> np.ndarray:
    """One-class centre in ⟨Z⟩ space, fixed for the run.

    ``zero_state``: (1, …, 1), the expectation vector of |0…0⟩. The score
    Σ_i (1 − ⟨Z_i⟩)² is then small only for states the circuit maps close to |0…0⟩; a
    unitary cannot map every input there, so minimising it over the training rows cannot
    collapse — it rotates the rows' dominant subspace onto |0…0⟩ and its neighbours, a
    quantum analogue of PCA reconstruction error. Rows at the feature mean start at
    |0…0⟩ (angle encoding, and amplitude encoding with ``dataset.keep_norm``).
    ``initial_mean``: mean ⟨Z⟩ of the training rows under the initial circuit. Measured on
    ODDS (cardio, pendigits, wbc) its trained scores ranked anomalies below normal rows
    (AUROC < 0.5): the training rows' ⟨Z⟩ can be pulled to that interior point by
    rotating the measured axes towards directions real-amplitude states barely see.
    """
    if kind == "zero_state":
        return np.ones(setup.spec.n_outputs)
    z = np.asarray(SIMULATORS[simulator](setup.spec, setup.X_train, state.theta))
    return z.mean(axis=0)


def local_round(
    setup: ClientSetup,
    state: ClientState,
    *,
    start_theta: np.ndarray,
    anchor: np.ndarray | None,
    prox: float,
    fed: FederationConfig,
    simulator: str,
    round_index: int,
    phases: tuple[str, ...] = ("all",),
    mix: bool = False,
    stream: tuple = (),
    mean_target: np.ndarray | None = None,
    mean_reg: float = 0.0,
    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[ClientState, float]:
    """Train from ``start_theta`` for ``fed.local_epochs`` epochs per phase (each phase moves
    the parameters ``phases[i]`` names, ``local_update.TRAINABLE``; with ``mix`` the APFL
    objective; with ``mean_reg`` κ, FedDBE's pull of the mean output towards ``mean_target``);
    with ``extra`` (X, y, weight), rows appended to every minibatch, ``train_local``);
    returns the new state and the last phase's loss. ``stream`` tells apart two fits of one
    client in one round (their minibatch orders)."""
    if fed.objective == "one_class" and state.center is None:
        state = replace(state, center=_center(setup, simulator, state, fed.one_class_center))
    if mix and state.alpha is None:
        state = replace(state, alpha=0.5)
    state, loss = replace(state, theta=start_theta), float("nan")
    for p, trainable in enumerate(phases):
        params, loss = train_local(
            setup.spec,
            objective=fed.objective,
            simulator=simulator,
            shots=setup.profile.shots,
            params=model_params(setup, state),
            X=setup.X_train,
            y=setup.y_train,
            anchor=anchor,
            lam=prox,
            epochs=fed.local_epochs,
            batch_size=fed.batch_size,
            lr=fed.lr,
            lr_scale=fed.lr_decay ** (round_index - 1) if fed.lr_decay != 1.0 else None,
            optimizer=fed.optimizer,
            center=mean_target if mean_reg else state.center,
            seed=fed.seed,
            stream=("train", *setup.stream_id, round_index, *stream, *((p,) if p else ())),
            head_l2=fed.head_l2,
            trainable=trainable,
            mix=mix,
            mean_reg=mean_reg,
            extra=extra,
        )
        alpha = float(params["alpha"]) if "alpha" in params else state.alpha
        state = replace(
            state, theta=params["theta"], w=params["w"], b=float(params["b"]), alpha=alpha, enc=params.get("enc")
        )
    if fed.objective == "supervised" and fed.head_fit == "logreg":
        state = refit_head(setup, state, simulator=simulator, seed=fed.seed, round_index=round_index)
    return state, loss


def refit_head(setup: ClientSetup, state: ClientState, *, simulator: str, seed: int, round_index: int) -> ClientState:
    """The head as the per-client reference would fit it: scikit-learn's class-balanced
    logistic regression (``pqfl.baselines``' ``logreg``) on the circuit's outputs for the
    client's training rows. Its logit is the score, as the trained head's is. A client
    whose training rows hold one class keeps its head."""
    if len(np.unique(setup.y_train)) < 2:
        return state
    z = predict_outputs(
        setup.spec,
        simulator=simulator,
        shots=setup.profile.shots,
        theta=state.theta,
        X=setup.X_train,
        seed=seed,
        stream=("head", *setup.stream_id, round_index),
    )
    clf = DETECTORS["logreg"][1](seed, len(z)).fit(z, setup.y_train)
    return replace(state, w=clf.coef_[0].astype(np.float64), b=float(clf.intercept_[0]))


def replicas(setups: list[ClientSetup], restarts: int) -> list[ClientSetup]:
    """Virtual client r·N + n is restart r of client n: same data, its own random streams."""
    return [s if r == 0 else replace(s, replica=r) for r in range(restarts) for s in setups]


def combine_scores(scores: list[np.ndarray], objective: str) -> np.ndarray:
    """One score from the scores of a client's restarts (a single one is returned as is).

    supervised: each score is a logit, and the ensemble's is the log-odds of the members'
    mean anomaly probability, log Σσ(s) − log Σσ(−s), computed in log space so confident
    members do not saturate into ties. one_class: the mean distance."""
    if len(scores) == 1:
        return scores[0]
    S = np.stack(scores)
    if objective == "supervised":
        return logsumexp(-np.logaddexp(0.0, -S), axis=0) - logsumexp(-np.logaddexp(0.0, S), axis=0)
    return S.mean(axis=0)


def evaluate(
    setup: ClientSetup,
    state: ClientState,
    theta: np.ndarray,
    *,
    fed: FederationConfig,
    simulator: str,
    round_index: int,
) -> ClientEvaluation:
    """Metrics on the test split at the threshold chosen on the validation split."""
    return evaluate_members(setup, [(state, theta)], fed=fed, simulator=simulator, round_index=round_index)


def evaluate_members(
    setup: ClientSetup,
    members: list[tuple[ClientState, np.ndarray]],
    *,
    fed: FederationConfig,
    simulator: str,
    round_index: int,
) -> ClientEvaluation:
    """``evaluate`` for a detector made of several restarts' (state, θ): their scores are
    combined by ``combine_scores``; member r draws its shots from restart r's streams."""
    s_val, s_test = [], []
    for r, (state, theta) in enumerate(members):
        kw = dict(
            objective=fed.objective,
            simulator=simulator,
            shots=setup.profile.shots,
            params=model_params(setup, state, theta),
            center=state.center,
            seed=fed.seed,
        )
        sid = replace(setup, replica=setup.replica + r).stream_id
        s_val.append(predict_scores(setup.spec, X=setup.X_val, stream=("val", *sid, round_index), **kw))
        s_test.append(predict_scores(setup.spec, X=setup.X_test, stream=("test", *sid, round_index), **kw))
    s_val, s_test = combine_scores(s_val, fed.objective), combine_scores(s_test, fed.objective)
    threshold = choose_threshold(setup.y_val, s_val)
    return ClientEvaluation(
        client=setup.name,
        threshold=threshold,
        val_auroc=auroc(setup.y_val, s_val),
        **client_metrics(setup.y_test, s_test, threshold),
        test_scores=s_test,
    )
