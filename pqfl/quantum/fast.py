"""Fast batched exact simulation of a client's circuit, written in JAX.

Noiseless: the batch of encoded states is evolved gate by gate as a (batch, 2, ..., 2)
tensor. Noisy: each measured observable Z_i is evolved backwards through the noisy
variational block once (Heisenberg picture, adjoint channels from PennyLane's Kraus
operators); each sample then costs one quadratic form ψ† O_i ψ instead of a density
matrix. Readout error is a classical confusion of each ⟨Z_i⟩: ⟨Z_i⟩ → (1 − 2p_i)⟨Z_i⟩.
Noise may differ per qubit (a device calibration). With data re-uploading (angle
features before every layer) the noisy path evolves each sample's state forwards, as a
real vector of Pauli coefficients through real Pauli transfer matrices.
Gate matrices come from PennyLane (Rot.compute_matrix); tests compare with
default.qubit / default.mixed.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pennylane as qml

from pqfl.quantum.ansatz import noise_kraus
from pqfl.quantum.encodings import encoded_states, measured_signs
from pqfl.quantum.spec import CircuitSpec

REAL_ENCODINGS = ("amplitude", "angle")  # encodings whose states have real amplitudes


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


def _rot(theta_row):
    return qml.Rot.compute_matrix(theta_row[0], theta_row[1], theta_row[2])


# Gates act on one wire at a time through 2x2 (states) or 4-index (observables) mixes of
# strided slices, which XLA fuses into one elementwise pass. Their gradients are written
# out (custom VJPs): the transpose map is the same kind of pass, and the gate's own
# cotangent is one small matrix product. Left to autodiff, the slicing turns into pads
# and scatters that made a noisy 8-qubit step an order of magnitude slower.


def _mix(v, m, axis: int):
    """Σ_c m[a, c] v[.., c, ..] along ``axis`` (of size 2), as one fused pass."""
    v0, v1 = jnp.take(v, 0, axis=axis), jnp.take(v, 1, axis=axis)
    return jnp.stack([m[0, 0] * v0 + m[0, 1] * v1, m[1, 0] * v0 + m[1, 1] * v1], axis=axis)


def _wire_view(t, wire: int, qubits: int):
    return t.reshape(-1, 2**wire, 2, 2 ** (qubits - 1 - wire))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _apply_1q(state, m, wire: int, qubits: int):
    """m (2x2) on ``wire`` of a batch of states, shape (batch, 2**q)."""
    return _mix(_wire_view(state, wire, qubits), m, 2).reshape(state.shape)


def _apply_1q_fwd(state, m, wire, qubits):
    return _apply_1q(state, m, wire, qubits), (state, m)


def _apply_1q_bwd(wire, qubits, res, g):
    state, m = res
    g_state = _mix(_wire_view(g, wire, qubits), m.T, 2).reshape(state.shape)
    gv = jnp.moveaxis(_wire_view(g, wire, qubits), 2, 0).reshape(2, -1)
    sv = jnp.moveaxis(_wire_view(state, wire, qubits), 2, 0).reshape(2, -1)
    return g_state, gv @ sv.T


_apply_1q.defvjp(_apply_1q_fwd, _apply_1q_bwd)


def _super_view(obs, wire: int, qubits: int):
    high, low = 2**wire, 2 ** (qubits - 1 - wire)
    return obs.reshape(-1, high, 2, low * high, 2, low)


def _super_impl(obs, s, wire, qubits):
    v = _super_view(obs, wire, qubits)
    blocks = [[v[:, :, c, :, d, :] for d in range(2)] for c in range(2)]
    out = [
        jnp.stack([sum(s[a, b, c, d] * blocks[c][d] for c in range(2) for d in range(2)) for b in range(2)], axis=3)
        for a in range(2)
    ]
    # Materialise: fused into the next pass, every element would recompute the 4 inputs it
    # mixes, recursively, and a chain of passes gets slower with every wire.
    return jax.lax.optimization_barrier(jnp.stack(out, axis=2).reshape(obs.shape))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _apply_super(obs, s, wire: int, qubits: int):
    """O'[.., a, .., b, ..] = Σ s[a, b, c, d] O[.., c, .., d, ..] on ``wire`` of every O_i (q, D, D)."""
    return _super_impl(obs, s, wire, qubits)


def _apply_super_fwd(obs, s, wire, qubits):
    return _super_impl(obs, s, wire, qubits), (obs, s)


def _apply_super_bwd(wire, qubits, res, g):
    obs, s = res
    g_obs = _super_impl(g, jnp.transpose(s, (2, 3, 0, 1)), wire, qubits)
    gv = jnp.transpose(_super_view(g, wire, qubits), (2, 4, 0, 1, 3, 5)).reshape(4, -1)
    ov = jnp.transpose(_super_view(obs, wire, qubits), (2, 4, 0, 1, 3, 5)).reshape(4, -1)
    return g_obs, (gv @ ov.T).reshape(2, 2, 2, 2)


_apply_super.defvjp(_apply_super_fwd, _apply_super_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _permute(t, perm: tuple, axes: tuple):
    """t with ``perm`` gathered along each of ``axes``; the gradient gathers the inverse."""
    idx = np.asarray(perm)
    for ax in axes:
        t = jnp.take(t, idx, axis=ax)
    return t


def _permute_fwd(t, perm, axes):
    return _permute(t, perm, axes), None


def _permute_bwd(perm, axes, _, g):
    inv = tuple(np.argsort(np.asarray(perm)).tolist())
    return (_permute(g, inv, axes),)


_permute.defvjp(_permute_fwd, _permute_bwd)


def _ry_batch(t, angles, wire: int, qubits: int):
    """RY(angles[b]) on ``wire`` of row b of ``t`` (batch, 2**qubits): a per-sample gate,
    for re-uploaded features on the noiseless state-vector path."""
    c, s = jnp.cos(angles / 2), jnp.sin(angles / 2)
    m = jnp.stack([jnp.stack([c, -s], axis=-1), jnp.stack([s, c], axis=-1)], axis=-2)  # (batch, 2, 2)
    v = t.reshape(t.shape[0], 2**wire, 2, -1)
    return jnp.einsum("bac,bhcl->bhal", m.astype(t.dtype), v).reshape(t.shape)


def _expvals_statevector(spec: CircuitSpec, psi, theta, X=None):
    """Noiseless ⟨Z_i⟩; with ``spec.reupload``, X's next q features enter before every layer."""
    q = spec.qubits
    perm = _cnot_permutation(spec.pairs, q)
    state = psi
    for layer in range(spec.layers):
        if spec.reupload and layer > 0:
            for wire in range(q):
                state = _ry_batch(state, X[:, layer * q + wire], wire, q)
        for wire in range(q):
            state = _apply_1q(state, _rot(theta[layer, wire]), wire, q)
        if len(spec.pairs):
            state = _permute(state, tuple(perm.tolist()), (1,))
    return (jnp.abs(state) ** 2) @ jnp.asarray(measured_signs(q, spec.correlators))


def adjoint_superoperator(kraus_sets) -> np.ndarray | None:
    """The per-wire adjoint channel O -> Σ_k K_k† O K_k of the channels applied in order,
    as a (2, 2, 2, 2) tensor S with O'[a, b] = Σ S[a, b, a', b'] O[a', b']."""
    total = None
    for kraus in kraus_sets:
        s = sum(np.einsum("ia,jb->abij", np.conj(k), k) for k in kraus)  # O'[a,b] = Σ conj(K[i,a]) O[i,j] K[j,b]
        # Channels compose as ρ -> C2(C1(ρ)); adjoints as O -> C1†(C2†(O)): C1† acts last.
        total = s if total is None else np.einsum("abij,ijkl->abkl", total, s)
    return total


def channel_superoperator(kraus_sets) -> np.ndarray | None:
    """The per-wire channel ρ -> Σ_k K_k ρ K_k† of the channels applied in order, as a
    (2, 2, 2, 2) tensor S with ρ'[a, b] = Σ S[a, b, a', b'] ρ[a', b']."""
    adjoint = adjoint_superoperator(kraus_sets)  # Tr(C(ρ) O) = Tr(ρ C†(O)): C's tensor is C†'s transposed, conjugated
    return None if adjoint is None else np.conj(np.transpose(adjoint, (2, 3, 0, 1)))


# Noisy re-uploading works in the Pauli basis: a state is its real vector of Pauli
# coefficients r_P = Tr(ρ P), P a Pauli string (I, X, Y, Z per wire, wire 0 most
# significant), and a channel is its real Pauli transfer matrix (PTM),
# T[P, Q] = Tr(P E(Q)) / 2**q. One-wire gates and channels are 4x4 PTMs, and a CNOT maps
# Pauli strings to Pauli strings up to a sign: a signed permutation.

_PAULIS = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])


def _unitary_ptm(u):
    """PTMs (.., 4, 4) of one-wire unitaries u (.., 2, 2): T[p, q] = Tr(P u Q u†) / 2."""
    return 0.5 * jnp.real(jnp.einsum("pij,...jk,qkl,...il->...pq", _PAULIS, u, _PAULIS, jnp.conj(u)))


def _channel_ptm(kraus_sets) -> np.ndarray:
    """PTM (4, 4) of the one-wire channels applied in order (the identity for none)."""
    s = channel_superoperator(kraus_sets)
    if s is None:
        return np.eye(4)
    return 0.5 * np.real(np.einsum("pba,abcd,qcd->pq", _PAULIS, s, _PAULIS))


def _cnot_pauli_map(pairs, qubits: int):
    """The CNOT block on Pauli coefficients as a signed gather: r'[k] = sign[k] · r[src[k]]."""
    cnot = np.eye(4)[[0, 1, 3, 2]]
    two = np.array([np.kron(_PAULIS[a], _PAULIS[b]) for a in range(4) for b in range(4)])
    # C Q C† = s · P: the image of each two-wire Pauli string Q, and its sign.
    coeff = np.real(np.einsum("pij,jk,qkl,li->qp", two, cnot, two, cnot.T)) / 4
    image = np.argmax(np.abs(coeff), axis=1)
    sgn = coeff[np.arange(16), image]
    preimage = np.argsort(image)
    k = np.arange(4**qubits)
    src, sign = k.copy(), np.ones(4**qubits)
    for control, target in pairs:
        cw, tw = 4 ** (qubits - 1 - control), 4 ** (qubits - 1 - target)
        dc, dt = k // cw % 4, k // tw % 4
        a = preimage[4 * dc + dt]
        step = k + (a // 4 - dc) * cw + (a % 4 - dt) * tw
        src, sign = src[step], sgn[a] * sign[step]
    return src, sign


def _readout_ptm_vectors(spec: CircuitSpec, noise) -> np.ndarray:
    """(4**q, n_outputs): ⟨O_i⟩ = r · v_i for r the Pauli vector before the last noise."""
    q = spec.qubits
    signs = measured_signs(q, spec.correlators)  # the diagonals of the measured observables
    diag_to_pauli = np.array([[1, 1], [0, 0], [0, 0], [1, -1]]) / 2  # Tr(P diag(d)) / 2 per wire
    v = signs.reshape((2,) * q + (-1,))
    for wire in range(q):  # Tr(T(ρ) O) = r · Tᵀ c, one wire at a time
        v = np.moveaxis(np.tensordot(noise[wire].T @ diag_to_pauli, v, axes=(1, wire)), 0, wire)
    return v.reshape(4**q, -1)


def _mix4(v, g):
    """Σ_r g[p, r] v[:, r] for every p: v (h, 4, l, batch), g (4, 4, batch), one fused pass."""
    return jnp.stack([sum(g[p, r] * v[:, r] for r in range(4)) for p in range(4)], axis=1)


def _pauli_view(t, wire: int):
    return t.reshape(4**wire, 4, -1, t.shape[-1])


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _apply_ptm(vec, g, wire: int):
    """Per-sample 4x4 PTMs g (4, 4, batch) on ``wire`` of Pauli vectors (4**q, batch)."""
    return jax.lax.optimization_barrier(_mix4(_pauli_view(vec, wire), g).reshape(vec.shape))


def _apply_ptm_fwd(vec, g, wire):
    return _apply_ptm(vec, g, wire), (vec, g)


def _apply_ptm_bwd(wire, res, out_bar):
    vec, g = res
    o, v = _pauli_view(out_bar, wire), _pauli_view(vec, wire)
    vec_bar = jax.lax.optimization_barrier(_mix4(o, jnp.swapaxes(g, 0, 1)).reshape(vec.shape))
    return vec_bar, jnp.sum(o[:, :, None] * v[:, None, :], axis=(0, 3))


_apply_ptm.defvjp(_apply_ptm_fwd, _apply_ptm_bwd)


def _expvals_density(spec: CircuitSpec, X, theta):
    """Noisy ⟨Z_i⟩ with re-uploading, evolving each sample's state forwards.

    The Heisenberg shortcut of ``heisenberg_observables`` needs every data-dependent gate
    before the noisy block; re-uploaded gates sit between its layers. Instead each sample
    is a real Pauli vector, (4**q, batch). Everything but the CNOTs acts wire by wire,
    so the noise of layer l − 1, the uploaded RY(x) and the Rot of layer l merge into one
    4x4 PTM per sample and wire; a layer is then q fused passes and a signed gather.
    """
    q, batch = spec.qubits, X.shape[0]
    src, sign = _cnot_pauli_map(spec.pairs, q)
    noise = [
        _channel_ptm(noise_kraus(spec.on_wire("depolarizing", w), spec.on_wire("amplitude_damping", w)))
        for w in range(q)
    ]
    rot = _unitary_ptm(_rot(theta.reshape(-1, 3).T)).reshape(spec.layers, q, 4, 4)
    x = X[:, : spec.layers * q].reshape(batch, spec.layers, q)
    c, s = jnp.cos(x), jnp.sin(x)
    zero, one = jnp.zeros_like(c), jnp.ones_like(c)
    # RY(x) on Pauli coefficients (I, X, Y, Z): r_X → cos x r_X + sin x r_Z, r_Z → cos x r_Z − sin x r_X.
    ry = jnp.stack(
        [
            jnp.stack(row, -1)
            for row in ([one, zero, zero, zero], [zero, c, zero, s], [zero, zero, one, zero], [zero, -s, zero, c])
        ],
        -2,
    )  # (batch, layers, q, 4, 4)
    # Layer 0: the angle-encoded product state RY(x)|0⟩ (re-uploading is angle-only), per
    # wire the Pauli vector (1, sin x, 0, cos x), then Rot.
    wires = jnp.einsum("wpr,bwr->wpb", rot[0], ry[:, 0, :, :, 0] + ry[:, 0, :, :, 3])
    vec = wires[0]
    for wire in range(1, q):
        vec = (vec[:, None, :] * wires[wire, None, :, :]).reshape(-1, batch)
    gates = jnp.einsum("lwpr,blwrs,wsu->lwpub", rot[1:], ry[:, 1:], jnp.asarray(np.stack(noise)))
    for layer in range(spec.layers):
        if layer > 0:
            for wire in range(q):
                vec = _apply_ptm(vec, gates[layer - 1, wire], wire)
        if len(spec.pairs):
            vec = _permute(vec, tuple(src.tolist()), (0,)) * sign[:, None]
    return vec.T @ jnp.asarray(_readout_ptm_vectors(spec, noise))


def _rot_superoperator(r):
    """O -> R† O R on one wire as a (2, 2, 2, 2) tensor: S[a, b, c, d] = conj(R[c, a]) R[d, b]."""
    return jnp.einsum("ca,db->abcd", jnp.conj(r), r)


def heisenberg_observables(spec: CircuitSpec, theta, signs=None):
    """The measured observables (Z_i, and Z_i Z_j with correlators) evolved backwards
    through the noisy block: shape (n_outputs, 2**q, 2**q). ``signs`` (2**q, k): the
    diagonals of the observables to evolve instead (default: every measured one).

    Walking backwards, layer l contributes: adjoint noise channel, inverse CNOT
    permutation, adjoint rotations. The rotation of layer l and the channel of layer
    l − 1 act on the same wire back to back, so they are merged into one pass.
    """
    q, dim = spec.qubits, 2**spec.qubits
    inv = np.argsort(_cnot_permutation(spec.pairs, q))
    # One adjoint channel per wire: a device calibration gives every qubit its own noise.
    channels = [
        adjoint_superoperator(noise_kraus(spec.on_wire("depolarizing", w), spec.on_wire("amplitude_damping", w)))
        for w in range(q)
    ]
    if signs is None:
        signs = jnp.asarray(measured_signs(q, spec.correlators))
    obs = jax.vmap(jnp.diag, in_axes=1)(signs).astype(jnp.complex128)
    # Keep XLA from constant-folding the first (parameter-free) layer of a large array.
    obs = jax.lax.optimization_barrier(obs)
    pending = [None] * q  # rotation superoperators waiting to be merged with the next channel
    for layer in reversed(range(spec.layers)):
        for wire in range(q):
            channel = channels[wire]
            s = (
                channel
                if pending[wire] is None
                else (pending[wire] if channel is None else jnp.einsum("abcd,cdij->abij", channel, pending[wire]))
            )
            if s is not None:
                obs = _apply_super(obs, s, wire, q)
        if len(spec.pairs):
            obs = _permute(obs, tuple(inv.tolist()), (1, 2))
        pending = [_rot_superoperator(_rot(theta[layer, wire])) for wire in range(q)]
    for wire in range(q):
        obs = _apply_super(obs, pending[wire], wire, q)
    return obs.reshape(-1, dim, dim)


# Above this size of the evolved observables (n_outputs · 4**q complex numbers: 10 qubits
# are 168 MB), they are evolved one at a time, each recomputed in the backward pass. The
# gradient otherwise keeps every wire pass's input: 6.6 GB at 10 noisy qubits, more than
# PennyLane's default.mixed needs.
EVOLVE_ONE_BY_ONE_BYTES = 64 * 2**20


def _quadratic_forms(spec: CircuitSpec, psi, obs):
    """⟨ψ_b|O_i|ψ_b⟩ for every sample b and observable i, shape (batch, len(obs))."""
    if spec.encoding in REAL_ENCODINGS:
        # ψ is real and O Hermitian, so ψᵀ O ψ = ψᵀ Re(O) ψ: one real quadratic form per sample.
        psi_r = jnp.real(psi)
        return jnp.einsum("bd,ide,be->bi", psi_r, jnp.real(obs), psi_r)
    return jnp.real(jnp.einsum("bd,ide,be->bi", jnp.conj(psi), obs, psi))


def _noisy_expvals_one_by_one(spec: CircuitSpec, psi, theta):
    """The Heisenberg path for large circuits: one observable evolved at a time
    (``lax.map``), its passes recomputed when the gradient needs them
    (``jax.checkpoint``), so memory holds one observable's passes instead of all of them."""

    @jax.checkpoint
    def one(sign):
        obs = heisenberg_observables(spec, theta, sign[:, None])
        return _quadratic_forms(spec, psi, obs)[:, 0]

    signs = jnp.asarray(measured_signs(spec.qubits, spec.correlators))
    return jax.lax.map(one, signs.T).T


def fast_expvals(spec: CircuitSpec, X, theta):
    """⟨Z_i⟩ (then ⟨Z_i Z_j⟩ with correlators) for a batch X, shape (batch, n_outputs),
    readout error included."""
    X = jnp.asarray(X, dtype=jnp.float64)
    if spec.reupload and spec.noisy:
        return jnp.asarray(spec.readout_factors()) * _expvals_density(spec, X, theta)
    psi = encoded_states(spec.encoding, X[:, : spec.qubits] if spec.reupload else X, spec.qubits)
    if spec.noisy and spec.n_outputs * 4**spec.qubits * 16 > EVOLVE_ONE_BY_ONE_BYTES:
        z = _noisy_expvals_one_by_one(spec, psi, theta)
    elif spec.noisy:
        z = _quadratic_forms(spec, psi, heisenberg_observables(spec, theta))
    else:
        z = _expvals_statevector(spec, psi, theta, X)
    return jnp.asarray(spec.readout_factors()) * z
