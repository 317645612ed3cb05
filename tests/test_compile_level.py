"""The suite compiles at XLA's backend optimisation level 0 (conftest.py), users at XLA's
default; this checks that the two compute the same numbers up to rounding, so what the
suite asserts about pqfl's results holds for the results users get.

The level is LLVM's optimisation of the generated CPU code. It changes the last bits (the
control below, and pqfl's scores after a few epochs: 1e-16 to 1e-15 here), not the
computation; every test compares pqfl with itself or with tolerances, never with stored
numbers, so the suite's assertions do not depend on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: one client of each simulator path: a state vector, a noisy density matrix, sampled shots
DETECTORS = [
    {"qubits": 3, "layers": 2, "encoding": "amplitude"},
    {"qubits": 2, "layers": 2, "entangling": "linear", "encoding": "angle", "reupload": True, "measure": "zz",
     "noise": {"depolarizing": 0.02, "amplitude_damping": 0.01, "readout": 0.02}},
    {"qubits": 2, "layers": 1, "encoding": "iqp", "shots": 256},
]  # fmt: skip


def results() -> dict:
    """Each detector's training-set scores after five epochs, and the control: a plain JAX
    function whose compiled result depends on the level."""
    import jax
    import jax.numpy as jnp

    import pqfl

    rng = np.random.default_rng(0)
    y = (np.arange(48) % 4 == 0).astype(int)
    X = rng.normal(size=(48, 8)) + 1.5 * y[:, None] * np.linspace(-1, 1, 8)
    scores = [
        pqfl.QuantumDetector(**kw, epochs=5, batch_size=16, random_state=1).fit(X, y).decision_function(X).tolist()
        for kw in DETECTORS
    ]

    def control(x):
        for i in range(8):
            x = jnp.sin(x) * jnp.cos(x) + jnp.tanh(x * i)
        return x.sum()

    return {"scores": scores, "control": float(jax.jit(jax.grad(control))(jnp.ones(4096)).sum())}


def test_pqfl_s_numbers_do_not_depend_on_the_suite_s_compile_level():
    assert "--xla_backend_optimization_level=0" in os.environ["XLA_FLAGS"]
    here = results()
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=2"}
    code = "import json, tests.test_compile_level as t; print(json.dumps(t.results()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    there = json.loads(out.stdout.strip().splitlines()[-1])
    assert here["control"] != there["control"]  # the other process did compile at another level
    for ours, theirs in zip(here["scores"], there["scores"]):
        assert np.ptp(ours) > 0.1  # scores that say something
        assert np.allclose(ours, theirs, rtol=0, atol=1e-12)
