"""Would training a client's restarts (or a suite's seeds) as one ``jax.vmap`` be faster,
and would it give the same numbers?

Issue 22 asks for batched suites at metrics identical to the unbatched run. The suite's
supervised cases train three restarts of every client (``federation.restarts: 3``): the
same circuit, data and step count, different initialisations and minibatch orders, which
is what a vmapped step would batch. For each client circuit of the supervised cardio fleet
of ``benchmarks/suites/odds.yaml`` this runs pqfl's own training step
(``compiled_step(...).fn``, Adam, the proximal pull, batch 64) for R parameter sets:

- one set at a time, as ``train_local`` does, and
- all R sets as one vmapped call per step,

from the same initial parameters on the same minibatches. It prints the time per step of
both (medians of three repetitions), the gain of the vmapped call, and the largest
difference between the two trajectories' parameters after ``STEPS`` steps (0 means bit for
bit the same).

    python -m benchmarks.vmap_seeds            # R = 3 and 10 (about 7 min on 2 cores,
                                               # most of it compiling the vmapped steps)
    python -m benchmarks.vmap_seeds 3          # R = 3 only
"""

from __future__ import annotations

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import pqfl.quantum  # noqa: F401  (float64)
from pqfl.federated.local_update import compiled_step
from pqfl.quantum.ansatz import entangling_pairs
from pqfl.quantum.spec import CircuitSpec

BATCH, STEPS, LR, LAM = 64, 50, 0.1, 0.1

#: The supervised cardio fleet of the ODDS suite: (name, spec).
FLEET = (
    ("amp5-ring", CircuitSpec(5, 5, "amplitude", tuple(entangling_pairs("ring", 5)), correlators=True)),
    (
        "amp4-linear-noisy",
        CircuitSpec(4, 5, "amplitude", tuple(entangling_pairs("linear", 4)), 0.01, 0.0, 0.01, correlators=True),
    ),
    ("amp3-a2a", CircuitSpec(3, 6, "amplitude", tuple(entangling_pairs("all_to_all", 3)))),
    ("angle4-ring-damped", CircuitSpec(4, 5, "angle", tuple(entangling_pairs("ring", 4)), 0.0, 0.01)),
)


def _batches(spec: CircuitSpec, seed: int, steps: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``steps`` minibatches of one restart: unit rows for amplitude encoding, angles otherwise."""
    rng = np.random.default_rng(seed)
    width = 2**spec.qubits if spec.encoding == "amplitude" else spec.qubits
    out = []
    for _ in range(steps):
        X = rng.random((BATCH, width))
        if spec.encoding == "amplitude":
            X /= np.linalg.norm(X, axis=1, keepdims=True)
        y = (rng.random(BATCH) < 0.2).astype(np.float64)
        out.append((X, y, np.where(y > 0, 4.0, 1.0)))
    return out


def _params(spec: CircuitSpec, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "theta": jnp.asarray(rng.normal(0, 0.3, (spec.layers, spec.qubits, 3))),
        "w": jnp.asarray(rng.normal(0, 0.1, spec.n_outputs)),
        "b": jnp.asarray(0.0),
    }


def _stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def measure(spec: CircuitSpec, restarts: int, steps: int = STEPS) -> tuple[float, float, float]:
    """(seconds per step one set at a time, seconds per vmapped step, largest parameter
    difference between the two trajectories after ``steps`` steps)."""
    opt, step = compiled_step(spec, "supervised", "fast", None, "adam", LR)
    lam, center, key = jnp.asarray(LAM), jnp.zeros(spec.n_outputs), jax.random.PRNGKey(0)
    one = jax.jit(step.fn)
    many = jax.jit(jax.vmap(step.fn, in_axes=(0, 0, 0, None, 0, 0, 0, None, None)))
    inits = [_params(spec, r) for r in range(restarts)]
    anchors = [p["theta"] for p in inits]
    data = [_batches(spec, 100 + r, steps) for r in range(restarts)]

    def fresh():
        """Both trajectories at the initial parameters: per restart, and stacked."""
        singles = [(p, opt.init(p)) for p in inits]
        return singles, (_stack([p for p, _ in singles]), _stack([s for _, s in singles]))

    singles, batched = fresh()
    anchor_stack = jnp.stack(anchors)
    per_step = [tuple(jnp.stack(a) for a in zip(*(data[r][t] for r in range(restarts)))) for t in range(steps)]

    def run_single(t: int):
        for r in range(restarts):
            p, s = singles[r]
            p, s, loss = one(p, s, anchors[r], lam, *data[r][t], center, key)
            singles[r] = (p, s)
            float(loss)  # the loss back on the host, as training reads it

    def run_batched(t: int):
        nonlocal batched
        p, s, loss = many(*batched, anchor_stack, lam, *per_step[t], center, key)
        batched = (p, s)
        np.asarray(loss)

    run_single(0)  # compile both
    run_batched(0)
    singles, batched = fresh()  # restart both trajectories from the initial parameters
    for t in range(steps):  # the identity check: the same steps on the same batches
        run_single(t)
        run_batched(t)
    diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b[r]))))
        for r in range(restarts)
        for a, b in zip(jax.tree.leaves(singles[r][0]), jax.tree.leaves(batched[0]))
    )

    def timed(fn) -> float:
        def once():
            started = time.perf_counter()
            for t in range(steps):
                fn(t)
            return (time.perf_counter() - started) / steps

        return statistics.median(once() for _ in range(3))

    return timed(run_single), timed(run_batched), diff


def main(argv: list[str]) -> None:
    for restarts in [int(a) for a in argv] or [3, 10]:
        for name, spec in FLEET:
            single, batched, diff = measure(spec, restarts)
            print(
                f"{name:20s} R={restarts:2d}: {restarts} steps one at a time {single * 1e3:6.2f} ms, "
                f"vmapped {batched * 1e3:6.2f} ms -> {single / batched:4.2f}x; "
                f"largest parameter difference after {STEPS} steps {diff:.1e}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
