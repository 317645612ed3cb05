"""Data encodings S(x): how a feature vector becomes a quantum state.

Each encoding exists twice: as the PennyLane template that defines it (used by the
reference QNode, drawings and OpenQASM) and as a batched state-vector kernel used by the
fast simulator. The tests check the two agree.
"""

from __future__ import annotations

from itertools import combinations

import jax.numpy as jnp
import numpy as np
import pennylane as qml

REUPLOADABLE = ("angle",)  # encodings that can be re-uploaded before every layer


def feature_dim(encoding: str, qubits: int, layers: int = 1, reupload: bool = False) -> int:
    """Number of classical features the encoding takes on ``qubits`` qubits.

    With ``reupload`` (angle only) the encoding is applied again before every variational
    layer, each time with the next ``qubits`` features: ``qubits * layers`` in all.
    """
    if encoding == "amplitude":
        return 2**qubits
    return qubits * layers if reupload else qubits


def apply_encoding(encoding: str, x, wires) -> None:
    """Queue the PennyLane template for ``encoding`` (inside a QNode or tape)."""
    if encoding == "amplitude":
        qml.AmplitudeEmbedding(x, wires=wires, normalize=True)
    elif encoding == "angle":
        qml.AngleEmbedding(x, wires=wires, rotation="Y")
    elif encoding == "iqp":
        qml.IQPEmbedding(x, wires=wires, n_repeats=1)
    else:  # config validation makes this unreachable for user input
        raise ValueError(f"unknown encoding {encoding!r}")


def z_signs(qubits: int) -> np.ndarray:
    """(2**q, q) matrix of Z eigenvalues: entry [k, i] is +1 if bit i of basis state k is 0.

    Wire 0 is the most significant bit, as in PennyLane.
    """
    k = np.arange(2**qubits)[:, None]
    bits = (k >> (qubits - 1 - np.arange(qubits))[None, :]) & 1
    return 1.0 - 2.0 * bits


def with_pair_products(values: np.ndarray) -> np.ndarray:
    """``values`` (..., q) followed by values[..., i] * values[..., j] for every pair i < j in
    ``combinations`` order: the layout of the correlator readout (Z_i, then Z_i Z_j)."""
    q = values.shape[-1]
    pairs = [values[..., i] * values[..., j] for i, j in combinations(range(q), 2)]
    return np.concatenate([values, np.stack(pairs, axis=-1)], axis=-1) if pairs else values


def measured_signs(qubits: int, correlators: bool = False) -> np.ndarray:
    """(2**q, n_obs) eigenvalues of the measured observables on each basis state: Z_i on every
    wire, then (with ``correlators``) Z_i Z_j for every pair i < j."""
    signs = z_signs(qubits)
    return with_pair_products(signs) if correlators else signs


def encoded_states(encoding: str, X, qubits: int):
    """Batched encoded states, shape (batch, 2**qubits), complex128 (JAX array)."""
    X = jnp.asarray(X, dtype=jnp.float64)
    if encoding == "amplitude":
        norm = jnp.linalg.norm(X, axis=1, keepdims=True)
        return (X / norm).astype(jnp.complex128)
    if encoding == "angle":
        # RY(x)|0> = cos(x/2)|0> + sin(x/2)|1>, one per wire, tensored in wire order.
        state = jnp.ones((X.shape[0], 1), dtype=jnp.float64)
        for i in range(qubits):
            q = jnp.stack([jnp.cos(X[:, i] / 2), jnp.sin(X[:, i] / 2)], axis=1)
            state = (state[:, :, None] * q[:, None, :]).reshape(X.shape[0], -1)
        return state.astype(jnp.complex128)
    if encoding == "iqp":
        # H on every wire, RZ(x_i), then MultiRZ(x_i x_j) on all pairs: a diagonal phase
        # exp(-i/2 (sum_i x_i z_i + sum_{i<j} x_i x_j z_i z_j)) on the uniform superposition.
        signs = jnp.asarray(z_signs(qubits))
        phase = X @ signs.T
        for i, j in combinations(range(qubits), 2):
            phase = phase + (X[:, i] * X[:, j])[:, None] * (signs[:, i] * signs[:, j])[None, :]
        return jnp.exp(-0.5j * phase) / np.sqrt(2.0**qubits)
    raise ValueError(f"unknown encoding {encoding!r}")
