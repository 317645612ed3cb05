"""The suite compiles at XLA's backend optimisation level 0 (conftest.py), users at XLA's
default; this checks that the two compute pqfl's training the same up to rounding, so
what the suite asserts about pqfl's results holds for the results users get.

The level is LLVM's optimisation of the generated CPU code. It changes the last bits (the
control below; pqfl's parameters after thirty training steps, up to 2e-15 here), not the
computation; every test compares pqfl with itself or with tolerances, never with stored
numbers, so the suite's assertions do not depend on it.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqfl.federated.local_update import compiled_step
from pqfl.quantum.spec import CircuitSpec

#: one circuit per simulator path: a state vector, a noisy density matrix, sampled shots;
#: with the width of the rows each reads
PATHS = {
    "statevector": (CircuitSpec(3, 2, "amplitude", ((0, 1), (1, 2), (2, 0))), None, 8),
    "density": (CircuitSpec(2, 2, "angle", ((0, 1),), 0.02, 0.01, 0.02, reupload=True, correlators=True), None, 4),
    "shots": (CircuitSpec(2, 1, "iqp", ((0, 1),)), 256, 2),
}


def _at(level: int, fn):
    """``fn`` compiled at ``level`` (the option overrides ``XLA_FLAGS``)."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": level})


def test_the_suite_names_a_level_and_the_control_tells_the_levels_apart():
    assert "--xla_backend_optimization_level=" in os.environ["XLA_FLAGS"]  # 0 unless the caller set one

    def control(x):
        for i in range(8):
            x = jnp.sin(x) * jnp.cos(x) + jnp.tanh(x * i)
        return x.sum()

    low, high = (_at(level, jax.grad(control))(jnp.ones(4096)) for level in (0, 2))
    assert float(low.sum()) != float(high.sum())  # so the comparison below could fail


@pytest.mark.parametrize("path", PATHS)
def test_training_agrees_to_rounding_at_both_levels(path):
    spec, shots, width = PATHS[path]
    opt, step = compiled_step(spec, "supervised", "fast", shots, "adam", 0.05)
    rng = np.random.default_rng(0)
    y = (np.arange(16) % 4 == 0).astype(float)
    X = rng.normal(size=(16, width)) + y[:, None]
    params = {"theta": rng.normal(0, 0.3, (spec.layers, spec.qubits, 3)), "w": rng.normal(0, 0.3, spec.n_outputs),
              "b": np.asarray(0.0)}  # fmt: skip

    def train(level: int):
        """Thirty steps of pqfl's own training step, compiled at ``level``."""
        run, p, state, losses = _at(level, step.fn), params, opt.init(params), []
        for i in range(30):
            args = (params["theta"], 0.0, X, y, np.ones(16), np.zeros(spec.n_outputs), jax.random.PRNGKey(i))
            p, state, loss = run(p, state, *args)
            losses.append(float(loss))
        return p, np.array(losses)

    (p0, l0), (p2, l2) = train(0), train(2)
    assert l0[-1] < l0[0]  # it trained
    assert np.allclose(l0, l2, rtol=0, atol=1e-12)
    for name in params:
        assert np.allclose(p0[name], p2[name], rtol=0, atol=1e-12), name
