"""Running a client's circuits on a qiskit backend: qiskit-aer with a device noise model, or
IBM Quantum hardware through qiskit-ibm-runtime.

The circuit is built from the same :class:`~pqfl.quantum.spec.CircuitSpec` the simulators
use, as one parameterized qiskit template per client: encoding angles and the variational
angles θ are circuit parameters, so the template is transpiled to the device once and
every sample is one row of parameter values in a single sampler job (parameter binding).
Counts give ⟨Z_i⟩ = 1 − 2 P(bit i = 1); the client's head turns them into scores.

Encodings as parameterized circuits:

- ``angle``: RY(x_i) on wire i.
- ``iqp``: H on every wire, RZ(x_i), then RZZ(x_i x_j) for every pair (PennyLane's
  IQPEmbedding with one repeat; MultiRZ on two wires is RZZ).
- ``amplitude``: a real state x/‖x‖ prepared by a binary tree of uniformly controlled RY
  rotations (Möttönen et al., quant-ph/0407010). Level ℓ rotates wire ℓ by an angle that
  depends on wires 0..ℓ−1, written as 2^ℓ RY gates and CNOTs in Gray-code order, so the
  circuit structure is fixed and only the angles depend on x. (qiskit's StatePreparation
  cannot take parameters: it would need one transpilation per sample.)

Pure library code: qiskit, qiskit-aer and qiskit-ibm-runtime only (no Prefect, no MLflow).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit import ParameterVector

from pqfl.quantum.encodings import with_pair_products
from pqfl.quantum.spec import CircuitSpec

CREG = "z"  # classical register holding one bit per logical qubit


# --------------------------------------------------------------------------- the template


def _gray(i: int) -> int:
    return i ^ (i >> 1)


def _uniformly_controlled_ry(qc: QuantumCircuit, angles, controls: list, target) -> None:
    """Σ_j |j⟩⟨j| ⊗ RY(α_j) with j the bits of ``controls`` (first control most significant).

    RY(θ_0) CX RY(θ_1) CX … with the CNOT after θ_i controlled by the bit where the Gray
    codes g_i and g_{i+1} differ: moving the X's through the RYs gives control state j the
    rotation Σ_i (−1)^{|j ∧ g_i|} θ_i. ``angles`` are those θ_i (see :func:`_multiplexor_angles`).
    """
    k = len(controls)
    n = 2**k
    for i in range(n):
        qc.ry(angles[i], target)
        if k:
            changed = _gray(i) ^ _gray((i + 1) % n)
            bit = changed.bit_length() - 1  # bit b of j belongs to controls[k - 1 - b]
            qc.cx(controls[k - 1 - bit], target)


def _multiplexor_angles(alpha: np.ndarray) -> np.ndarray:
    """θ with α_j = Σ_i (−1)^{|j ∧ g_i|} θ_i, for a batch: alpha (batch, 2^k) → (batch, 2^k)."""
    n = alpha.shape[-1]
    j = np.arange(n)[:, None]
    g = np.array([_gray(i) for i in range(n)])[None, :]
    parity = np.vectorize(lambda v: bin(v).count("1") % 2)(j & g)
    M = 1.0 - 2.0 * parity  # (j, i)
    return alpha @ M / n  # M is a signed permutation of a Hadamard matrix: M^T M = n I


def amplitude_tree_angles(X: np.ndarray, qubits: int) -> list[np.ndarray]:
    """Per level ℓ, the RY angles α_ℓ (batch, 2^ℓ) that prepare x/‖x‖ (real, signed) from |0…0⟩.

    Block j of level ℓ splits its amplitudes into a left (wire ℓ = 0) and right half; the
    angle is 2·atan2(‖right‖, ‖left‖), and on the last level 2·atan2(right, left) with
    signs, which puts the signs of x into the state.
    """
    X = np.asarray(X, dtype=float)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    levels = []
    for level in range(qubits):
        blocks = X.reshape(len(X), 2**level, 2, -1)  # (batch, block j, half, rest)
        if level == qubits - 1:
            left, right = blocks[..., 0, 0], blocks[..., 1, 0]
        else:
            left, right = np.linalg.norm(blocks[..., 0, :], axis=-1), np.linalg.norm(blocks[..., 1, :], axis=-1)
        levels.append(2.0 * np.arctan2(right, left))
    return levels


@dataclass(frozen=True)
class Template:
    """A client's parameterized circuit: encoding parameters ``enc``, variational ``theta``."""

    circuit: QuantumCircuit
    enc: ParameterVector
    theta: ParameterVector


def build_template(spec: CircuitSpec) -> Template:
    """The noiseless circuit of ``spec`` with every angle a parameter, measuring every wire.

    Qubit i is PennyLane wire i; clbit i of register ``z`` holds wire i. Device noise is
    not in the circuit: it comes from the backend (its noise model, or the hardware).
    """
    q = spec.qubits
    n_enc = {"angle": spec.n_features, "iqp": q + q * (q - 1) // 2, "amplitude": 2**q - 1}[spec.encoding]
    enc = ParameterVector("enc", n_enc)
    theta = ParameterVector("theta", spec.layers * q * 3)
    qr, cr = QuantumRegister(q, "q"), ClassicalRegister(q, CREG)
    qc = QuantumCircuit(qr, cr)
    if spec.encoding == "angle":
        for w in range(q):
            qc.ry(enc[w], w)
    elif spec.encoding == "iqp":
        for w in range(q):
            qc.h(w)
            qc.rz(enc[w], w)
        for k, (a, b) in enumerate(combinations(range(q), 2)):
            qc.rzz(enc[q + k], a, b)
    elif spec.encoding == "amplitude":
        offset = 0
        for level in range(q):
            _uniformly_controlled_ry(qc, enc[offset : offset + 2**level], list(range(level)), level)
            offset += 2**level
    else:
        raise ValueError(f"unknown encoding {spec.encoding!r}")
    for layer in range(spec.layers):
        if spec.reupload and layer > 0:  # angle re-uploading: the next q features before this layer
            for w in range(q):
                qc.ry(enc[layer * q + w], w)
        for w in range(q):
            phi, t, omega = (theta[(layer * q + w) * 3 + k] for k in range(3))
            qc.rz(phi, w)  # Rot(φ, θ, ω) = RZ(ω) RY(θ) RZ(φ)
            qc.ry(t, w)
            qc.rz(omega, w)
        for control, target in spec.pairs:
            qc.cx(control, target)
    qc.measure(qr, cr)
    return Template(qc, enc, theta)


def encoding_values(spec: CircuitSpec, X) -> np.ndarray:
    """Values of the encoding parameters per sample, shape (batch, n_enc)."""
    X = np.asarray(X, dtype=float)
    if spec.encoding == "angle":
        return X[:, : spec.n_features]
    if spec.encoding == "iqp":
        return with_pair_products(X[:, : spec.qubits])  # RZ angles x_i, then RZZ angles x_i x_j
    if spec.encoding == "amplitude":
        return np.concatenate([_multiplexor_angles(a) for a in amplitude_tree_angles(X, spec.qubits)], axis=1)
    raise ValueError(f"unknown encoding {spec.encoding!r}")


def parameter_values(template: Template, circuit: QuantumCircuit, spec: CircuitSpec, X, theta) -> np.ndarray:
    """One row of values per sample, in the order of ``circuit.parameters``.

    ``circuit`` is the template or its transpiled form, which may have dropped
    parameters (e.g. a Z rotation right before a measurement).
    """
    enc = encoding_values(spec, X)
    flat_theta = np.asarray(theta, dtype=float).reshape(-1)
    column = {p: enc[:, i] for i, p in enumerate(template.enc)}
    column.update({p: np.full(len(enc), flat_theta[i]) for i, p in enumerate(template.theta)})
    if not circuit.parameters:
        return np.zeros((len(enc), 0))
    return np.column_stack([column[p] for p in circuit.parameters])


# --------------------------------------------------------------------------- transpile and run


@dataclass(frozen=True)
class CircuitJob:
    """What a backend runs for one client: a transpiled template and one value row per sample."""

    circuit: QuantumCircuit
    values: np.ndarray  # (batch, parameters)
    qubits: int  # logical qubits measured (clbits of register z)
    correlators: bool = False  # also estimate ⟨Z_i Z_j⟩ from the same shots


def prepare_job(spec: CircuitSpec, X, theta, target_backend=None, layout=None, seed: int | None = None) -> CircuitJob:
    """Transpile the client's template once for ``target_backend`` (its basis gates and coupling
    map; logical qubit i placed on physical qubit ``layout[i]``) and bind every sample.

    Without a target backend the template is kept as is (for an ideal simulator).
    """
    template = build_template(spec)
    circuit = template.circuit
    if target_backend is not None:
        circuit = transpile(
            circuit,
            backend=target_backend,
            initial_layout=list(layout) if layout is not None else None,
            optimization_level=1,
            seed_transpiler=seed,
        )
    return CircuitJob(circuit, parameter_values(template, circuit, spec, X, theta), spec.qubits, spec.correlators)


def _is_aer(backend) -> bool:
    from qiskit_aer import AerSimulator

    return isinstance(backend, AerSimulator)


def _is_local_simulator(backend) -> bool:
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    return _is_aer(backend) or isinstance(backend, FakeBackendV2)


def sampler_for(backend, seed: int | None = None):
    """A SamplerV2 for ``backend``: qiskit-aer's own (parameter binds go to aer in one run) for
    an AerSimulator, qiskit-ibm-runtime's for anything else (IBM hardware, or a fake backend
    in runtime's local mode)."""
    if _is_aer(backend):
        from qiskit_aer.primitives import SamplerV2 as AerSamplerV2

        return AerSamplerV2.from_backend(backend, seed=seed)
    from qiskit_ibm_runtime import SamplerV2

    sampler = SamplerV2(mode=backend)
    if seed is not None and _is_local_simulator(backend):
        sampler.options.simulator.seed_simulator = seed
    return sampler


def expvals_from_bits(bits, qubits: int, correlators: bool = False) -> np.ndarray:
    """Per sample from a sampler's BitArray of shape (batch,): ⟨Z_i⟩ = mean of (−1)^bit_i over
    the shots for the first ``qubits`` clbits, then (with ``correlators``) ⟨Z_i Z_j⟩ = mean
    of (−1)^(bit_i + bit_j) from the same shots."""
    ones = bits.to_bool_array(order="little")[..., :qubits]  # (batch, shots, qubits); [..., i] is clbit i
    signs = 1.0 - 2.0 * ones
    return (with_pair_products(signs) if correlators else signs).mean(axis=-2)


def run_job(backend, job: CircuitJob, shots: int, seed: int | None = None) -> np.ndarray:
    """Run every sample of ``job`` as one sampler job on ``backend``; ⟨Z_i⟩ (then ⟨Z_i Z_j⟩ with
    correlators) of shape (batch, n_outputs)."""
    sampler = sampler_for(backend, seed)
    result = sampler.run([(job.circuit, job.values)], shots=shots).result()
    bits = getattr(result[0].data, CREG)
    return expvals_from_bits(bits, job.qubits, job.correlators)


def aer_device_backend(device, seed: int | None = None):
    """qiskit-aer simulating ``device`` (a fake backend): ``NoiseModel.from_backend`` of its
    calibration, its basis gates and coupling map."""
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel

    return AerSimulator.from_backend(device, noise_model=NoiseModel.from_backend(device), seed_simulator=seed)


def runtime_backend(device: str, token: str):
    """An IBM Quantum backend through qiskit-ibm-runtime (needs network and a token)."""
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService(channel="ibm_quantum_platform", token=token).backend(device)
