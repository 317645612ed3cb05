"""Compiled circuits are written to the persistent cache once and reused by later processes."""

from __future__ import annotations

import os
import subprocess
import sys

SNIPPET = """
import time, numpy as np, jax.numpy as jnp, jax
from pqfl.compile_cache import enable_persistent_cache
enable_persistent_cache()
from pqfl.federated.local_update import compiled_step
from pqfl.quantum.spec import CircuitSpec
spec = CircuitSpec(5, 2, "amplitude", ((0, 1), (1, 2), (2, 3), (3, 4), (4, 0)), 0.01, 0.005)
opt, step = compiled_step(spec, "supervised", "fast", None, "adam", 0.05)
params = {"theta": jnp.zeros((2, 5, 3)), "w": jnp.ones(5), "b": jnp.asarray(0.0)}
X = np.random.default_rng(0).random((32, 32))
t = time.perf_counter()
out = step(params, opt.init(params), params["theta"], 0.1, X, np.zeros(32), np.ones(32), jnp.zeros(5), jax.random.PRNGKey(0))
jax.block_until_ready(out)
print(time.perf_counter() - t)
"""


def _run(cache):
    env = {**os.environ, "PQFL_CACHE_DIR": str(cache)}
    proc = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.strip().splitlines()[-1])


def test_second_process_reuses_the_compiled_step(tmp_path):
    cache = tmp_path / "jax-cache"
    first = _run(cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert any(name.startswith("jit_step") for name in entries), entries
    second = _run(cache)
    # A cache hit writes nothing new and skips XLA compilation.
    assert sorted(p.name for p in cache.iterdir()) == entries
    assert second < first
