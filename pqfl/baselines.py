"""Classical reference detectors (scikit-learn) trained on the same client splits as PQFL.

Each detector runs up to three ways: ``client`` — one model per client on its own
training rows (what a client could do alone, classically); ``pooled`` — one model on every
client's training rows (no privacy, an upper reference), scored at each client;
``features`` — one model per client on exactly what that client's circuit is fed (its
feature map's output: amplitudes or angles after the federated PCA), which separates what
the encoding keeps from what the circuit does with it. Every way, the threshold is chosen
on the client's validation split and the metrics come from its test split
(``pqfl.metrics``), exactly as for the quantum methods.

``client`` and ``pooled`` standardise the raw features with the federated statistics
(``GlobalStats``), the same mean and scale the quantum clients use before their PCA.

| name | objective | model | anomaly score |
|---|---|---|---|
| ``iforest`` | one_class | IsolationForest | −score_samples |
| ``ocsvm`` | one_class | OneClassSVM (RBF) | −score_samples |
| ``lof`` | one_class | LocalOutlierFactor(novelty=True) | −score_samples |
| ``logreg`` | supervised | LogisticRegression(class_weight="balanced") | P(anomaly) |

Unsupervised detectors never see the labels (their training rows are as contaminated as
the quantum clients' one_class training rows); ``logreg`` uses the training labels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import LocalOutlierFactor
from sklearn.svm import OneClassSVM

from pqfl.data.partition import ClientData
from pqfl.data.preprocessing import GlobalStats
from pqfl.errors import PQFLInputError
from pqfl.metrics import auroc, choose_threshold, client_metrics, summarize
from pqfl.results import ClientEvaluation
from pqfl.rng import derive_seed


def _iforest(seed: int, n_train: int):
    return IsolationForest(n_estimators=100, random_state=seed % (2**31))


def _ocsvm(seed: int, n_train: int):
    return OneClassSVM(kernel="rbf", gamma="scale", nu=0.1)


def _lof(seed: int, n_train: int):
    return LocalOutlierFactor(n_neighbors=max(1, min(20, n_train - 1)), novelty=True)


def _logreg(seed: int, n_train: int):
    return LogisticRegression(class_weight="balanced", max_iter=2000)


# name → (objective it is the reference for, factory(seed, n_train))
DETECTORS: dict[str, tuple[str, Callable]] = {
    "iforest": ("one_class", _iforest),
    "ocsvm": ("one_class", _ocsvm),
    "lof": ("one_class", _lof),
    "logreg": ("supervised", _logreg),
}
SCOPES = ("client", "pooled", "features")


def detectors_for(objective: str, names: list[str] | None = None) -> list[str]:
    """The reference detectors of ``objective`` (restricted to ``names`` when given)."""
    chosen = list(DETECTORS) if names is None else names
    unknown = [n for n in chosen if n not in DETECTORS]
    if unknown:
        raise PQFLInputError(f"baselines: unknown detector(s) {unknown}; choose from {', '.join(DETECTORS)}")
    return [n for n in chosen if DETECTORS[n][0] == objective]


def anomaly_scores(model, X: np.ndarray) -> np.ndarray:
    """Higher = more anomalous, for every detector in ``DETECTORS``."""
    if isinstance(model, DummyClassifier):  # trained on one class: nothing ranks
        return np.zeros(len(X))
    if isinstance(model, LogisticRegression):
        return model.predict_proba(X)[:, 1]
    return -model.score_samples(X)


def _fit(name: str, X: np.ndarray, y: np.ndarray, seed: int):
    objective, factory = DETECTORS[name]
    if objective == "supervised" and len(np.unique(y)) < 2:
        # A client whose training rows hold one label cannot fit a classifier: its
        # reference is chance (every row scored alike), as a supervised detector would be.
        return DummyClassifier(strategy="prior").fit(X, y)
    model = factory(seed, len(X))
    return model.fit(X, y) if objective == "supervised" else model.fit(X)


def _evaluate(model, name: str, X_val, y_val, X_test, y_test) -> ClientEvaluation:
    val = anomaly_scores(model, X_val)
    test = anomaly_scores(model, X_test)
    threshold = choose_threshold(y_val, val)
    return ClientEvaluation(
        client=name,
        threshold=threshold,
        val_auroc=auroc(y_val, val),
        **client_metrics(y_test, test, threshold),
        test_scores=test,
    )


def run_baseline(
    name: str, scope: str, datas: list[ClientData], stats: GlobalStats, seed: int, setups: list | None = None
) -> dict:
    """One detector in one scope: per-client metrics (with test scores) and their summary.

    ``features`` needs the clients' ``setups`` (their circuit-ready splits)."""
    if scope not in SCOPES:
        raise PQFLInputError(f"baselines: unknown scope {scope!r}; use {', '.join(SCOPES)}")

    def z(X):
        return (X - stats.mean) / stats.scale

    if scope == "features":
        if setups is None:
            raise PQFLInputError("baselines: the features scope needs the clients' setups (pqfl.fleet.prepare)")
        # What each circuit is fed: its feature map's output, already applied to every split.
        views = [(s.name, s.X_train, s.y_train, s.X_val, s.y_val, s.X_test, s.y_test) for s in setups]
    else:
        views = [(d.name, z(d.X_train), d.y_train, z(d.X_val), d.y_val, z(d.X_test), d.y_test) for d in datas]
    if scope == "pooled":
        X = np.concatenate([v[1] for v in views])
        y = np.concatenate([v[2] for v in views])
        models = [_fit(name, X, y, derive_seed(seed, "baseline", name, "pooled"))] * len(views)
    else:
        key = ("features",) if scope == "features" else ()
        models = [_fit(name, v[1], v[2], derive_seed(seed, "baseline", name, *key, i)) for i, v in enumerate(views)]
    per_client = [_evaluate(m, v[0], *v[3:]) for m, v in zip(models, views)]
    return {"method": f"{name}-{scope}", "per_client": per_client, **summarize([e.row() for e in per_client])}


def run_baselines(
    datas: list[ClientData],
    stats: GlobalStats,
    objective: str,
    seed: int,
    names: list[str] | None = None,
    setups: list | None = None,
) -> list[dict]:
    """Every reference detector of ``objective``: per client and pooled, and on the
    circuit's own inputs when the clients' ``setups`` are given."""
    scopes = SCOPES if setups is not None else ("client", "pooled")
    return [
        run_baseline(n, scope, datas, stats, seed, setups) for n in detectors_for(objective, names) for scope in scopes
    ]
