"""The last layer's ω angles: exactly zero gradient in theory, stopped in practice.

Without the stop, roundoff-sized gradients (whose sign depends on the simulator) are
amplified by Adam under a proximal pull, and fast and reference runs drift apart."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqfl.federated.local_update import train_local
from pqfl.model import stop_redundant_gradient
from pqfl.quantum.ansatz import entangling_pairs
from pqfl.quantum.spec import CircuitSpec
from tests.test_quantum import pennylane_value_and_grad

NOISE = {
    "none": (0.0, 0.0, 0.0),
    "depolarizing": (0.03, 0.0, 0.0),
    "damping": (0.0, 0.04, 0.0),
    "readout": (0.0, 0.0, 0.05),
}


def _spec(encoding, entangling, noise, qubits=3, layers=2):
    dep, damp, ro = NOISE[noise]
    return CircuitSpec(
        qubits=qubits,
        layers=layers,
        encoding=encoding,
        pairs=tuple(entangling_pairs(entangling, qubits)),
        depolarizing=dep,
        amplitude_damping=damp,
        readout=ro,
    )


def _features(encoding, qubits, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 1.0, (n, 2**qubits if encoding == "amplitude" else qubits))


@pytest.mark.parametrize(
    "encoding,entangling,noise",
    # each encoding, entangler and noise type at least once
    [
        ("amplitude", "ring", "none"),
        ("angle", "all_to_all", "depolarizing"),
        ("iqp", "linear", "damping"),
        ("amplitude", "all_to_all", "readout"),
        ("angle", "ring", "none"),
    ],
)
def test_last_layer_omega_has_zero_gradient_on_pennylane(encoding, entangling, noise):
    spec = _spec(encoding, entangling, noise, qubits=2)
    X = _features(encoding, spec.qubits, 4)
    theta = np.random.default_rng(1).normal(size=(spec.layers, spec.qubits, 3))
    weights = np.random.default_rng(2).normal(size=spec.qubits)
    _, grad = pennylane_value_and_grad(spec, X, theta, np.broadcast_to(weights, (len(X), spec.qubits)))
    assert np.max(np.abs(np.asarray(grad)[-1, :, 2])) < 1e-12  # the theory the stop relies on
    assert np.max(np.abs(np.asarray(grad)[:-1])) > 1e-3  # and the other angles do matter
    stopped = jax.grad(lambda t: jnp.sum(stop_redundant_gradient(t) ** 2))(jnp.asarray(theta))
    assert np.all(np.asarray(stopped)[-1, :, 2] == 0.0)
    np.testing.assert_array_equal(np.asarray(stopped)[:-1], 2 * theta[:-1])


def test_proximal_training_is_the_same_on_fast_and_reference():
    spec = _spec("amplitude", "ring", "depolarizing")
    X = _features("amplitude", spec.qubits, 40, seed=3)
    y = (np.arange(40) % 4 == 0).astype(float)
    start = np.random.default_rng(4).normal(size=(spec.layers, spec.qubits, 3))
    params = {"theta": start, "w": np.full(spec.qubits, 0.1), "b": np.asarray(0.0)}
    out = {}
    for sim in ("fast", "reference"):
        out[sim], _ = train_local(
            spec,
            objective="supervised",
            simulator=sim,
            shots=None,
            params=params,
            X=X,
            y=y,
            anchor=start,
            lam=0.01,
            epochs=4,
            batch_size=8,
            lr=0.05,
            optimizer="adam",
            center=None,
            seed=0,
            stream=("t",),
        )
    # The anchor equals the start, so nothing may move ω_last; everything else agrees to roundoff.
    np.testing.assert_array_equal(out["fast"]["theta"][-1, :, 2], start[-1, :, 2])
    np.testing.assert_allclose(out["fast"]["theta"], out["reference"]["theta"], atol=1e-10)
    assert np.max(np.abs(out["fast"]["theta"] - start)) > 1e-2
