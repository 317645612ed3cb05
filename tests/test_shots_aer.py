"""Finite-shot estimates: pqfl's binomial ``shot_estimate`` against the real qiskit-aer simulator.

The same circuit (``circuit_function(spec, with_noise=False)``: encoding → Rot layers +
CNOT entanglers → ⟨Z_i⟩ on every wire) runs on PennyLane's ``qiskit.aer`` device with a
finite number of shots, and each qubit's aer estimate is compared with pqfl's estimate
``shot_estimate(fast_expvals(...), shots, key)``. Both are unbiased estimates of the exact
⟨Z_i⟩ with variance (1 − ⟨Z_i⟩²)/shots, so their difference must lie within 4σ,
σ = sqrt(σ_aer² + σ_pqfl²), and each must lie within 4σ_single of the exact value.

Readout error: on the aer side a qiskit_aer NoiseModel with a symmetric ReadoutError on
every qubit; on the pqfl side CircuitSpec(readout=p), which scales ⟨Z⟩ by 1 − 2p.

Everything is seeded (numpy generator for θ and inputs, ``seed_simulator`` for aer,
JAX PRNG keys for pqfl), so the outcome is deterministic.

Notes on how the circuits reach qiskit (pennylane-qiskit 0.45, legacy ``qiskit.aer``
device): Rot becomes RZ·RY·RZ; AmplitudeEmbedding is decomposed by PennyLane into a
Möttönen-style RY/CNOT/RZ cascade plus a GlobalPhase (not qiskit's Initialize);
IQPEmbedding becomes H, RZ(x_i) and, for each pair, CNOT·RZ(x_i x_j)·CNOT.
Shots are set with ``qml.set_shots`` (the ``shots=`` device kwarg is deprecated).
"""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pennylane as qml
import pytest
from qiskit_aer.noise import NoiseModel, ReadoutError

from pqfl.model import shot_estimate
from pqfl.quantum.ansatz import entangling_pairs, shape
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.reference import circuit_function
from pqfl.quantum.spec import CircuitSpec

SHOTS = 4000
BATCH = 2  # inputs per circuit; each input is one aer job with its own simulator seed
Z_TOL = 4.0  # tolerance in standard deviations

# (encoding, qubits, layers, entangling pattern)
CASES = [
    ("amplitude", 2, 1, "linear"),
    ("amplitude", 3, 2, "ring"),
    ("amplitude", 3, 1, "all_to_all"),
    ("angle", 2, 2, "ring"),
    ("angle", 3, 1, "all_to_all"),
    ("angle", 3, 2, "linear"),
    ("iqp", 2, 1, "all_to_all"),
    ("iqp", 3, 1, "ring"),
    ("iqp", 3, 2, "linear"),
]
CASE_IDS = [f"{e}-q{q}-l{layers}-{p}" for e, q, layers, p in CASES]

# (encoding, qubits, layers, entangling pattern, readout p)
READOUT_CASES = [
    ("angle", 2, 1, "linear", 0.1),
    ("iqp", 3, 2, "ring", 0.15),
    ("amplitude", 3, 1, "all_to_all", 0.2),
]
READOUT_SHOTS = 10000


def _spec(encoding, qubits, layers, pattern, readout=0.0) -> CircuitSpec:
    return CircuitSpec(qubits, layers, encoding, tuple(entangling_pairs(pattern, qubits)), readout=readout)


def _problem(spec: CircuitSpec, seed: int):
    """Fixed random inputs (BATCH, n_features) and θ (layers, qubits, 3)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(BATCH, spec.n_features))
    theta = rng.uniform(-np.pi, np.pi, size=shape(spec.layers, spec.qubits))
    return X, theta


def _aer_estimates(spec: CircuitSpec, X, theta, shots: int, seed: int, noise_model=None) -> np.ndarray:
    """⟨Z_i⟩ estimated by qiskit-aer with ``shots`` shots, shape (BATCH, qubits).

    The spec's readout error is *not* put in the circuit (with_noise=False); on aer it
    comes from ``noise_model`` instead. A fresh device per input gives each job its own
    ``seed_simulator`` (a device reuses its seed on every execution).
    """
    rows = []
    for b, x in enumerate(X):
        kwargs = {"seed_simulator": seed * 100 + b}
        if noise_model is not None:
            kwargs["noise_model"] = noise_model
        dev = qml.device("qiskit.aer", wires=spec.qubits, **kwargs)
        qnode = qml.set_shots(qml.QNode(circuit_function(spec, with_noise=False), dev), shots=shots)
        rows.append(np.asarray(qnode(x, theta), dtype=float))
    return np.stack(rows)


def _sigma(z, shots):
    """Standard deviation of a shots-sample estimate of ⟨Z⟩ = z."""
    return np.sqrt(np.clip(1.0 - np.asarray(z) ** 2, 0.0, None) / shots)


def _assert_on_shot_lattice(est, shots):
    """A finite-shot estimate is 2k/shots − 1 for an integer count k."""
    counts = (np.asarray(est) + 1.0) * shots / 2.0
    assert np.allclose(counts, np.round(counts), atol=1e-6), counts


@cache
def _noiseless_run(index: int):
    """Exact values, aer estimates and pqfl estimates for CASES[index] (cached for reuse)."""
    spec = _spec(*CASES[index])
    X, theta = _problem(spec, seed=index)
    exact = np.asarray(fast_expvals(spec, X, theta))
    aer = _aer_estimates(spec, X, theta, SHOTS, seed=1 + index)
    pqfl = np.asarray(shot_estimate(fast_expvals(spec, X, theta), SHOTS, jax.random.PRNGKey(index)))
    return exact, aer, pqfl


# --------------------------------------------------------------------------- noiseless circuits


@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_aer_shot_estimates_agree_with_pqfl(index):
    encoding, qubits, _, _ = CASES[index]
    exact, aer, pqfl = _noiseless_run(index)
    assert exact.shape == aer.shape == pqfl.shape == (BATCH, qubits)

    # Both are genuine finite-shot estimates, not the exact value.
    _assert_on_shot_lattice(aer, SHOTS)
    _assert_on_shot_lattice(pqfl, SHOTS)
    assert not np.allclose(aer, exact, atol=1e-9)
    assert not np.allclose(pqfl, exact, atol=1e-9)

    s = _sigma(exact, SHOTS)
    # aer and pqfl agree with each other, qubit by qubit ...
    assert np.all(np.abs(aer - pqfl) <= Z_TOL * np.sqrt(2.0) * s + 1e-12), (aer, pqfl, exact)
    # ... and each agrees with the exact value.
    assert np.all(np.abs(aer - exact) <= Z_TOL * s + 1e-12), (aer, exact)
    assert np.all(np.abs(pqfl - exact) <= Z_TOL * s + 1e-12), (pqfl, exact)


def test_aer_comparison_is_discriminating():
    """Pooled over all circuits, aer fits the exact ⟨Z⟩ (χ² ≈ degrees of freedom) while
    plausible mistakes — a sign error, or wires read in reverse order (qiskit's
    little-endian convention) — would be rejected by a wide margin."""
    exact = np.concatenate([_noiseless_run(i)[0].ravel() for i in range(len(CASES))])
    aer = np.concatenate([_noiseless_run(i)[1].ravel() for i in range(len(CASES))])
    reversed_exact = np.concatenate([_noiseless_run(i)[0][:, ::-1].ravel() for i in range(len(CASES))])
    var = np.clip(1.0 - exact**2, 1e-12, None) / SHOTS
    dof = exact.size

    chi2 = np.sum((aer - exact) ** 2 / var)
    assert chi2 < dof + 5.0 * np.sqrt(2.0 * dof), (chi2, dof)  # χ² mean dof, sd sqrt(2 dof)
    assert chi2 > dof - 5.0 * np.sqrt(2.0 * dof), (chi2, dof)  # the noise really is shot noise

    assert np.sum((aer + exact) ** 2 / var) > 20 * dof
    assert np.sum((aer - reversed_exact) ** 2 / var) > 20 * dof


# --------------------------------------------------------------------------- readout error


@pytest.mark.parametrize(
    "encoding, qubits, layers, pattern, p", READOUT_CASES, ids=[f"{c[0]}-q{c[1]}-p{c[4]}" for c in READOUT_CASES]
)
def test_aer_readout_error_agrees_with_pqfl(encoding, qubits, layers, pattern, p):
    index = READOUT_CASES.index((encoding, qubits, layers, pattern, p))
    spec = _spec(encoding, qubits, layers, pattern, readout=p)
    clean_spec = _spec(encoding, qubits, layers, pattern)
    X, theta = _problem(spec, seed=100 + index)

    exact = np.asarray(fast_expvals(spec, X, theta))
    clean = np.asarray(fast_expvals(clean_spec, X, theta))
    assert np.allclose(exact, (1.0 - 2.0 * p) * clean, atol=1e-12)

    noise_model = NoiseModel()
    noise_model.add_all_qubit_readout_error(ReadoutError([[1.0 - p, p], [p, 1.0 - p]]))
    aer = _aer_estimates(spec, X, theta, READOUT_SHOTS, seed=200 + index, noise_model=noise_model)
    pqfl = np.asarray(shot_estimate(fast_expvals(spec, X, theta), READOUT_SHOTS, jax.random.PRNGKey(300 + index)))
    _assert_on_shot_lattice(aer, READOUT_SHOTS)
    _assert_on_shot_lattice(pqfl, READOUT_SHOTS)

    s = _sigma(exact, READOUT_SHOTS)
    assert np.all(np.abs(aer - pqfl) <= Z_TOL * np.sqrt(2.0) * s + 1e-12), (aer, pqfl, exact)
    assert np.all(np.abs(aer - exact) <= Z_TOL * s + 1e-12), (aer, exact)
    assert np.all(np.abs(pqfl - exact) <= Z_TOL * s + 1e-12), (pqfl, exact)

    # The check has power: without the readout error aer would be far from the clean values.
    assert np.max(np.abs(aer - clean) / _sigma(clean, READOUT_SHOTS)) > 8.0


# --------------------------------------------------------------------------- shot_estimate statistics


def test_shot_estimate_is_unbiased_with_binomial_variance():
    shots, n_keys = 100, 20000
    z = jnp.array([-1.0, -0.95, -0.4, 0.0, 0.3, 0.8, 0.99, 1.0])
    keys = jax.random.split(jax.random.PRNGKey(2024), n_keys)
    est = np.asarray(jax.vmap(lambda k: shot_estimate(z, shots, k))(keys))  # (n_keys, len(z))
    z = np.asarray(z)
    _assert_on_shot_lattice(est, shots)
    assert np.all(np.abs(est) <= 1.0)

    var_theory = (1.0 - z**2) / shots
    mean = est.mean(axis=0)
    var = est.var(axis=0, ddof=1)

    # Unbiased: sample mean within 4 standard errors of ⟨Z⟩ (exact at ⟨Z⟩ = ±1).
    assert np.all(np.abs(mean - z) <= Z_TOL * np.sqrt(var_theory / n_keys) + 1e-12), (mean, z)

    # Variance (1 − ⟨Z⟩²)/shots: the sample variance has relative sd sqrt(2/(n−1) + κ/n),
    # κ the binomial excess kurtosis (1 − 6p(1−p)) / (shots p(1−p)).
    inner = ~np.isclose(np.abs(z), 1.0)
    p = (1.0 + z[inner]) / 2.0
    kurtosis = (1.0 - 6.0 * p * (1.0 - p)) / (shots * p * (1.0 - p))
    rel_sd = np.sqrt(2.0 / (n_keys - 1) + kurtosis / n_keys)
    rel_err = np.abs(var[inner] / var_theory[inner] - 1.0)
    assert np.all(rel_err <= Z_TOL * rel_sd), (var[inner], var_theory[inner])
    # At ⟨Z⟩ = ±1 the outcome is certain.
    assert np.all(est[:, ~inner] == z[~inner])


def test_shot_estimate_is_deterministic_per_key_and_exact_without_shots():
    z = jnp.array([[0.2, -0.7, 0.5]])
    a = shot_estimate(z, 64, jax.random.PRNGKey(5))
    b = shot_estimate(z, 64, jax.random.PRNGKey(5))
    c = shot_estimate(z, 64, jax.random.PRNGKey(6))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert np.array_equal(np.asarray(shot_estimate(z, None, jax.random.PRNGKey(5))), np.asarray(z))
    assert np.array_equal(np.asarray(shot_estimate(z, 0, jax.random.PRNGKey(5))), np.asarray(z))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "encoding, qubits, layers, pattern, p",
    [("iqp", 3, 2, "ring", 0.0), ("amplitude", 3, 2, "all_to_all", 0.05), ("angle", 2, 1, "linear", 0.0)],
)
def test_shot_estimate_passes_gradient_straight_through(encoding, qubits, layers, pattern, p):
    spec = _spec(encoding, qubits, layers, pattern, readout=p)
    X, theta = _problem(spec, seed=7)
    X = np.concatenate([X, _problem(spec, seed=8)[0]])  # a batch of 4
    theta = jnp.asarray(theta)
    key = jax.random.PRNGKey(11)
    shots = 256

    def estimated(th):
        return jnp.sum(shot_estimate(fast_expvals(spec, X, th), shots, key))

    def exact(th):
        return jnp.sum(fast_expvals(spec, X, th))

    @jax.jit  # one compilation for both (eager autodiff of the simulator is slower)
    def both(th):
        return jax.value_and_grad(estimated)(th), jax.value_and_grad(exact)(th)

    (v_est, g_est), (v_exact, g_exact) = both(theta)

    # The value is the noisy estimate (not the exact one) ...
    assert abs(float(v_est) - float(v_exact)) > 1e-6
    # ... but the gradient is exactly the gradient of the exact value, and not trivially zero.
    assert g_est.shape == theta.shape
    assert np.allclose(np.asarray(g_est), np.asarray(g_exact), rtol=1e-12, atol=1e-12)
    assert float(jnp.abs(g_exact).max()) > 1e-3
