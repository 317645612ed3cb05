"""The noisy re-uploading path of the fast simulator (Pauli-transfer evolution per sample)
against PennyLane's default.mixed, on a case the other re-uploading tests leave out:
four qubits, depolarizing and amplitude damping on different wires, all-to-all CNOTs and
the correlator readout."""

from __future__ import annotations

import numpy as np

from pqfl.quantum.ansatz import entangling_pairs, shape
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.reference import reference_expvals
from pqfl.quantum.spec import CircuitSpec
from tests.test_quantum import simulated_value_and_grad


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
    z_ref, g_ref = simulated_value_and_grad(reference_expvals, spec, X, theta, cotangent)
    assert z_fast.shape == (3, 10)
    assert np.allclose(z_fast, z_ref, atol=1e-10, rtol=0)
    assert np.allclose(g_fast, g_ref, atol=1e-10, rtol=0)
    assert float(np.abs(g_ref).max()) > 1e-3
