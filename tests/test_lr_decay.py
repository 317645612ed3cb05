"""federation.lr_decay: round k trains at lr × lr_decay^(k−1), from one compiled step whose
rate lives in the optimiser state (optax.inject_hyperparams); lr_decay 1 keeps the
constant-rate graph."""

from __future__ import annotations

import numpy as np
import pytest

from pqfl.config import ClientProfile, FederationConfig
from pqfl.data.preprocessing import FeatureMap
from pqfl.federated.client import ClientSetup, ClientState, local_round
from pqfl.federated.local_update import compiled_step, train_local
from pqfl.quantum.spec import CircuitSpec
from tests.test_local_update import _params, _toy

SPEC = CircuitSpec(qubits=2, layers=1, encoding="amplitude", pairs=((0, 1),))


def _train(optimizer: str, lr: float, lr_scale: float | None):
    X, y = _toy(24)
    return train_local(
        SPEC,
        objective="supervised",
        simulator="fast",
        shots=None,
        params=_params(),
        X=X,
        y=y,
        anchor=None,
        lam=0.0,
        epochs=3,
        batch_size=8,
        lr=lr,
        optimizer=optimizer,
        center=None,
        seed=3,
        stream=("train", 0, 1),
        lr_scale=lr_scale,
    )[0]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_scaled_rate_trains_as_the_constant_rate_of_that_value(optimizer):
    scaled = _train(optimizer, 0.2, 0.25)
    constant = _train(optimizer, 0.05, None)
    full = _train(optimizer, 0.2, None)
    for k in scaled:
        assert np.allclose(scaled[k], constant[k], atol=1e-10, rtol=0), k
    # ... and the scale is really applied: the full rate ends elsewhere.
    assert np.abs(scaled["theta"] - full["theta"]).max() > 1e-3
    # Scale 1 through the scheduled graph is the constant-rate graph.
    one = _train(optimizer, 0.2, 1.0)
    for k in one:
        assert np.allclose(one[k], full[k], atol=1e-10, rtol=0), k


def test_every_round_s_rate_reuses_one_compiled_step():
    for scale in (1.0, 0.5, 0.25, 0.125):
        _train("adam", 0.2, scale)
    _, step = compiled_step(SPEC, "supervised", "fast", None, "adam", 0.2, 0.0, True)
    assert step.signatures == 1


def _setup():
    X, y = _toy(24)
    profile = ClientProfile(name="c0", qubits=2, layers=1, encoding="amplitude")
    fmap = FeatureMap("amplitude", 4, np.zeros(4), np.ones(4), None, None)
    return ClientSetup(0, profile, SPEC, fmap, X, y, X, y, X, y, [0])


@pytest.mark.parametrize("round_index", [1, 3])
def test_local_round_trains_round_k_at_lr_times_decay_to_the_k_minus_1(round_index):
    setup = _setup()
    p = _params()
    state = ClientState(theta=p["theta"], w=p["w"], b=float(p["b"]))

    def run(fed):
        new, _ = local_round(
            setup,
            state,
            start_theta=state.theta,
            anchor=None,
            prox=0.0,
            fed=fed,
            simulator="fast",
            round_index=round_index,
        )
        return new

    decayed = run(FederationConfig(lr=0.2, lr_decay=0.5, local_epochs=2, batch_size=8))
    expected = run(FederationConfig(lr=0.2 * 0.5 ** (round_index - 1), local_epochs=2, batch_size=8))
    assert np.allclose(decayed.theta, expected.theta, atol=1e-10, rtol=0)
    assert np.allclose(decayed.w, expected.w, atol=1e-10, rtol=0)
    if round_index > 1:
        undecayed = run(FederationConfig(lr=0.2, local_epochs=2, batch_size=8))
        assert np.abs(decayed.theta - undecayed.theta).max() > 1e-3


def test_default_is_a_constant_rate():
    assert FederationConfig().lr_decay == 1.0
