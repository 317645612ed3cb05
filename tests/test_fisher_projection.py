"""dataset.projection: fisher — the supervised federated feature map (pqfl.data.preprocessing)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import roc_auc_score

from pqfl.config import parse_config
from pqfl.data.preprocessing import GlobalStats, SufficientStats, feature_map
from pqfl.errors import PQFLInputError
from pqfl.fleet import prepare


def _labelled(seed: int = 0, n: int = 600, d: int = 8):
    """Correlated features with differing scales; anomalies shifted along a low-variance direction."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = (rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d)) @ rotation.T * rng.uniform(0.5, 20.0, d) + rng.normal(
        size=d
    ) * 5
    y = (rng.random(n) < 0.15).astype(int)
    weak = np.linalg.svd(X - X.mean(0))[2][-1]  # the data's least-variance direction
    X[y == 1] += 4.0 * np.std((X - X.mean(0)) @ weak) * weak
    return X, y


def _stats(X, y, clients: int = 3, ridge: float = 1e-3):
    parts = np.array_split(np.arange(len(y)), clients)
    return GlobalStats.from_sums(
        [SufficientStats.of(X[p]) for p in parts], [SufficientStats.of(X[p][y[p] == 1]) for p in parts], ridge=ridge
    )


def test_leading_direction_scores_rows_as_sklearn_lda_does():
    X, y = _labelled()
    stats = _stats(X, y, ridge=1e-12)
    score = ((X - stats.mean) / stats.scale) @ stats.eigvecs[:, 0]
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(X, y).decision_function(X)
    assert np.corrcoef(score, lda)[0, 1] > 1 - 1e-9  # same direction, same sign (anomalies higher)


def test_rest_of_the_basis_is_the_pca_of_what_the_fisher_direction_leaves():
    X, y = _labelled(1)
    stats = _stats(X, y)
    plain = GlobalStats.from_sums([SufficientStats.of(X)])
    np.testing.assert_allclose(stats.mean, plain.mean)
    np.testing.assert_allclose(stats.scale, plain.scale)
    V = stats.eigvecs
    np.testing.assert_allclose(V.T @ V, np.eye(V.shape[1]), atol=1e-10)  # orthonormal
    Z = (X - stats.mean) / stats.scale
    w = V[:, 0]
    np.testing.assert_allclose(stats.eigvals[0], np.var(Z @ w), rtol=1e-9)
    rest = PCA().fit(Z - np.outer(Z @ w, w))
    np.testing.assert_allclose(
        stats.eigvals[1:], rest.explained_variance_[:-1] * (len(Z) - 1) / len(Z), rtol=1e-7, atol=1e-10
    )
    np.testing.assert_allclose(stats.eigvals.sum(), plain.eigvals.sum(), rtol=1e-9)  # total variance kept
    for k in range(1, 4):  # same components up to sign
        assert abs(V[:, k] @ rest.components_[k - 1]) == pytest.approx(1.0, abs=1e-6)


def test_angle_client_reads_the_discriminant_where_pca_misses_it():
    X, y = _labelled(2)
    pca = feature_map(GlobalStats.from_sums([SufficientStats.of(X)]), "angle", 3)
    fisher = feature_map(_stats(X, y), "angle", 3)
    auc = lambda F: max(roc_auc_score(y, F[:, j]) for j in range(F.shape[1]))  # noqa: E731
    assert auc(fisher.transform(X)) > 0.95 > auc(pca.transform(X)) + 0.1
    assert np.all(np.abs(fisher.transform(X)) < np.pi)
    # angle_scale common: one divisor, the largest std along the basis (here a principal
    # component's; the Fisher direction of this data has little variance).
    stats = _stats(X, y)
    common = feature_map(stats, "angle", 3, angle_scale="common")
    assert stats.eigvals[0] < stats.eigvals.max()
    np.testing.assert_allclose(common.whiten, np.sqrt(stats.eigvals.max()))


def test_fisher_basis_with_one_feature_or_a_constant_one():
    X, y = _labelled(4, d=3)
    one = GlobalStats.from_sums([SufficientStats.of(X[:, :1])], [SufficientStats.of(X[y == 1, :1])])
    assert one.eigvecs.shape == (1, 1) and abs(one.eigvecs[0, 0]) == 1.0
    assert np.sign(one.eigvecs[0, 0]) == np.sign(X[y == 1, 0].mean() - X[y == 0, 0].mean())  # anomalies score higher
    X[:, 1] = 7.0
    stats = _stats(X, y)
    assert stats.eigvecs[1, 0] == pytest.approx(0.0, abs=1e-12)  # the constant feature carries no weight
    np.testing.assert_allclose(stats.eigvecs.T @ stats.eigvecs, np.eye(3), atol=1e-10)


def test_fisher_needs_both_classes():
    X, y = _labelled(3)
    with pytest.raises(PQFLInputError, match="projection: fisher needs labelled anomalous"):
        GlobalStats.from_sums([SufficientStats.of(X)], [SufficientStats.of(X[:0])])


def _cfg(**dataset):
    return {
        "dataset": {"source": "sklearn:breast_cancer", "max_samples": 300, **dataset},
        "partition": {"normal": "global", "alpha": 5.0},
        "federation": {"rounds": 1},
        "clients": [
            {"name": "amp", "qubits": 3, "encoding": "amplitude"},
            {"name": "ang", "qubits": 3, "encoding": "angle"},
        ],
    }


def test_prepare_fits_fisher_from_the_clients_labelled_training_rows():
    fleet = prepare(parse_config(_cfg(projection="fisher")))
    setups, datas, stats = fleet.clients, fleet.datas, fleet.stats
    X = np.vstack([d.X_train for d in datas])
    y = np.concatenate([d.y_train for d in datas])
    assert set(y) == {0, 1}
    expected = GlobalStats.from_sums([SufficientStats.of(X)], [SufficientStats.of(X[y == 1])])
    np.testing.assert_allclose(stats.eigvecs, expected.eigvecs, atol=1e-9)
    # No test or validation row enters the fit: the angle client's first angle is the
    # discriminant score of its own rows.
    ang = setups[1]
    Z = (datas[1].X_test - stats.mean) / stats.scale
    np.testing.assert_allclose(ang.X_test[:, 0], 2 * np.arctan(Z @ stats.eigvecs[:, 0] / np.sqrt(stats.eigvals[0])))
    plain = prepare(parse_config(_cfg())).clients
    assert not np.allclose(plain[1].X_test[:, 0], ang.X_test[:, 0])


def test_a_client_can_keep_the_fisher_direction_alone():
    cfg = _cfg(fisher_ridge=0.5)
    cfg["clients"][1]["projection"] = "fisher"
    fleet = prepare(parse_config(cfg))
    setups, datas, stats = fleet.clients, fleet.datas, fleet.stats
    X = np.vstack([d.X_train for d in datas])
    y = np.concatenate([d.y_train for d in datas])
    pca = GlobalStats.from_sums([SufficientStats.of(X)])
    fisher = GlobalStats.from_sums([SufficientStats.of(X)], [SufficientStats.of(X[y == 1])], ridge=0.5)
    assert not np.allclose(
        fisher.eigvecs[:, 0],
        GlobalStats.from_sums([SufficientStats.of(X)], [SufficientStats.of(X[y == 1])]).eigvecs[:, 0],
    )
    np.testing.assert_allclose(stats.eigvecs, pca.eigvecs, atol=1e-9)  # the dataset's projection (pooled baseline)
    np.testing.assert_allclose(
        setups[0].feature_map.components, pca.eigvecs[:, : setups[0].feature_map.components.shape[1]], atol=1e-9
    )
    np.testing.assert_allclose(setups[1].feature_map.components, fisher.eigvecs[:, :3], atol=1e-9)


@pytest.mark.parametrize("where", ["dataset", "client"])
def test_fisher_is_refused_for_one_class(where):
    cfg = _cfg(projection="fisher") if where == "dataset" else _cfg()
    if where == "client":
        cfg["clients"][1]["projection"] = "fisher"
    cfg["federation"]["objective"] = "one_class"
    field = "dataset.projection" if where == "dataset" else "clients.ang.projection"
    with pytest.raises(PQFLInputError, match=f"{field}: fisher is fitted on labelled anomalies.*one_class"):
        parse_config(cfg)
