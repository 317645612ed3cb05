"""federation.head_fit: logreg refits a supervised client's head after each local round as
scikit-learn's class-balanced LogisticRegression on the circuit's outputs for the
client's training rows (the per-client reference's estimator); predict_outputs gives
those outputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pqfl.config import ClientProfile, FederationConfig
from pqfl.data.preprocessing import FeatureMap
from pqfl.federated.client import ClientSetup, ClientState, local_round, refit_head
from pqfl.federated.local_update import EVAL_CHUNK, predict_outputs, predict_scores
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.spec import CircuitSpec

SPEC = CircuitSpec(qubits=2, layers=1, encoding="amplitude", pairs=((0, 1),))
ZZ = CircuitSpec(qubits=2, layers=1, encoding="amplitude", pairs=((0, 1),), correlators=True)


def _toy(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 4 == 0).astype(np.float64)
    centres = np.where(y[:, None] == 1, np.array([0.2, 0.3, 0.5, 0.8]), np.array([1.0, 0.1, 0.2, 0.0]))
    X = centres + 0.3 * rng.normal(size=(n, 4))
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


def _setup(spec=SPEC, y=None):
    X, y0 = _toy()
    y = y0 if y is None else y
    profile = ClientProfile(
        name="c0", qubits=2, layers=1, encoding="amplitude", measure="zz" if spec.correlators else "z"
    )
    fmap = FeatureMap("amplitude", 4, np.zeros(4), np.ones(4), None, None)
    return ClientSetup(0, profile, spec, fmap, X, y, X, y, X, y, [0])


def _state(spec=SPEC, seed: int = 1):
    rng = np.random.default_rng(seed)
    return ClientState(theta=rng.normal(0.0, 0.5, (1, 2, 3)), w=rng.normal(0.0, 0.1, spec.n_outputs), b=0.0)


@pytest.mark.parametrize("spec", [SPEC, ZZ], ids=["z", "zz"])
def test_predict_outputs_are_the_simulator_s_expectations_over_chunks(spec):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(EVAL_CHUNK + 37, 4))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    theta = _state(spec).theta
    out = predict_outputs(spec, simulator="fast", shots=None, theta=theta, X=X, seed=0, stream=("t",))
    assert out.shape == (len(X), spec.n_outputs)
    assert np.allclose(out, np.asarray(fast_expvals(spec, X, theta)), atol=1e-12)


@pytest.mark.parametrize("spec", [SPEC, ZZ], ids=["z", "zz"])
def test_refit_head_is_scikit_learn_s_balanced_logistic_regression_on_the_outputs(spec):
    setup, state = _setup(spec), _state(spec)
    new = refit_head(setup, state, simulator="fast", seed=0, round_index=1)
    assert np.array_equal(new.theta, state.theta)
    z = np.asarray(fast_expvals(spec, setup.X_train, state.theta))
    clf = LogisticRegression(class_weight="balanced", max_iter=2000).fit(z, setup.y_train)
    assert np.allclose(new.w, clf.coef_[0], atol=1e-8) and np.isclose(new.b, clf.intercept_[0], atol=1e-8)
    # The model's score is then the classifier's logit.
    scores = predict_scores(
        spec,
        objective="supervised",
        simulator="fast",
        shots=None,
        params=new.params(),
        center=None,
        X=setup.X_test,
        seed=0,
        stream=("s",),
    )
    assert np.allclose(scores, clf.decision_function(z), atol=1e-8)


def test_a_client_with_one_class_in_training_keeps_its_head():
    setup, state = _setup(y=np.zeros(40)), _state()
    new = refit_head(setup, state, simulator="fast", seed=0, round_index=1)
    assert np.array_equal(new.w, state.w) and new.b == state.b


def _round(fed, setup=None, state=None):
    setup, state = setup or _setup(), state or _state()
    return local_round(
        setup, state, start_theta=state.theta, anchor=None, prox=0.0, fed=fed, simulator="fast", round_index=2
    )[0]


def test_local_round_refits_the_head_on_the_trained_circuit():
    setup = _setup()
    kw = dict(lr=0.1, local_epochs=2, batch_size=8)
    sgd = _round(FederationConfig(**kw), setup)
    refit = _round(FederationConfig(**kw, head_fit="logreg"), setup)
    # Same circuit training (the refit comes after it), different head: the refit one.
    assert np.array_equal(refit.theta, sgd.theta)
    expected = refit_head(setup, sgd, simulator="fast", seed=0, round_index=2)
    assert np.allclose(refit.w, expected.w, atol=1e-12) and np.isclose(refit.b, expected.b, atol=1e-12)
    assert not np.allclose(refit.w, sgd.w, atol=1e-3)


def test_one_class_ignores_head_fit():
    kw = dict(objective="one_class", lr=0.1, local_epochs=1, batch_size=8)
    a = _round(FederationConfig(**kw))
    b = _round(FederationConfig(**kw, head_fit="logreg"))
    assert np.array_equal(a.theta, b.theta) and np.array_equal(a.w, b.w)
