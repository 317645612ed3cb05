"""The classical control's linear model trains to scikit-learn's logistic regression, and
its FedAvg averages whole models."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from benchmarks.linear_control import SCHEMES, fit_linear, logistic_gradient, run_linear
from pqfl.data.partition import ClientData
from pqfl.data.preprocessing import GlobalStats, SufficientStats
from pqfl.federated.local_update import class_weights


def test_full_batch_training_reaches_sklearns_balanced_unpenalised_fit():
    X, y = make_classification(n_samples=120, n_features=4, n_informative=3, n_redundant=0, flip_y=0.15,
                               weights=[0.75], random_state=0)  # fmt: skip
    reference = LogisticRegression(C=np.inf, class_weight="balanced", tol=1e-10, max_iter=10_000).fit(X, y)
    params = fit_linear(np.zeros(5), X, y.astype(float), epochs=4000, batch=len(y), lr=0.01,
                        rng=np.random.default_rng(0))  # fmt: skip
    np.testing.assert_allclose(params[1:], reference.coef_[0], atol=2e-3)
    assert params[0] == pytest.approx(reference.intercept_[0], abs=2e-3)
    # at the optimum the class-balanced gradient vanishes
    assert np.abs(logistic_gradient(params, X, y.astype(float), class_weights(y))).max() < 1e-4


def _clients(seed: int) -> list[ClientData]:
    rng = np.random.default_rng(seed)
    out = []
    for n in range(3):
        X = rng.normal(size=(90, 3))
        y = (X[:, 0] + 0.5 * rng.normal(size=90) > 0.8).astype(float)
        out.append(ClientData(f"c{n}", X[:30], y[:30], X[30:60], y[30:60], X[60:], y[60:]))
    return out


def test_every_scheme_runs_and_fedavg_of_identical_clients_is_their_local_model():
    datas = _clients(1)
    stats = GlobalStats.from_sums([SufficientStats.of(d.X_train) for d in datas])
    results = {s: run_linear(datas, stats, s, rounds=2, epochs=2, batch=8, lr=0.05, seed=0) for s in SCHEMES}
    assert all(0.5 < r["mean_auroc"] <= 1.0 for r in results.values())
    same = [datas[0]] * 3  # three copies of one client: the average of equal models is that model
    one = run_linear(same[:1], stats, "local", rounds=2, epochs=2, batch=30, lr=0.05, seed=0)
    avg = run_linear(same, stats, "fedavg", rounds=2, epochs=2, batch=30, lr=0.05, seed=0)
    assert avg["mean_auroc"] == pytest.approx(one["mean_auroc"])
    with pytest.raises(ValueError, match="unknown scheme 'fedprox'"):
        run_linear(datas, stats, "fedprox", rounds=1, epochs=1, batch=8, lr=0.05, seed=0)
