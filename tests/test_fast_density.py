"""The noisy re-uploading path of the fast simulator (Pauli-transfer evolution per sample)
against PennyLane's default.mixed, on a case the other re-uploading tests leave out:
four qubits, depolarizing and amplitude damping on different wires, all-to-all CNOTs and
the correlator readout."""

from __future__ import annotations

import numpy as np

from pqfl.quantum.ansatz import entangling_pairs, shape
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.spec import CircuitSpec
from tests.test_quantum import pennylane_value_and_grad, simulated_value_and_grad


def test_reupload_density_path_matches_pennylane_on_mixed_noise_correlators():
    qubits, layers = 4, 3
    spec = CircuitSpec(
        qubits,
        layers,
        "angle",
        tuple(entangling_pairs("all_to_all", qubits)),
        depolarizing=(0.08, 0.0, 0.03, 0.0),
        amplitude_damping=(0.0, 0.12, 0.0, 0.05),
        readout=(0.0, 0.04, 0.0, 0.02),
        reupload=True,
        correlators=True,
    )
    rng = np.random.default_rng(300)
    X = rng.normal(size=(3, spec.n_features))
    theta = rng.uniform(-np.pi, np.pi, shape(layers, qubits))
    cotangent = rng.normal(size=(3, spec.n_outputs))

    z_fast, g_fast = simulated_value_and_grad(fast_expvals, spec, X, theta, cotangent)
    z_ref, g_ref = pennylane_value_and_grad(spec, X, theta, cotangent)
    assert z_fast.shape == (3, 10)
    assert np.allclose(z_fast, z_ref, atol=1e-10, rtol=0)
    assert np.allclose(g_fast, g_ref, atol=1e-10, rtol=0)
    assert float(np.abs(g_ref).max()) > 1e-3


def test_large_noisy_circuits_evolve_observables_one_by_one_with_the_same_values_and_gradients(monkeypatch):
    """Above ``EVOLVE_ONE_BY_ONE_BYTES`` the Heisenberg path evolves one observable at a
    time under ``jax.checkpoint`` (the memory of 10 noisy qubits); forced on a small circuit
    here, it gives the batched path's values and gradients, and PennyLane's."""
    import pqfl.quantum.fast as fast

    qubits, layers = 3, 2
    spec = CircuitSpec(
        qubits,
        layers,
        "iqp",
        tuple(entangling_pairs("ring", qubits)),
        depolarizing=(0.05, 0.0, 0.02),
        amplitude_damping=0.03,
        readout=0.02,
        correlators=True,
    )
    rng = np.random.default_rng(301)
    X = rng.normal(size=(3, spec.n_features))
    theta = rng.uniform(-np.pi, np.pi, shape(layers, qubits))
    cotangent = rng.normal(size=(3, spec.n_outputs))

    z_batched, g_batched = simulated_value_and_grad(fast_expvals, spec, X, theta, cotangent)
    calls = []
    one_by_one = fast._noisy_expvals_one_by_one
    monkeypatch.setattr(fast, "_noisy_expvals_one_by_one", lambda *a: calls.append(1) or one_by_one(*a))
    monkeypatch.setattr(fast, "EVOLVE_ONE_BY_ONE_BYTES", 0)
    z_single, g_single = simulated_value_and_grad(fast_expvals, spec, X, theta, cotangent)
    assert calls  # the one-by-one path ran
    assert np.allclose(z_single, z_batched, atol=1e-12, rtol=0)
    assert np.allclose(g_single, g_batched, atol=1e-12, rtol=0)
    z_ref, g_ref = pennylane_value_and_grad(spec, X, theta, cotangent)
    assert np.allclose(z_single, z_ref, atol=1e-10, rtol=0) and np.allclose(g_single, g_ref, atol=1e-10, rtol=0)
    assert float(np.abs(g_ref).max()) > 1e-3
