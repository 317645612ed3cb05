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

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pennylane as qml

from pqfl.quantum.ansatz import noise_kraus
from pqfl.quantum.encodings import encoded_states, z_signs
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


def _super_impl(re, im, s_re, s_im, wire, qubits):
    """Complex superoperator on a Hermitian-operator batch kept as real and imaginary parts.

    XLA's CPU backend vectorises float64 far better than complex128, so the complex
    arithmetic is written out: O' = S·O with S = s_re + i s_im and O = re + i im.
    """
    vr, vi = _super_view(re, wire, qubits), _super_view(im, wire, qubits)
    br = [[vr[:, :, c, :, d, :] for d in range(2)] for c in range(2)]
    bi = [[vi[:, :, c, :, d, :] for d in range(2)] for c in range(2)]
    cd = [(c, d) for c in range(2) for d in range(2)]

    def block(a, b):
        out_r = sum(s_re[a, b, c, d] * br[c][d] - s_im[a, b, c, d] * bi[c][d] for c, d in cd)
        out_i = sum(s_re[a, b, c, d] * bi[c][d] + s_im[a, b, c, d] * br[c][d] for c, d in cd)
        return out_r, out_i

    blocks = [[block(a, b) for b in range(2)] for a in range(2)]
    new = []
    for part in range(2):
        rows = [jnp.stack([blocks[a][b][part] for b in range(2)], axis=3) for a in range(2)]
        new.append(jnp.stack(rows, axis=2).reshape(re.shape))
    # Materialise: fused into the next pass, every element would recompute the 4 inputs it
    # mixes, recursively, and a chain of passes gets slower with every wire.
    return jax.lax.optimization_barrier((new[0], new[1]))


def _transpose_map(s_re, s_im):
    """The transpose of the real-linear map O -> S·O: conj(S) with (ab) <-> (cd) swapped."""
    return jnp.transpose(s_re, (2, 3, 0, 1)), -jnp.transpose(s_im, (2, 3, 0, 1))


def _layer_superoperator(angles, channel):
    """Adjoint rotation Rot(angles) on one wire, followed (when given) by the adjoint channel
    of the previous layer: S = channel ∘ (O -> R† O R), as (real, imaginary) (2, 2, 2, 2)."""
    s = _rot_superoperator(_rot(angles))
    if channel is not None:
        s = jnp.einsum("abcd,cdij->abij", jnp.asarray(channel), s)
    return jnp.real(s), jnp.imag(s)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _apply_rotation(re, im, angles, channel_key, wire: int, qubits: int):
    """Apply the merged rotation/channel superoperator of one wire, differentiable in its 3 angles.

    The backward pass needs ∂L/∂angles, three numbers: each is ⟨G, (∂S/∂angle)·O⟩, one
    fused pass over G and O, instead of the 16 block inner products ∂L/∂S would cost.
    """
    s_re, s_im = _layer_superoperator(angles, _CHANNELS[channel_key])
    return _super_impl(re, im, s_re, s_im, wire, qubits)


def _apply_rotation_fwd(re, im, angles, channel_key, wire, qubits):
    return _apply_rotation(re, im, angles, channel_key, wire, qubits), (re, im, angles)


def _apply_rotation_bwd(channel_key, wire, qubits, res, g):
    re, im, angles = res
    g_re, g_im = g
    channel = _CHANNELS[channel_key]
    s_re, s_im = _layer_superoperator(angles, channel)
    in_re, in_im = _super_impl(g_re, g_im, *_transpose_map(s_re, s_im), wire, qubits)
    d_re, d_im = jax.jacfwd(lambda a: _layer_superoperator(a, channel))(angles)  # (2, 2, 2, 2, 3) each
    grads = []
    for k in range(3):
        t_re, t_im = _super_impl(re, im, d_re[..., k], d_im[..., k], wire, qubits)
        grads.append(jnp.sum(g_re * t_re) + jnp.sum(g_im * t_im))
    return in_re, in_im, jnp.stack(grads)


_apply_rotation.defvjp(_apply_rotation_fwd, _apply_rotation_bwd)

# Channel superoperators are numpy constants; custom_vjp's static arguments must be
# hashable, so they travel as keys into this table.
_CHANNELS: dict = {None: None}


def _channel_key(channel) -> object:
    if channel is None:
        return None
    key = channel.tobytes()
    _CHANNELS.setdefault(key, channel)
    return key


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _apply_channel(re, im, channel_key, wire: int, qubits: int):
    """A constant (noise) superoperator on one wire; only O needs a gradient."""
    ch = _CHANNELS[channel_key]
    return _super_impl(re, im, np.real(ch), np.imag(ch), wire, qubits)


def _apply_channel_fwd(re, im, channel_key, wire, qubits):
    return _apply_channel(re, im, channel_key, wire, qubits), None


def _apply_channel_bwd(channel_key, wire, qubits, _, g):
    ch = _CHANNELS[channel_key]
    return _super_impl(g[0], g[1], *_transpose_map(np.real(ch), np.imag(ch)), wire, qubits)


_apply_channel.defvjp(_apply_channel_fwd, _apply_channel_bwd)


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


def _expvals_statevector(spec: CircuitSpec, psi, theta):
    q = spec.qubits
    perm = _cnot_permutation(spec.pairs, q)
    state = psi
    for layer in range(spec.layers):
        for wire in range(q):
            state = _apply_1q(state, _rot(theta[layer, wire]), wire, q)
        if len(spec.pairs):
            state = _permute(state, tuple(perm.tolist()), (1,))
    return (jnp.abs(state) ** 2) @ jnp.asarray(z_signs(q))


def adjoint_superoperator(kraus_sets) -> np.ndarray | None:
    """The per-wire adjoint channel O -> Σ_k K_k† O K_k of the channels applied in order,
    as a (2, 2, 2, 2) tensor S with O'[a, b] = Σ S[a, b, a', b'] O[a', b']."""
    total = None
    for kraus in kraus_sets:
        s = sum(np.einsum("ia,jb->abij", np.conj(k), k) for k in kraus)  # O'[a,b] = Σ conj(K[i,a]) O[i,j] K[j,b]
        # Channels compose as ρ -> C2(C1(ρ)); adjoints as O -> C1†(C2†(O)): C1† acts last.
        total = s if total is None else np.einsum("abij,ijkl->abkl", total, s)
    return total


def _rot_superoperator(r):
    """O -> R† O R on one wire as a (2, 2, 2, 2) tensor: S[a, b, c, d] = conj(R[c, a]) R[d, b]."""
    return jnp.einsum("ca,db->abcd", jnp.conj(r), r)


def heisenberg_observables(spec: CircuitSpec, theta):
    """Z_i evolved backwards through the noisy block, as (real, imaginary) parts, each (q, D, D).

    Walking backwards, layer l contributes: adjoint noise channel, inverse CNOT
    permutation, adjoint rotations. The rotation of layer l and the channel of layer
    l − 1 act on the same wire back to back, so they are merged into one pass.
    """
    q, dim = spec.qubits, 2**spec.qubits
    inv = tuple(np.argsort(_cnot_permutation(spec.pairs, q)).tolist())
    channel = adjoint_superoperator(noise_kraus(spec.depolarizing, spec.amplitude_damping))
    signs = z_signs(q)
    re = jnp.asarray(np.stack([np.diag(signs[:, i]) for i in range(q)]))
    # Keep XLA from constant-folding the first (parameter-free) layer of a large array.
    re = jax.lax.optimization_barrier(re)
    im = jnp.zeros_like(re)
    key = _channel_key(channel)
    for layer in reversed(range(spec.layers)):
        for wire in range(q):
            if layer == spec.layers - 1:
                if channel is not None:
                    re, im = _apply_channel(re, im, key, wire, q)
            else:  # rotation of layer + 1 merged with this layer's channel: one pass
                re, im = _apply_rotation(re, im, theta[layer + 1, wire], key, wire, q)
        if len(spec.pairs):
            re, im = _permute(re, inv, (1, 2)), _permute(im, inv, (1, 2))
    for wire in range(q):
        re, im = _apply_rotation(re, im, theta[0, wire], None, wire, q)
    return re.reshape(q, dim, dim), im.reshape(q, dim, dim)


def fast_expvals(spec: CircuitSpec, X, theta):
    """⟨Z_i⟩ for a batch X, shape (batch, qubits), readout error included."""
    psi = encoded_states(spec.encoding, X, spec.qubits)
    if spec.noisy:
        o_re, o_im = heisenberg_observables(spec, theta)
        a = jnp.real(psi)
        z = jnp.einsum("bd,ide,be->bi", a, o_re, a)
        if spec.encoding not in REAL_ENCODINGS:
            # ψ = a + ib, O = A + iB (A symmetric, B antisymmetric): Re ψ†Oψ = aᵀAa + bᵀAb − 2aᵀBb.
            b = jnp.imag(psi)
            z = z + jnp.einsum("bd,ide,be->bi", b, o_re, b) - 2.0 * jnp.einsum("bd,ide,be->bi", a, o_im, b)
    else:
        z = _expvals_statevector(spec, psi, theta)
    return (1.0 - 2.0 * spec.readout) * z
