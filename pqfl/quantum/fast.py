"""Fast batched exact simulation of a client's circuit, written in JAX.

Noiseless: the batch of encoded states is evolved gate by gate as a (batch, 2, ..., 2)
tensor. Noisy: each measured observable Z_i is evolved backwards through the noisy
variational block once (Heisenberg picture, adjoint channels from PennyLane's Kraus
operators); each sample then costs one quadratic form ψ† O_i ψ instead of a density
matrix. Readout error is a classical confusion of each ⟨Z⟩: ⟨Z⟩ → (1 − 2p)⟨Z⟩.
Gate matrices come from PennyLane (Rot.compute_matrix); tests compare with
default.qubit / default.mixed.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pennylane as qml

from pqfl.quantum.ansatz import noise_kraus
from pqfl.quantum.encodings import encoded_states, z_signs
from pqfl.quantum.spec import CircuitSpec


def _cnot_permutation(pairs, qubits: int) -> np.ndarray:
    """Index map of one entangling block: new_state[k] = state[perm[k]]."""
    dim = 2**qubits
    perm = np.arange(dim)
    for control, target in pairs:
        cbit = 1 << (qubits - 1 - control)
        tbit = 1 << (qubits - 1 - target)
        flip = np.where(np.arange(dim) & cbit, np.arange(dim) ^ tbit, np.arange(dim))
        perm = perm[flip]
    return perm


def _on_axis(t, m, axis: int):
    """Contract matrix m (a, a') with tensor axis ``axis`` of t: t' [.., a, ..] = Σ m[a, a'] t[.., a', ..]."""
    return jnp.moveaxis(jnp.tensordot(m, t, axes=[[1], [axis]]), 0, axis)


def _rot(theta_row):
    return qml.Rot.compute_matrix(theta_row[0], theta_row[1], theta_row[2])


def _expvals_statevector(spec: CircuitSpec, psi, theta):
    q, batch = spec.qubits, psi.shape[0]
    perm = _cnot_permutation(spec.pairs, q)
    state = psi.reshape((batch,) + (2,) * q)
    for layer in range(spec.layers):
        for wire in range(q):
            state = _on_axis(state, _rot(theta[layer, wire]), 1 + wire)
        if len(spec.pairs):
            state = state.reshape(batch, -1)[:, perm].reshape((batch,) + (2,) * q)
    probs = jnp.abs(state.reshape(batch, -1)) ** 2
    return probs @ jnp.asarray(z_signs(q))


def adjoint_superoperator(kraus_sets) -> np.ndarray | None:
    """The per-wire adjoint channel O -> Σ_k K_k† O K_k of the channels applied in order,
    as a (2, 2, 2, 2) tensor S with O'[a, b] = Σ S[a, b, a', b'] O[a', b']."""
    total = None
    for kraus in kraus_sets:
        s = sum(np.einsum("ia,jb->abij", np.conj(k), k) for k in kraus)  # O'[a,b] = Σ conj(K[i,a]) O[i,j] K[j,b]
        # Channels compose as ρ -> C2(C1(ρ)); adjoints as O -> C1†(C2†(O)): C1† acts last.
        total = s if total is None else np.einsum("abij,ijkl->abkl", total, s)
    return total


def heisenberg_observables(spec: CircuitSpec, theta):
    """Z_i evolved backwards through the noisy block: shape (qubits, 2**q, 2**q)."""
    q, dim = spec.qubits, 2**spec.qubits
    inv = np.argsort(_cnot_permutation(spec.pairs, q))
    channel = adjoint_superoperator(noise_kraus(spec.depolarizing, spec.amplitude_damping))
    signs = z_signs(q)
    obs = jnp.asarray(np.stack([np.diag(signs[:, i]) for i in range(q)]).astype(np.complex128))
    obs = obs.reshape((q,) + (2,) * (2 * q))
    for layer in reversed(range(spec.layers)):
        if channel is not None:
            for wire in range(q):
                row, col = 1 + wire, 1 + q + wire
                moved = jnp.tensordot(jnp.asarray(channel), obs, axes=[[2, 3], [row, col]])
                obs = jnp.moveaxis(moved, (0, 1), (row, col))
        if len(spec.pairs):
            flat = obs.reshape(q, dim, dim)[:, inv][:, :, inv]
            obs = flat.reshape((q,) + (2,) * (2 * q))
        for wire in range(q):
            r = _rot(theta[layer, wire])
            obs = _on_axis(_on_axis(obs, jnp.conj(r).T, 1 + wire), r.T, 1 + q + wire)
    return obs.reshape(q, dim, dim)


def fast_expvals(spec: CircuitSpec, X, theta):
    """⟨Z_i⟩ for a batch X, shape (batch, qubits), readout error included."""
    psi = encoded_states(spec.encoding, X, spec.qubits)
    if spec.noisy:
        obs = heisenberg_observables(spec, theta)
        z = jnp.real(jnp.einsum("bd,ide,be->bi", jnp.conj(psi), obs, psi))
    else:
        z = _expvals_statevector(spec, psi, theta)
    return (1.0 - 2.0 * spec.readout) * z
