"""pqfl.quantum: encodings vs PennyLane templates, the fast simulator vs PennyLane's
default.qubit / default.mixed (values and gradients), entanglers and circuit export."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pennylane as qml
import pytest
from autograd import make_vjp

from pqfl.quantum.ansatz import entangling_pairs, shape
from pqfl.quantum.encodings import apply_encoding, encoded_states, feature_dim, z_signs
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.reference import draw_text, reference_expvals, reference_qnode, to_openqasm
from pqfl.quantum.spec import CircuitSpec

ENCODINGS = ("amplitude", "angle", "iqp")
PATTERNS = ("ring", "linear", "all_to_all")
NOISES = {
    "none": {},
    "depolarizing": {"depolarizing": 0.05},
    "amplitude_damping": {"amplitude_damping": 0.1},
    "readout": {"readout": 0.07},
    "all": {"depolarizing": 0.05, "amplitude_damping": 0.1, "readout": 0.07},
    # A device calibration: every qubit its own values, some of them noiseless.
    "per_qubit": {
        "depolarizing": (0.02, 0.0, 0.09),
        "amplitude_damping": (0.0, 0.15, 0.04),
        "readout": (0.03, 0.11, 0.0),
    },
}


def _inputs(encoding: str, qubits: int, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, feature_dim(encoding, qubits)))


# --------------------------------------------------------------------------- encodings


def test_z_signs_wire_zero_is_most_significant():
    # Basis order |00>, |01>, |10>, |11>; column i is the Z eigenvalue of wire i.
    assert np.array_equal(z_signs(2), np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]))
    assert z_signs(3).shape == (8, 3)
    assert np.array_equal(z_signs(3)[1], [1, 1, -1])  # |001>: only wire 2 flipped


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encoded_states_match_pennylane_templates(encoding):
    qubits = 3
    X = _inputs(encoding, qubits, batch=4, seed=1)
    states = np.asarray(encoded_states(encoding, X, qubits))
    assert states.shape == (4, 2**qubits)
    assert np.allclose(np.linalg.norm(states, axis=1), 1.0, atol=1e-12)

    @qml.qnode(qml.device("default.qubit", wires=qubits))
    def template_state(x):
        apply_encoding(encoding, x, wires=list(range(qubits)))
        return qml.state()

    for row, state in zip(X, states):
        # Exact equality of amplitudes, global phase included.
        assert np.allclose(state, np.asarray(template_state(row)), atol=1e-12)


def test_angle_encoding_by_hand():
    # RY(x)|0> = cos(x/2)|0> + sin(x/2)|1>, tensored over wires (wire 0 first).
    x = np.array([[0.3, -1.1]])
    a = np.array([np.cos(0.15), np.sin(0.15)])
    b = np.array([np.cos(-0.55), np.sin(-0.55)])
    assert np.allclose(np.asarray(encoded_states("angle", x, 2))[0], np.kron(a, b))


def test_unknown_encoding_rejected():
    with pytest.raises(ValueError, match="unknown encoding"):
        encoded_states("basis", np.zeros((1, 2)), 2)


# --------------------------------------------------------------------------- fast vs reference


CASES = list(itertools.product(ENCODINGS, PATTERNS, NOISES))


@pytest.mark.parametrize("encoding, pattern, noise", CASES, ids=["-".join(c) for c in CASES])
def test_fast_simulator_matches_pennylane_values_and_gradients(encoding, pattern, noise):
    qubits, layers = 3, 2
    spec = CircuitSpec(qubits, layers, encoding, tuple(entangling_pairs(pattern, qubits)), **NOISES[noise])
    seed = CASES.index((encoding, pattern, noise))
    rng = np.random.default_rng(seed)
    X = _inputs(encoding, qubits, batch=2, seed=seed)
    theta = rng.uniform(-np.pi, np.pi, shape(layers, qubits))
    cotangent = rng.normal(size=(2, qubits))  # a random linear functional of all outputs

    z_fast, g_fast = simulated_value_and_grad(fast_expvals, spec, X, theta, cotangent)
    z_ref, g_ref = pennylane_value_and_grad(spec, X, theta, cotangent)
    assert z_fast.shape == (2, qubits) and g_fast.shape == theta.shape
    assert np.allclose(z_fast, z_ref, atol=1e-8, rtol=0)
    assert np.allclose(g_fast, g_ref, atol=1e-8, rtol=0)
    assert float(np.abs(g_ref).max()) > 1e-3  # the gradient check is not vacuous


REUPLOAD_CASES = list(itertools.product(("ring", "linear"), ("none", "all", "per_qubit")))


@pytest.mark.parametrize("pattern, noise", REUPLOAD_CASES, ids=["-".join(c) for c in REUPLOAD_CASES])
def test_reuploading_fast_simulator_matches_pennylane_values_and_gradients(pattern, noise):
    """Angle re-uploading (the encoding before every layer, fresh features each time): the
    fast simulator's state-vector and per-sample density-matrix paths against PennyLane."""
    qubits, layers = 3, 3
    spec = CircuitSpec(
        qubits, layers, "angle", tuple(entangling_pairs(pattern, qubits)), **NOISES[noise], reupload=True
    )
    assert spec.n_features == qubits * layers
    rng = np.random.default_rng(100 + REUPLOAD_CASES.index((pattern, noise)))
    X = rng.normal(size=(3, spec.n_features))
    theta = rng.uniform(-np.pi, np.pi, shape(layers, qubits))
    cotangent = rng.normal(size=(3, qubits))

    z_fast, g_fast = simulated_value_and_grad(fast_expvals, spec, X, theta, cotangent)
    z_ref, g_ref = pennylane_value_and_grad(spec, X, theta, cotangent)
    assert np.allclose(z_fast, z_ref, atol=1e-10, rtol=0)
    assert np.allclose(g_fast, g_ref, atol=1e-10, rtol=0)
    assert float(np.abs(g_ref).max()) > 1e-3
    # Every layer's slice of features matters: moving a last-layer feature moves ⟨Z⟩.
    X2 = X.copy()
    X2[:, -1] += 0.7
    assert np.abs(np.asarray(fast_expvals(spec, X2, theta)) - z_fast).max() > 1e-3


@pytest.mark.parametrize("noise", ["none", "all", "per_qubit"])
def test_reuploading_zero_features_is_the_plain_angle_circuit(noise):
    """RY(0) is the identity, so with the re-uploaded features at 0 the circuit is the plain
    angle circuit: the density-matrix path agrees with the Heisenberg-picture one."""
    qubits, layers = 3, 3
    pairs = tuple(entangling_pairs("ring", qubits))
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4, qubits))
    theta = rng.uniform(-np.pi, np.pi, shape(layers, qubits))
    padded = np.pad(X, ((0, 0), (0, qubits * (layers - 1))))
    plain = fast_expvals(CircuitSpec(qubits, layers, "angle", pairs, **NOISES[noise]), X, theta)
    again = fast_expvals(CircuitSpec(qubits, layers, "angle", pairs, **NOISES[noise], reupload=True), padded, theta)
    assert np.allclose(np.asarray(again), np.asarray(plain), atol=1e-12, rtol=0)


def test_reupload_needs_angle_encoding():
    with pytest.raises(ValueError, match="reupload: .*angle.*not 'amplitude'"):
        CircuitSpec(3, 2, "amplitude", (), reupload=True)
    assert CircuitSpec(4, 5, "angle", (), reupload=True).n_features == 20
    assert CircuitSpec(4, 5, "angle", ()).n_features == 4


CORRELATOR_CASES = [(e, n, False) for e in ENCODINGS for n in ("none", "all", "per_qubit")] + [
    ("angle", n, True) for n in ("none", "all")
]


def simulated_value_and_grad(simulate, spec, X, theta, cotangent):
    """The outputs, and the gradient of their cotangent-weighted sum over theta (reverse
    mode, as training uses). Eager, but for the density-matrix path (noisy re-uploading),
    whose per-sample ops run 3-5x faster compiled: compiling each of this file's hundred
    small circuits would cost more than it saves."""

    def f(th):
        z = simulate(spec, X, th)
        return jnp.sum(z * cotangent), z

    value_and_grad = jax.value_and_grad(f, has_aux=True)
    if spec.reupload and spec.noisy:  # fast_expvals' density-matrix path
        value_and_grad = jax.jit(value_and_grad)
    (_, z), g = value_and_grad(theta)
    return np.asarray(z), np.asarray(g)


def pennylane_value_and_grad(spec, X, theta, cotangent):
    """What ``simulated_value_and_grad`` computes, as PennyLane computes it: the circuit's
    QNode on default.qubit or default.mixed, differentiated by autograd. That shares no
    machinery with the fast simulator's JAX gradients, and on these small circuits it runs
    20-40x faster than the JAX-interface QNode called eagerly."""
    qnode = reference_qnode(spec, "autograd")
    vjp, z = make_vjp(lambda th: qml.math.stack(qnode(X, th), axis=-1))(np.asarray(theta))
    return np.asarray(z), np.asarray(vjp(cotangent))  # one forward pass for both


def test_the_jax_reference_computes_what_pennylanes_autograd_computes():
    """``simulator: reference`` trains with the JAX-interface QNode; the comparisons here use
    the autograd one. Both are the same circuit: same values and gradients (on default.mixed,
    per-qubit noise, the correlator readout; under jit, as training calls it)."""
    spec = CircuitSpec(3, 2, "iqp", tuple(entangling_pairs("ring", 3)), **NOISES["per_qubit"], correlators=True)
    rng = np.random.default_rng(400)
    X = rng.normal(size=(2, spec.n_features))
    theta = rng.uniform(-np.pi, np.pi, shape(2, 3))
    cotangent = rng.normal(size=(2, spec.n_outputs))
    compiled = jax.jit(reference_expvals, static_argnums=0)
    z_jax, g_jax = simulated_value_and_grad(compiled, spec, X, theta, cotangent)
    z_ag, g_ag = pennylane_value_and_grad(spec, X, theta, cotangent)
    assert z_jax.shape == z_ag.shape == (2, 6)
    assert np.allclose(z_jax, z_ag, atol=1e-12, rtol=0)
    assert np.allclose(g_jax, g_ag, atol=1e-12, rtol=0)
    assert float(np.abs(g_ag).max()) > 1e-3


@pytest.mark.parametrize(
    "encoding, noise, reupload", CORRELATOR_CASES, ids=["-".join(map(str, c)) for c in CORRELATOR_CASES]
)
def test_correlator_readout_matches_pennylane_values_and_gradients(encoding, noise, reupload):
    """measure: zz — ⟨Z_i⟩ then ⟨Z_i Z_j⟩ for every pair, readout flips included, on every
    path of the fast simulator (state vector, Heisenberg, density matrix) against PennyLane."""
    qubits, layers = 3, 2
    spec = CircuitSpec(
        qubits,
        layers,
        encoding,
        tuple(entangling_pairs("ring", qubits)),
        **NOISES[noise],
        reupload=reupload,
        correlators=True,
    )
    assert spec.n_outputs == 6
    rng = np.random.default_rng(200 + CORRELATOR_CASES.index((encoding, noise, reupload)))
    X = rng.normal(size=(2, spec.n_features))
    theta = rng.uniform(-np.pi, np.pi, shape(layers, qubits))
    cotangent = rng.normal(size=(2, spec.n_outputs))

    z_fast, g_fast = simulated_value_and_grad(fast_expvals, spec, X, theta, cotangent)
    z_ref, g_ref = pennylane_value_and_grad(spec, X, theta, cotangent)
    assert z_fast.shape == (2, 6)
    assert np.allclose(z_fast, z_ref, atol=1e-10, rtol=0)
    assert np.allclose(g_fast, g_ref, atol=1e-10, rtol=0)
    # The first q outputs are the plain Z readout's.
    plain = CircuitSpec(qubits, layers, encoding, spec.pairs, **NOISES[noise], reupload=reupload)
    assert np.allclose(z_fast[:, :qubits], np.asarray(fast_expvals(plain, X, theta)), atol=1e-12, rtol=0)


def test_correlators_of_a_product_state_are_products():
    """No entangler, no noise: the state is a product, so ⟨Z_i Z_j⟩ = ⟨Z_i⟩⟨Z_j⟩."""
    spec = CircuitSpec(4, 2, "angle", (), correlators=True)
    rng = np.random.default_rng(3)
    z = np.asarray(fast_expvals(spec, rng.normal(size=(5, 4)), rng.uniform(-np.pi, np.pi, shape(2, 4))))
    expected = np.column_stack([z[:, i] * z[:, j] for i, j in itertools.combinations(range(4), 2)])
    assert np.allclose(z[:, 4:], expected, atol=1e-12)


def test_one_qubit_closed_form():
    # RY(x)|0> has Bloch vector (sin x, 0, cos x). Rot(φ, t, ω) = RZ(ω) RY(t) RZ(φ): RZ(φ) turns
    # it about z, RY(t) mixes x and z, RZ(ω) leaves z alone, so
    # <Z> = cos t cos x − sin t sin x cos φ.  Readout error p scales <Z> by 1 − 2p.
    x = np.array([[0.4], [-1.3], [2.0]])
    phi, t, omega = 0.7, 0.25, -1.9
    theta = np.array([[[phi, t, omega]]])
    xs = x[:, 0]
    expected = np.cos(t) * np.cos(xs) - np.sin(t) * np.sin(xs) * np.cos(phi)
    clean = CircuitSpec(1, 1, "angle", ())
    assert np.allclose(np.asarray(fast_expvals(clean, x, theta))[:, 0], expected, atol=1e-12)
    noisy = CircuitSpec(1, 1, "angle", (), readout=0.1)
    assert np.allclose(np.asarray(fast_expvals(noisy, x, theta))[:, 0], 0.8 * expected, atol=1e-12)
    grad = jax.grad(lambda th: jnp.sum(fast_expvals(clean, x, th)))(theta)
    d_phi = np.sum(np.sin(t) * np.sin(xs) * np.sin(phi))
    d_t = np.sum(-np.sin(t) * np.cos(xs) - np.cos(t) * np.sin(xs) * np.cos(phi))
    assert np.allclose(grad[0, 0], [d_phi, d_t, 0.0], atol=1e-12)


def test_extreme_noise_limits():
    X = _inputs("angle", 3, batch=3, seed=7)
    theta = np.random.default_rng(7).normal(size=(2, 3, 3))
    pairs = tuple(entangling_pairs("ring", 3))
    # Depolarizing with p = 3/4 is the completely depolarizing channel: <Z> = 0.
    full_depol = CircuitSpec(3, 2, "angle", pairs, depolarizing=0.75)
    assert np.allclose(np.asarray(fast_expvals(full_depol, X, theta)), 0.0, atol=1e-12)
    # Amplitude damping with γ = 1 resets every qubit to |0>: <Z> = 1.
    reset = CircuitSpec(3, 2, "angle", pairs, amplitude_damping=1.0)
    assert np.allclose(np.asarray(fast_expvals(reset, X, theta)), 1.0, atol=1e-12)


def test_per_qubit_noise_acts_on_its_own_wire():
    X = _inputs("angle", 3, batch=3, seed=11)
    theta = np.random.default_rng(11).normal(size=(2, 3, 3))
    pairs = tuple(entangling_pairs("linear", 3))
    # Equal per-qubit values are the scalar model.
    scalar = CircuitSpec(3, 2, "angle", pairs, depolarizing=0.04, amplitude_damping=0.07, readout=0.05)
    tupled = CircuitSpec(
        3, 2, "angle", pairs, depolarizing=(0.04,) * 3, amplitude_damping=[0.07] * 3, readout=(0.05,) * 3
    )
    assert np.allclose(
        np.asarray(fast_expvals(scalar, X, theta)), np.asarray(fast_expvals(tupled, X, theta)), atol=1e-13
    )
    # Full damping of the last wire alone resets it (<Z_2> = 1) and leaves the others noisy but
    # not reset; readout on wire 1 alone scales only <Z_1>.
    reset_last = CircuitSpec(3, 2, "angle", pairs, amplitude_damping=(0.0, 0.0, 1.0))
    z = np.asarray(fast_expvals(reset_last, X, theta))
    assert np.allclose(z[:, 2], 1.0, atol=1e-12) and not np.allclose(z[:, :2], 1.0, atol=1e-3)
    clean = np.asarray(fast_expvals(CircuitSpec(3, 2, "angle", pairs), X, theta))
    readout_1 = np.asarray(fast_expvals(CircuitSpec(3, 2, "angle", pairs, readout=(0.0, 0.2, 0.0)), X, theta))
    assert np.allclose(readout_1, clean * np.array([1.0, 0.6, 1.0]), atol=1e-12)


def test_per_qubit_noise_needs_one_value_per_qubit():
    with pytest.raises(ValueError, match="2 per-qubit values for 3 qubits"):
        CircuitSpec(3, 1, "angle", (), depolarizing=(0.1, 0.2))
    spec = CircuitSpec(2, 1, "angle", (), readout=[0.0, 0.1])
    assert spec.readout == (0.0, 0.1) and spec.has_readout and not spec.noisy
    hash(spec)  # still a cache key


def test_cnot_block_on_basis_states():
    # Identity rotations: the circuit is just the CNOT block applied to a basis state.
    theta = np.zeros((1, 3, 3))
    basis_101 = np.zeros((1, 8))
    basis_101[0, 0b101] = 1.0
    # linear: CNOT(0,1) then CNOT(1,2): |101> -> |111> -> |110>
    lin = CircuitSpec(3, 1, "amplitude", tuple(entangling_pairs("linear", 3)))
    assert np.allclose(np.asarray(fast_expvals(lin, basis_101, theta)), [[-1, -1, 1]])
    # ring adds CNOT(2,0): |110> stays (wire 2 is 0)
    ring = CircuitSpec(3, 1, "amplitude", tuple(entangling_pairs("ring", 3)))
    assert np.allclose(np.asarray(fast_expvals(ring, basis_101, theta)), [[-1, -1, 1]])
    # all_to_all: (0,1),(0,2),(1,2): |101> -> |111> -> |110> -> |111>
    a2a = CircuitSpec(3, 1, "amplitude", tuple(entangling_pairs("all_to_all", 3)))
    assert np.allclose(np.asarray(fast_expvals(a2a, basis_101, theta)), [[-1, -1, -1]])


# --------------------------------------------------------------------------- entanglers


@pytest.mark.parametrize(
    "pattern, qubits, expected",
    [
        ("ring", 4, [(0, 1), (1, 2), (2, 3), (3, 0)]),
        ("ring", 2, [(0, 1)]),  # no duplicate CNOT back on two qubits
        ("ring", 1, []),
        ("linear", 3, [(0, 1), (1, 2)]),
        ("linear", 1, []),
        ("all_to_all", 3, [(0, 1), (0, 2), (1, 2)]),
        ("all_to_all", 1, []),
        ([[0, 2], [2, 1]], 3, [(0, 2), (2, 1)]),  # an explicit coupling map
    ],
)
def test_entangling_pairs(pattern, qubits, expected):
    assert entangling_pairs(pattern, qubits) == expected


def test_all_to_all_pair_count():
    assert len(entangling_pairs("all_to_all", 6)) == 6 * 5 // 2


def test_unknown_entangling_pattern_rejected():
    with pytest.raises(ValueError, match="unknown entangling pattern"):
        entangling_pairs("star", 3)


def test_spec_from_profile():
    from pqfl.config import ClientProfile

    profile = ClientProfile(
        name="x",
        qubits=4,
        layers=3,
        entangling="linear",
        encoding="angle",
        noise={"depolarizing": 0.01, "readout": 0.02},
    )
    spec = CircuitSpec.from_profile(profile)
    assert spec.pairs == ((0, 1), (1, 2), (2, 3))
    assert spec.noisy and spec.n_features == 4
    assert spec.readout == 0.02 and spec.amplitude_damping == 0.0
    assert not CircuitSpec(2, 1, "amplitude", (), readout=0.1).noisy  # readout alone is classical
    assert CircuitSpec(5, 1, "amplitude", ()).n_features == 32
    hash(spec)  # usable as a cache key


# --------------------------------------------------------------------------- drawing and export


def test_draw_text_shows_rotations_and_noise():
    spec = CircuitSpec(3, 2, "angle", tuple(entangling_pairs("linear", 3)), depolarizing=0.01, readout=0.02)
    x = _inputs("angle", 3, 1, seed=8)[0]
    theta = np.random.default_rng(8).normal(size=(2, 3, 3))
    text = draw_text(spec, x, theta)
    assert isinstance(text, str)
    assert "Rot" in text
    assert "DepolarizingChannel" in text
    assert "BitFlip" in text
    clean = draw_text(CircuitSpec(3, 2, "angle", tuple(entangling_pairs("linear", 3))), x, theta)
    assert "Rot" in clean and "Depolarizing" not in clean and "BitFlip" not in clean


def test_to_openqasm_is_noiseless_qasm_with_measurements():
    pairs = tuple(entangling_pairs("ring", 3))
    spec = CircuitSpec(3, 2, "amplitude", pairs, depolarizing=0.01, amplitude_damping=0.02, readout=0.03)
    x = _inputs("amplitude", 3, 1, seed=9)[0]
    theta = np.random.default_rng(9).normal(size=(2, 3, 3))
    qasm = to_openqasm(spec, x, theta)
    assert isinstance(qasm, str)
    assert qasm.startswith("OPENQASM 2.0")
    assert "qreg q[3]" in qasm
    lines = [ln.strip() for ln in qasm.splitlines()]
    # One CNOT per pair per layer (the amplitude-embedding decomposition may add more, never fewer).
    assert sum(ln.startswith("cx ") for ln in lines) >= 2 * len(pairs)
    assert sum(ln.startswith("measure ") for ln in lines) == 3
    assert "kraus" not in qasm.lower() and "depolar" not in qasm.lower()
    # With angle encoding (RY per wire) the count is exact: 2 layers x 3 ring pairs.
    angle = CircuitSpec(3, 2, "angle", pairs, readout=0.03)
    angle_qasm = to_openqasm(angle, _inputs("angle", 3, 1, seed=9)[0], theta)
    angle_lines = [ln.strip() for ln in angle_qasm.splitlines()]
    assert sum(ln.startswith("cx ") for ln in angle_lines) == 2 * len(pairs)
    assert sum(ln.startswith("ry(") for ln in angle_lines) >= 3  # the encoding itself
