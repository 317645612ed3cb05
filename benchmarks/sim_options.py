"""What the circuit options cost: one jitted value-and-gradient step, side by side.

Batch 64, 5 layers, ring entangler; median of 30 calls after a warm-up (compilation).
Re-uploading on a noisy client leaves the Heisenberg shortcut for one forward-evolved state per
sample; the correlator readout adds q(q-1)/2 observables.

    .venv/bin/python -m benchmarks.sim_options
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from pqfl.quantum.ansatz import entangling_pairs, shape
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.spec import CircuitSpec


def bench(spec, reps=30):
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(64, spec.n_features)))
    th = jnp.asarray(rng.uniform(-3, 3, shape(spec.layers, spec.qubits)))
    f = jax.jit(jax.value_and_grad(lambda t: jnp.sum(fast_expvals(spec, X, t) ** 2)))
    jax.block_until_ready(f(th))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(th))
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


ring4, ring5 = tuple(entangling_pairs("ring", 4)), tuple(entangling_pairs("ring", 5))
cases = {
    "angle 4q L5 damped (Heisenberg)": CircuitSpec(4, 5, "angle", ring4, amplitude_damping=0.01),
    "angle 4q L5 damped reupload (density)": CircuitSpec(4, 5, "angle", ring4, amplitude_damping=0.01, reupload=True),
    "angle 4q L5 noiseless": CircuitSpec(4, 5, "angle", ring4),
    "angle 4q L5 noiseless reupload": CircuitSpec(4, 5, "angle", ring4, reupload=True),
    "amp 5q L5 noiseless z": CircuitSpec(5, 5, "amplitude", ring5),
    "amp 5q L5 noiseless zz": CircuitSpec(5, 5, "amplitude", ring5, correlators=True),
    "amp 4q L5 depol z": CircuitSpec(4, 5, "amplitude", ring4, depolarizing=0.01, readout=0.01),
    "amp 4q L5 depol zz": CircuitSpec(4, 5, "amplitude", ring4, depolarizing=0.01, readout=0.01, correlators=True),
}

if __name__ == "__main__":
    for name, spec in cases.items():
        print(f"{name:42s} {bench(spec):8.2f} ms", flush=True)
