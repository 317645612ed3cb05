"""The hybrid model: circuit ⟨Z_i⟩ → client-local head → anomaly score (higher = more anomalous).

Parameters are a small dict pytree: ``theta`` (layers, qubits, 3) — the shared quantum
block — and the local head ``w`` (qubits,), ``b`` (). Objectives: ``supervised`` scores
with the head's logit; ``one_class`` scores with the squared distance of ⟨Z⟩ from a fixed
centre (Deep-SVDD style, labels unused; by default the centre is (1, …, 1), the ⟨Z⟩ of
|0…0⟩ — see ``pqfl.federated.client._center``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pqfl.data.preprocessing import encoder_adjust
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.reference import reference_expvals
from pqfl.quantum.spec import CircuitSpec

SIMULATORS = {"fast": fast_expvals, "reference": reference_expvals}
CIRCUIT_SIMULATORS = frozenset(SIMULATORS)  # simulators of the Rot-layer circuit (tests add others)


def shot_estimate(z, shots: int | None, key):
    """Finite-shot estimate of each ⟨Z⟩ by exact binomial sampling; the gradient passes straight through."""
    if not shots:
        return z
    p_plus = jnp.clip((1.0 + z) / 2.0, 0.0, 1.0)
    counts = jax.random.binomial(key, shots, p_plus)
    sampled = 2.0 * counts / shots - 1.0
    return z + jax.lax.stop_gradient(sampled - z)


def scores_from_expvals(objective: str, params: dict, center, z):
    if objective == "one_class":
        return jnp.sum((z - center) ** 2, axis=-1)
    return z @ params["w"] + params["b"]


def stop_redundant_gradient(theta):
    """Stop the gradient of the last layer's ω angles, whose exact gradient is zero.

    Rot(φ, θ, ω) applies RZ(ω) last; after the last layer only CNOTs, phase-covariant
    noise and readout flips follow, all of which keep the measured Z_i diagonal, and RZ
    commutes with a diagonal observable. So ∂loss/∂ω_last = 0, but computed it is
    roundoff (~1e-19) whose sign depends on the simulator's operation order. Under a
    proximal pull, Adam (step ≈ lr·g/(√v + ε)) amplifies that roundoff into ±lr moves
    of ω_last, which aggregation then hands to clients with more layers, for whom those
    angles matter: fast and reference runs drifted apart by up to 0.14 in a metric.
    """
    return theta.at[-1, :, 2].set(jax.lax.stop_gradient(theta[-1, :, 2]))


def model_outputs(spec: CircuitSpec, simulator: str, shots, theta, X, key):
    """What the head reads for a batch X of circuit-ready features: the (shot-estimated) ⟨Z⟩."""
    if simulator in CIRCUIT_SIMULATORS:  # the argument above is about the circuit, not any theta → z map
        theta = stop_redundant_gradient(theta)
    return shot_estimate(SIMULATORS[simulator](spec, X, theta), shots, key)


def encoded_inputs(encoding: str, params: dict, X):
    """The circuit inputs of a client under a shared encoder (``params["enc"]``, A): X holds,
    per row, the client's ``FeatureMap.pre_squash`` input followed by its standardised
    features z, and ``params["enc_map"]`` its map's fixed linear part L. The input is
    ``squash``(pre + z · encoder_adjust(A, L)), as ``FeatureMap.transform`` computes it with
    the encoder folded in; L is a constant, not trained."""
    L = jax.lax.stop_gradient(params["enc_map"])
    out = L.shape[1]
    P = X[:, :out] + X[:, out:] @ encoder_adjust(params["enc"], L)
    if encoding == "amplitude":
        norm = jnp.linalg.norm(P, axis=1, keepdims=True)
        safe = jnp.where(norm > 1e-12, norm, 1.0)
        return jnp.where(norm > 1e-12, P / safe, 1.0 / jnp.sqrt(out))
    return 2.0 * jnp.arctan(P)


def model_scores(spec: CircuitSpec, objective: str, simulator: str, shots, params: dict, center, X, key):
    """Anomaly scores for a batch X of circuit-ready features (with a shared encoder in
    ``params``, of the rows ``encoded_inputs`` reads)."""
    if "enc" in params:
        X = encoded_inputs(spec.encoding, params, X)
    z = model_outputs(spec, simulator, shots, params["theta"], X, key)
    return scores_from_expvals(objective, params, center, z)
