"""Would training many seeds of one circuit as one ``jax.vmap`` make suites faster?

Times one jitted Adam step of the supervised loss (batch 64, correlator readout) for a
single parameter set, and for ten sets vmapped into one call, on two circuits of the ODDS
suite's size: a noiseless 5-qubit, 5-layer amplitude client and a noisy 4-qubit one.
Prints the per-step gain of the batched call (10 × single / batched); medians of three
repetitions of 50 (single) or 20 (batched) calls.

    python -m benchmarks.vmap_seeds
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pqfl.quantum  # noqa: F401  (float64)
from pqfl.federated.local_update import local_objective
from pqfl.quantum.ansatz import entangling_pairs
from pqfl.quantum.spec import CircuitSpec

SEEDS, BATCH = 10, 64


def _timed(fn, calls: int) -> float:
    def once():
        started = time.perf_counter()
        for _ in range(calls):
            np.asarray(fn()[2])  # the loss back on the host, as training reads it
        return (time.perf_counter() - started) / calls

    return statistics.median(once() for _ in range(3))


def measure(qubits: int, layers: int, noisy: bool) -> tuple[float, float]:
    noise = 0.01 if noisy else 0.0
    spec = CircuitSpec(qubits, layers, "amplitude", tuple(entangling_pairs("ring", qubits)), noise, 0.0, noise,
                       correlators=True)  # fmt: skip
    value_and_grad = jax.value_and_grad(local_objective(spec, "supervised", "fast", None))
    opt = optax.adam(0.1)

    def step(params, state, X, y, w):
        loss, grads = value_and_grad(params, params["theta"], 0.0, X, y, w, jnp.zeros(spec.n_outputs),
                                     jax.random.PRNGKey(0))  # fmt: skip
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    rng = np.random.default_rng(0)
    X = rng.random((BATCH, 2**qubits))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y, w = (rng.random(BATCH) < 0.2).astype(float), np.ones(BATCH)

    def params(seed):
        r = np.random.default_rng(seed)
        return {"theta": jnp.asarray(r.normal(0, 0.3, (layers, qubits, 3))),
                "w": jnp.asarray(r.normal(0, 0.1, spec.n_outputs)), "b": jnp.asarray(0.0)}  # fmt: skip

    one, p = jax.jit(step), params(0)
    state = opt.init(p)
    jax.block_until_ready(one(p, state, X, y, w))
    single = _timed(lambda: one(p, state, X, y, w), 50)

    many = jax.jit(jax.vmap(step))
    ps = jax.tree.map(lambda *a: jnp.stack(a), *[params(k) for k in range(SEEDS)])
    states = jax.vmap(opt.init)(ps)
    Xs, ys, ws = (jnp.stack([a] * SEEDS) for a in (X, y, w))
    jax.block_until_ready(many(ps, states, Xs, ys, ws))
    batched = _timed(lambda: many(ps, states, Xs, ys, ws), 20)
    return single, batched


if __name__ == "__main__":
    for qubits, layers, noisy in ((5, 5, False), (4, 5, True)):
        single, batched = measure(qubits, layers, noisy)
        print(
            f"{qubits} qubits, {layers} layers, {'noisy' if noisy else 'noiseless'}: one step {single * 1e3:.2f} ms; "
            f"{SEEDS} seeds vmapped {batched * 1e3:.2f} ms -> {SEEDS * single / batched:.1f}x per step"
        )
