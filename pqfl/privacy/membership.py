"""Membership inference: does a client's trained detector give away which rows it trained on?

Each attack is reported as an AUROC of telling members (the client's training rows) from
non-members (rows of the same client the detector never trained on): 0.5 means the
attacker does no better than a coin, 1.0 that membership is fully exposed.

- :func:`loss_threshold_attack` — Yeom et al. 2018 ("Privacy risk in machine learning:
  analyzing the connection to overfitting"): a row with a low loss is guessed a member.
- :func:`shadow_attack` — Shokri et al. 2017 ("Membership inference attacks against
  machine learning models"), adapted to one client: shadow models trained like the target
  on rows of the client's own distribution teach a classifier what a member's loss and
  score look like.

:func:`membership_report` runs both for every client of a finished federation, and, for
strategies that upload, against the shared global model too (what the server, or anyone
the global model is released to, could learn).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import roc_auc_score

from pqfl.config import FederationConfig
from pqfl.rng import derive_rng

if TYPE_CHECKING:  # type hints only; the federated modules load JAX
    from pqfl.federated.client import ClientSetup, ClientState
    from pqfl.federated.rounds import Federation, FederationResult

    Member = tuple[ClientState, np.ndarray]


def _scores(setup, members_, *, objective, simulator, seed, X, stream) -> np.ndarray:
    """The client's detector's scores on X, its members' scores combined as in evaluation."""
    from pqfl.federated.client import combine_scores, model_params
    from pqfl.federated.local_update import predict_scores

    scores = []
    for r, (state, theta) in enumerate(members_):
        sid = replace(setup, replica=setup.replica + r).stream_id
        scores.append(
            predict_scores(
                setup.spec,
                objective=objective,
                simulator=simulator,
                shots=setup.profile.shots,
                params=model_params(setup, state, theta),
                center=state.center,
                X=X,
                seed=seed,
                stream=(*stream, *sid),
            )
        )
    return combine_scores(scores, objective)


def _loss(scores: np.ndarray, y: np.ndarray, objective: str) -> np.ndarray:
    """supervised: binary cross-entropy of the logit, log(1 + eˢ) − y·s (stable for any s);
    one_class: the distance itself, which is what training minimises."""
    if objective == "supervised":
        return np.logaddexp(0.0, scores) - np.asarray(y, dtype=np.float64) * scores
    return np.asarray(scores, dtype=np.float64)


def row_losses(
    setup: ClientSetup,
    members_: list[Member],
    *,
    objective: str,
    simulator: str,
    seed: int,
    X: np.ndarray,
    y: np.ndarray,
    stream: tuple,
) -> np.ndarray:
    """Per-row training loss of the client's detector (its members' combined score) on rows
    X with labels y: supervised, the binary cross-entropy of the logit; one_class, the
    distance. Shot noise is drawn from ``(seed, *stream)``."""
    s = _scores(setup, members_, objective=objective, simulator=simulator, seed=seed, X=X, stream=stream)
    return _loss(s, y, objective)


def _auroc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """AUROC of an attack score that should be higher for members; nan without both sets."""
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return float("nan")
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(labels, np.r_[member_scores, nonmember_scores]))


def loss_threshold_attack(loss_members: np.ndarray, loss_nonmembers: np.ndarray) -> float:
    """Yeom et al. 2018: a model fits its training rows better than unseen ones, so −loss is
    the attack score. Returns the AUROC over every threshold (member = 1, non-member = 0)."""
    return _auroc(-np.asarray(loss_members, dtype=float), -np.asarray(loss_nonmembers, dtype=float))


def _half(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random half of the rows (boolean mask), stratified by label so both halves hold
    normal rows and anomalies."""
    mask = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        mask[idx[: len(idx) // 2]] = True
    return mask


def _test_split(setup: ClientSetup, seed: int) -> np.ndarray:
    """The client's test rows the attacker holds (True; part of the shadow pool); the others
    are the target's evaluation non-members, which no attack model ever sees."""
    return _half(setup.y_test, derive_rng(seed, "membership", setup.index, "test-split"))


def _features(scores: np.ndarray, y: np.ndarray, objective: str) -> np.ndarray:
    """The attack classifier's input per row: [loss, score], and the label when supervised
    (a member's loss is low for its own label, so the label tells the classifier which way)."""
    cols = [_loss(scores, y, objective), scores]
    if objective == "supervised":
        cols.append(np.asarray(y, dtype=np.float64))
    return np.column_stack(cols)


def _train_shadow(setup, X, y, federation: FederationConfig, rounds: int, simulator: str, rng) -> ClientState:
    """A shadow model: the client's circuit from a fresh random start, trained on (X, y) with
    the target's budget — ``rounds`` local rounds of ``federation.local_epochs`` epochs each,
    with ``local_round``'s semantics (learning-rate decay, head refit, one-class centre)."""
    from pqfl.federated.client import ClientState, local_round

    spec = setup.spec
    shadow = replace(setup, X_train=X, y_train=y)
    fed = federation.model_copy(update={"seed": int(rng.integers(2**31))})
    state = ClientState(
        theta=rng.normal(0.0, federation.init_scale, (spec.layers, spec.qubits, 3)),
        w=rng.normal(0.0, 0.1, spec.n_outputs),
        b=0.0,
    )
    for k in range(1, rounds + 1):
        state, _ = local_round(
            shadow, state, start_theta=state.theta, anchor=None, prox=0.0, fed=fed, simulator=simulator, round_index=k
        )
    return state


def _attack_model(setup, federation: FederationConfig, *, rounds: int, simulator: str, shadows: int, seed: int):
    """Shokri et al. 2017's attack model for one client: ``shadows`` shadow models, each
    trained on a seeded random half ("in") of the shadow pool — the client's validation rows
    and its attacker-held test half — and scored on the whole pool; a logistic regression
    learns in vs out from the rows' features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    held = _test_split(setup, seed)
    X_pool = np.concatenate([setup.X_val, setup.X_test[held]])
    y_pool = np.concatenate([setup.y_val, setup.y_test[held]])
    feats, labels = [], []
    for s in range(shadows):
        rng = derive_rng(seed, "membership", setup.index, "shadow", s)
        inside = _half(y_pool, rng)
        state = _train_shadow(setup, X_pool[inside], y_pool[inside], federation, rounds, simulator, rng)
        scores = _scores(
            setup,
            [(state, state.theta)],
            objective=federation.objective,
            simulator=simulator,
            seed=seed,
            X=X_pool,
            stream=("membership", "shadow", s),
        )
        feats.append(_features(scores, y_pool, federation.objective))
        labels.append(inside.astype(int))
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(np.concatenate(feats), np.concatenate(labels))


def _attack_auroc(attack, setup, members_, *, objective: str, simulator: str, seed: int) -> float:
    """The attack model applied to the target: its training rows vs the held-out test half."""
    out = ~_test_split(setup, seed)
    probs = []
    for X, y, which in (
        (setup.X_train, setup.y_train, "members"),
        (setup.X_test[out], setup.y_test[out], "nonmembers"),
    ):
        kw = dict(objective=objective, simulator=simulator, seed=seed)
        scores = _scores(setup, members_, X=X, stream=("membership", which), **kw)
        probs.append(attack.predict_proba(_features(scores, y, objective))[:, 1])
    return _auroc(*probs)


def shadow_attack(
    setup: ClientSetup,
    members_: list[Member],
    federation: FederationConfig,
    *,
    rounds: int,
    simulator: str = "fast",
    shadows: int = 4,
    seed: int = 0,
) -> float:
    """Shokri et al. 2017's shadow-model attack on one client's detector, as AUROC.

    The attacker holds rows from the client's distribution that the target never trained
    on: the validation rows and a seeded, label-stratified half of the test rows. It trains
    ``shadows`` models with the client's circuit and the target's local budget (``rounds``
    rounds of ``federation``'s epochs, batch size, learning rate and objective) on random
    halves of those rows, and fits a logistic regression on [loss, score] (and the label,
    supervised) to tell each shadow's training rows from its other rows. Shadows train
    locally from a random start: the attacker cannot replay the federation. The attack is
    evaluated on the target's training rows (members) vs the other half of the test rows,
    which it never saw. Every draw comes from ``derive_rng(seed, "membership", client, …)``.
    """
    objective = federation.objective
    attack = _attack_model(setup, federation, rounds=rounds, simulator=simulator, shadows=shadows, seed=seed)
    return _attack_auroc(attack, setup, members_, objective=objective, simulator=simulator, seed=seed)


def _global_members(global_model: Federation, result: FederationResult, n: int) -> list[Member]:
    """Client n's detector with its block of the final global tensor in place of its own θ
    (its own head and centre kept), one member per restart."""
    T = len(global_model.roles.trainers)
    out = []
    for r, (state, _) in enumerate(result.members[n]):
        block = global_model._block(result.state.global_theta, global_model.roles.trainer_of(n) + r * T)
        out.append((replace(state, theta=block), block))
    return out


def membership_report(
    result: FederationResult,
    federation: FederationConfig,
    *,
    simulator: str = "fast",
    shadow: bool = True,
    global_model: Federation | None = None,
) -> list[dict]:
    """Per client, how well membership in its training rows can be inferred from its detector.

    Columns: client, method, threshold_auroc (:func:`loss_threshold_attack`, Yeom 2018),
    shadow_auroc (:func:`shadow_attack`, Shokri 2017; when ``shadow``), n_members (training
    rows) and n_nonmembers. Non-members are the client's test rows; with ``shadow`` only
    the half the shadow attacker never holds, so both attacks are scored on the same rows
    (the other half trains the shadows). Shadows get the budget of the client's kept model
    (its selected round's number of rounds).

    With ``global_model`` (the :class:`Federation` that produced ``result``) and a strategy
    that uploads (fedavg, fedprox, pqfl), the same attacks are run on the shared model: the
    client's block of the final global tensor with its own head — columns
    global_threshold_auroc and global_shadow_auroc. For fedavg and fedprox the evaluated
    model already is that block, so the two agree.
    """
    objective, seed = federation.objective, federation.seed
    uploads = global_model is not None and global_model.strategy.uploads
    rows = []
    for n, (setup, members_) in enumerate(zip(result.clients, result.members)):
        out = ~_test_split(setup, seed) if shadow else np.ones(len(setup.y_test), dtype=bool)
        row = {"client": setup.name, "method": result.strategy}
        targets = {"": members_, **({"global_": _global_members(global_model, result, n)} if uploads else {})}
        attack = None
        if shadow:
            rounds = result.selected_rounds[n]
            attack = _attack_model(setup, federation, rounds=rounds, simulator=simulator, shadows=4, seed=seed)
        for prefix, target in targets.items():
            kw = dict(objective=objective, simulator=simulator, seed=seed)
            inside = row_losses(setup, target, X=setup.X_train, y=setup.y_train, stream=("membership", "members"), **kw)
            outside = row_losses(
                setup, target, X=setup.X_test[out], y=setup.y_test[out], stream=("membership", "nonmembers"), **kw
            )
            row[f"{prefix}threshold_auroc"] = loss_threshold_attack(inside, outside)
            if attack is not None:
                row[f"{prefix}shadow_auroc"] = _attack_auroc(attack, setup, target, **kw)
        row.update(n_members=setup.n_train, n_nonmembers=int(out.sum()))
        rows.append(row)
    return rows
