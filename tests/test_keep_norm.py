"""Amplitude encoding that keeps each row's norm (dataset.keep_norm).

Plain amplitude encoding normalises a row, so two rows on the same ray — a normal row and
an anomaly five times further from the mean — become the same state. With keep_norm the
first amplitude (|0…0⟩) holds a constant anchor, and the state distinguishes them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pqfl.config import ClientProfile, DatasetConfig, FederationConfig, parse_config
from pqfl.data.preprocessing import GlobalStats, SufficientStats, feature_map
from pqfl.detector import QuantumDetector
from pqfl.federated.client import ClientSetup, ClientState
from pqfl.fleet import prepare
from pqfl.persistence import load_detector, save_detector
from pqfl.quantum.spec import CircuitSpec


def _data(n=300, d=10, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ A


def test_plain_amplitude_map_loses_the_norm():
    X = _data()
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    fmap = feature_map(stats, "amplitude", 8)
    row = X[:1]
    far = stats.mean + 5.0 * (row - stats.mean)  # same direction, five times as far
    assert np.allclose(fmap.transform(row), fmap.transform(far))


@pytest.mark.parametrize("out_dim", [4, 8])  # PCA down from 10 features
def test_keep_norm_states_are_unit_and_carry_the_norm(out_dim):
    X = _data()
    stats = GlobalStats.from_sums([SufficientStats.of(X[:150]), SufficientStats.of(X[150:])])
    fmap = feature_map(stats, "amplitude", out_dim, keep_norm=True, keep_residual=True)
    out = fmap.transform(X)
    assert out.shape == (len(X), out_dim)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    # Amplitudes: the anchor, out_dim - 2 PCA scores, the norm of the residual PCA drops;
    # all scaled by 1 / ||(anchor, z)|| with z the whole standardised row.
    Z = (X - stats.mean) / stats.scale
    k = out_dim - 2
    P = Z @ stats.eigvecs[:, :k]
    resid = np.sqrt(np.sum(Z**2, axis=1) - np.sum(P**2, axis=1))
    r = np.sqrt(np.sum(Z**2, axis=1) + fmap.norm_anchor**2)
    assert np.allclose(out[:, 0], fmap.norm_anchor / r)
    assert np.allclose(out[:, 1 : k + 1], P / r[:, None])
    assert np.allclose(out[:, -1], resid / r)
    # So the state keeps the whole row's norm: ||rest|| / anchor amplitude = ||z|| / anchor.
    assert np.allclose(np.linalg.norm(out[:, 1:], axis=1) / out[:, 0], np.linalg.norm(Z, axis=1) / fmap.norm_anchor)
    # The anchor is the RMS norm of the standardised training rows.
    assert fmap.norm_anchor == pytest.approx(np.sqrt(np.mean(np.sum(Z**2, axis=1))), rel=1e-6)
    # Rows on one ray now differ, and the anchor amplitude falls as the row moves away.
    row = X[:1]
    far = stats.mean + 5.0 * (row - stats.mean)
    a, b = fmap.transform(row), fmap.transform(far)
    assert not np.allclose(a, b)
    assert b[0, 0] < a[0, 0]
    # The mean row is |0…0>, not NaN.
    centre = fmap.transform(stats.mean[None, :])
    assert np.allclose(centre[0, 0], 1.0) and np.allclose(centre[0, 1:], 0.0)


def test_keep_norm_residual_flags_rows_off_the_principal_subspace():
    """An anomaly orthogonal to the kept components has small PCA scores; the residual
    amplitude still shows it."""
    rng = np.random.default_rng(3)
    d = 8
    # Eight features driven by two latent factors: two strong principal directions, six ~flat.
    X = rng.normal(size=(400, 2)) @ rng.normal(size=(2, d)) + 0.05 * rng.normal(size=(400, d))
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    fmap = feature_map(stats, "amplitude", 4, keep_norm=True, keep_residual=True)  # 2 PCA scores + residual
    off = (stats.mean + stats.scale * stats.eigvecs[:, -1])[None, :]  # one unit along the weakest direction
    assert np.allclose(off - stats.mean, 0.0, atol=2.0)  # an ordinary-sized row, only oriented oddly
    out_off, out_bulk = fmap.transform(off), fmap.transform(X)
    assert out_off[0, -1] > np.quantile(out_bulk[:, -1], 0.99)
    # Without keep_residual the 3 PCA scores of that row are ordinary: nothing flags it.
    plain = feature_map(stats, "amplitude", 4, keep_norm=True)
    assert not plain.residual and plain.transform(off)[0, 0] > np.quantile(plain.transform(X)[:, 0], 0.01)


def test_keep_norm_without_residual_keeps_the_subspace_norm():
    X = _data()
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    fmap = feature_map(stats, "amplitude", 8, keep_norm=True)
    P = ((X - stats.mean) / stats.scale) @ stats.eigvecs[:, :7]
    r = np.sqrt(np.sum(P**2, axis=1) + fmap.norm_anchor**2)
    out = fmap.transform(X)
    assert np.allclose(out[:, 0], fmap.norm_anchor / r) and np.allclose(out[:, 1:], P / r[:, None])
    assert fmap.norm_anchor == pytest.approx(np.sqrt(np.mean(np.sum(P**2, axis=1))), rel=1e-6)


def test_keep_norm_pads_when_there_are_few_features():
    X = _data(d=3)
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    out = feature_map(stats, "amplitude", 8, keep_norm=True).transform(X)
    assert out.shape == (len(X), 8)
    assert np.allclose(out[:, 4:], 0.0) and np.all(out[:, 0] > 0)  # 3 features fit: no PCA, no residual


def test_keep_norm_leaves_angle_encodings_alone():
    X = _data()
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    for enc in ("angle", "iqp"):
        assert np.array_equal(
            feature_map(stats, enc, 4, keep_norm=True).transform(X), feature_map(stats, enc, 4).transform(X)
        )


def test_keep_norm_makes_scaled_outliers_separable():
    """Anomalies that differ from normal rows only in distance from the mean: the last
    anchor amplitude ranks them with keep_norm; the plain map cannot rank them at all."""
    rng = np.random.default_rng(1)
    normal = _data(400, 6, seed=2)
    idx = rng.choice(400, 20, replace=False)
    anomalies = normal.mean(axis=0) + 6.0 * (normal[idx] - normal.mean(axis=0))
    X = np.concatenate([normal, anomalies])
    y = np.r_[np.zeros(400), np.ones(20)]
    stats = GlobalStats.from_sums([SufficientStats.of(normal)])
    kept = feature_map(stats, "amplitude", 8, keep_norm=True).transform(X)
    plain = feature_map(stats, "amplitude", 8).transform(X)
    assert roc_auc_score(y, -kept[:, 0]) > 0.95
    # Without the norm, each anomaly's state equals its normal twin's.
    assert np.allclose(plain[400:], plain[idx])


def test_prepare_applies_keep_norm_to_amplitude_clients_only():
    cfg = parse_config(
        {
            "dataset": {"source": "sklearn:breast_cancer", "keep_norm": True, "max_samples": 200},
            "partition": {"min_anomalies": 3},
            "clients": [
                {"name": "amp", "qubits": 3, "encoding": "amplitude"},
                {"name": "ang", "qubits": 3, "encoding": "angle"},
            ],
        }
    )
    setups = prepare(cfg).clients
    assert setups[0].feature_map.norm_anchor is not None
    assert setups[1].feature_map.norm_anchor is None
    assert np.allclose(np.linalg.norm(setups[0].X_train, axis=1), 1.0)


def test_saved_detector_keeps_the_norm_anchor(tmp_path):
    X = _data(d=6)
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    fmap = feature_map(stats, "amplitude", 4, keep_norm=True, keep_residual=True)
    profile = ClientProfile(name="amp", qubits=2, layers=1, encoding="amplitude")
    spec = CircuitSpec.from_profile(profile)
    Z = fmap.transform(X)
    setup = ClientSetup(0, profile, spec, fmap, Z, np.zeros(len(X)), Z, np.zeros(len(X)), Z, np.zeros(len(X)), [0])
    theta = np.full((1, 2, 3), 0.3)
    state = ClientState(theta=theta, w=np.array([0.5, -0.2]), b=0.1, center=np.zeros(2))
    fed = FederationConfig(objective="one_class")
    det = QuantumDetector.from_federation(
        setup, [(state, theta)], 0.5, fed, DatasetConfig(keep_norm=True, keep_residual=True)
    )
    save_detector(det, tmp_path, columns=[f"x{i}" for i in range(6)])
    loaded = load_detector(tmp_path)
    assert loaded.feature_map_.norm_anchor == pytest.approx(fmap.norm_anchor) and loaded.feature_map_.residual
    assert np.allclose(loaded.feature_map_.transform(X), Z)
    np.testing.assert_allclose(
        loaded.decision_function(pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])),
        det.decision_function(X),
        rtol=1e-12,
    )


@pytest.mark.parametrize("encoding", ["angle", "iqp"])
def test_angle_residual_is_the_pca_reconstruction_error(encoding):
    """keep_residual for angle/IQP clients: q − 1 whitened PCA scores and, on the last
    qubit, the norm of the residual: scikit-learn's PCA reconstruction error."""
    from sklearn.decomposition import PCA

    X = _data(d=10)
    stats = GlobalStats.from_sums([SufficientStats.of(X[:120]), SufficientStats.of(X[120:])])
    q = 4
    fmap = feature_map(stats, encoding, q, keep_residual=True)
    out = fmap.transform(X)
    assert out.shape == (len(X), q) and fmap.residual
    Z = (X - stats.mean) / stats.scale
    pca = PCA(n_components=q - 1).fit(Z)
    recon_error = np.linalg.norm(Z - pca.inverse_transform(pca.transform(Z)), axis=1)
    dropped_rms = np.sqrt(np.mean(recon_error**2))
    assert np.allclose(out[:, -1], 2.0 * np.arctan(recon_error / dropped_rms), atol=1e-6)
    # The first q − 1 angles are the plain map's (whitened, squashed PCA scores), up to sign.
    plain = feature_map(stats, encoding, q).transform(X)
    assert np.allclose(np.abs(out[:, :-1]), np.abs(plain[:, :-1]))
    # The mean row is still |0…0>: every angle is zero.
    assert np.allclose(fmap.transform(stats.mean[None, :]), 0.0)


def test_angle_residual_flags_rows_off_the_principal_subspace():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 2)) @ rng.normal(size=(2, 8)) + 0.05 * rng.normal(size=(400, 8))
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    off = (stats.mean + stats.scale * stats.eigvecs[:, -1])[None, :]
    with_resid, plain = feature_map(stats, "angle", 3, keep_residual=True), feature_map(stats, "angle", 3)
    assert with_resid.transform(off)[0, -1] > np.quantile(with_resid.transform(X)[:, -1], 0.99)
    # The plain map's last angle (the third principal score) is ordinary for that row.
    assert abs(plain.transform(off)[0, -1]) < np.quantile(np.abs(plain.transform(X)[:, -1]), 0.99)


def test_angle_residual_not_needed_when_features_fit():
    X = _data(d=4)
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    assert np.array_equal(
        feature_map(stats, "angle", 4, keep_residual=True).transform(X), feature_map(stats, "angle", 4).transform(X)
    )


@pytest.mark.parametrize("keep_residual", [False, True])
def test_common_angle_scale_divides_every_score_by_the_top_components_std(keep_residual):
    """angle_scale: common — the scores of scikit-learn's PCA (up to sign), and the residual,
    all over the first component's standard deviation: low-variance components stay small."""
    from sklearn.decomposition import PCA

    X = _data(d=10)
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    q = 6
    out = feature_map(stats, "angle", q, keep_residual=keep_residual, angle_scale="common").transform(X)
    Z = (X - stats.mean) / stats.scale
    k = q - keep_residual
    pca = PCA(n_components=k).fit(Z)
    top_std = np.sqrt(pca.explained_variance_[0] * (len(X) - 1) / len(X))  # population variance, as the stats hold
    expected = pca.transform(Z) / top_std
    if keep_residual:
        error = np.linalg.norm(Z - pca.inverse_transform(pca.transform(Z)), axis=1)
        expected = np.column_stack([expected, error / top_std])
    assert np.allclose(np.abs(out), np.abs(2.0 * np.arctan(expected)), atol=1e-6)
    # Unlike whitening, the spread of the angles falls with the component's variance.
    spread = out[:, :k].std(axis=0)
    assert spread[0] > 1.2 * spread[k - 1]
    whitened = feature_map(stats, "angle", q, keep_residual=keep_residual).transform(X)
    assert whitened[:, k - 1].std() > 1.2 * spread[k - 1]
