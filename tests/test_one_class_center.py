"""The one_class centre (federation.one_class_center).

zero_state puts the centre at (1, …, 1), the ⟨Z⟩ of |0…0⟩. Over any orthonormal basis of
inputs Σ_k Σ_i (1 − ⟨Z_i⟩_k) = Σ_i Tr(1 − U†Z_iU) = q·2^q for every unitary U, so the mean
score over a basis stays ≥ q whatever training does: the objective cannot collapse. The old
initial_mean centre (mean ⟨Z⟩ at the start) has no such floor: rotating the measured axes
to X sends every score towards a constant.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from pqfl.config import ClientProfile, FederationConfig
from pqfl.data.preprocessing import FeatureMap
from pqfl.federated.client import ClientSetup, ClientState, _center, local_round
from pqfl.federated.local_update import predict_scores, train_local
from pqfl.quantum.spec import CircuitSpec

PROFILE = ClientProfile(name="amp3", qubits=3, layers=2, entangling="ring", encoding="amplitude")
SPEC = CircuitSpec.from_profile(PROFILE)
BASIS = np.eye(8)


def _setup(X, y):
    fmap = FeatureMap("amplitude", 8, np.zeros(8), np.ones(8), None, None)
    return ClientSetup(0, PROFILE, SPEC, fmap, X, y, X, y, X, y, [0])


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"theta": rng.normal(0.0, 0.3, (2, 3, 3)), "w": np.zeros(3), "b": np.asarray(0.0)}


def _train(X, center, epochs=60, seed=0):
    params, _ = train_local(
        SPEC,
        objective="one_class",
        simulator="fast",
        shots=None,
        params=_params(seed),
        X=X,
        y=np.zeros(len(X)),
        anchor=None,
        lam=0.0,
        epochs=epochs,
        batch_size=8,
        lr=0.1,
        optimizer="adam",
        center=center,
        seed=seed,
        stream=("t",),
    )
    return params


def _scores(params, center, X):
    return predict_scores(
        SPEC,
        objective="one_class",
        simulator="fast",
        shots=None,
        params=params,
        center=center,
        X=X,
        seed=0,
        stream=("s",),
    )


def test_default_centre_is_the_zero_state_and_initial_mean_is_kept():
    assert FederationConfig().one_class_center == "zero_state"
    X = BASIS
    setup, state = _setup(X, np.zeros(8)), ClientState(theta=_params()["theta"], w=np.zeros(3), b=0.0)
    assert np.array_equal(_center(setup, "fast", state, "zero_state"), np.ones(3))
    # Over a full basis the mean ⟨Z⟩ is 0 for any circuit.
    assert np.allclose(_center(setup, "fast", state, "initial_mean"), 0.0, atol=1e-12)


def test_local_round_uses_the_configured_centre():
    X = BASIS
    setup, state = _setup(X, np.zeros(8)), ClientState(theta=_params()["theta"], w=np.zeros(3), b=0.0)
    for kind, expected in (("zero_state", np.ones(3)), ("initial_mean", np.zeros(3))):
        fed = FederationConfig(objective="one_class", one_class_center=kind, local_epochs=1, batch_size=8)
        new, _ = local_round(
            setup, state, start_theta=state.theta, anchor=None, prox=0.0, fed=fed, simulator="fast", round_index=1
        )
        assert np.allclose(new.center, expected, atol=1e-12)


def test_zero_state_centre_cannot_collapse():
    """Trained on a whole basis, the zero_state score keeps its floor (mean ≥ q); the
    initial_mean score of the same rows is driven to ~0 (hypersphere collapse)."""
    ones = np.ones(3)
    trained = _train(BASIS, ones)
    assert _scores(trained, ones, BASIS).mean() >= 3.0 - 1e-9
    mean_centre = np.zeros(3)  # the initial mean ⟨Z⟩ over a basis
    assert _scores(_params(), mean_centre, BASIS).mean() > 1.0
    collapsed = _train(BASIS, mean_centre)
    assert _scores(collapsed, mean_centre, BASIS).mean() < 0.05


def test_zero_state_training_learns_the_normal_subspace():
    """Normal rows live in a random 2-dimensional subspace of the 8 amplitudes, anomalies
    anywhere: trained with the zero_state centre the score separates them, though at the
    start (random circuit, subspace not aligned with |0…0>) it does not."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    normal = rng.normal(size=(120, 2)) @ basis[:, :2].T
    anomalies = rng.normal(size=(12, 8))
    X = np.concatenate([normal, anomalies])
    y = np.r_[np.zeros(120), np.ones(12)]
    ones = np.ones(3)
    before = roc_auc_score(y, _scores(_params(), ones, X))
    trained = _train(X, ones, epochs=40)
    after = roc_auc_score(y, _scores(trained, ones, X))
    assert after > 0.9
    assert after > before + 0.1
