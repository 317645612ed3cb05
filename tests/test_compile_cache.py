"""Compiled circuits are traced once per structure and reused by later processes, with the
same numbers whether a process traced or loaded them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

SNIPPET = """
import json, os, pathlib, sys, time, numpy as np, jax.numpy as jnp, jax, pqfl
from pqfl.compile_cache import compile_stats
pqfl.enable_persistent_cache()  # the public opt-in (PQFL_CACHE_DIR names the folder)
from pqfl.federated.local_update import compiled_step
from pqfl.quantum.spec import CircuitSpec
spec = CircuitSpec(5, 2, "amplitude", ((0, 1), (1, 2), (2, 3), (3, 4), (4, 0)), 0.01, 0.005)
opt, step = compiled_step(spec, "supervised", "fast", None, "adam", float(sys.argv[1]))
params = {"theta": jnp.full((2, 5, 3), 0.3), "w": jnp.ones(5), "b": jnp.asarray(0.0)}
X = np.random.default_rng(0).random((32, 32))
y = (np.arange(32) % 4 == 0).astype(float)
go = os.environ.get("GO_FILE")  # set: say ready, then wait for the word to start with the others
if go:
    pathlib.Path(f"{go}.{os.getpid()}").touch()
    while not os.path.exists(go):
        time.sleep(0.01)
new, _, loss = step(params, opt.init(params), params["theta"], 0.1, X, y, np.ones(32), jnp.zeros(5), jax.random.PRNGKey(0))
print(json.dumps({"loss": float(loss), "theta": np.asarray(new["theta"]).tolist(), "stats": compile_stats()}))
"""


def _run(cache, lr=0.05):
    env = {**os.environ, "PQFL_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(lr)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_processes_starting_together_trace_once_and_get_the_same_numbers(tmp_path):
    """Two processes that need the same step at the same moment (Dask workers, a process
    pool, two runs): one traces and compiles it while the other waits, then loads it."""
    cache, go = tmp_path / "jax-cache", tmp_path / "go"
    env = {**os.environ, "PQFL_CACHE_DIR": str(cache), "GO_FILE": str(go)}
    procs = [
        subprocess.Popen([sys.executable, "-c", SNIPPET, "0.05"], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("go.*"))) < 2:  # both imported and about to call the step
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted((o["stats"]["traced"], o["stats"]["loaded"]) for o in outs) == [(0, 1), (1, 0)]
    assert outs[0]["theta"] == outs[1]["theta"] and outs[0]["loss"] == outs[1]["loss"]
    assert len(_exported(cache)) == 1


def test_the_lock_never_holds_a_process_back_for_good(tmp_path, monkeypatch):
    """A file system without locks is not waited on; a lock held too long is given up after
    ``LOCK_WAIT_S`` (the holder may be stuck), and the process prepares the function itself."""
    import errno
    import fcntl

    from pqfl import compile_cache

    path = tmp_path / "exported" / "step-x.jaxexp"

    def unsupported(handle, how):
        raise OSError(errno.ENOLCK, "no locks here")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    started = time.monotonic()
    with compile_cache._exclusive(path):
        pass
    assert time.monotonic() - started < 1.0

    def held(handle, how):
        raise BlockingIOError(errno.EWOULDBLOCK, "held by another process")

    monkeypatch.setattr(fcntl, "flock", held)
    monkeypatch.setattr(compile_cache, "LOCK_WAIT_S", 0.3)
    started = time.monotonic()
    with compile_cache._exclusive(path):
        waited = time.monotonic() - started
    assert 0.3 <= waited < 5.0
    assert (tmp_path / "locks" / "step-x.lock").exists() and not (tmp_path / "exported").exists()


def _exported(cache):
    return sorted(p.name for p in (cache / "exported").iterdir())


def test_second_process_loads_the_traced_step_and_gets_the_same_numbers(tmp_path):
    cache = tmp_path / "jax-cache"
    first = _run(cache)
    assert first["stats"]["traced"] == 1 and first["stats"]["loaded"] == 0
    stored = _exported(cache)
    assert len(stored) == 1 and stored[0].startswith("step-"), stored
    second = _run(cache)
    # No tracing in the second process: the step is read back, nothing new is written.
    assert second["stats"]["traced"] == 0 and second["stats"]["loaded"] == 1
    assert _exported(cache) == stored
    assert second["loss"] == first["loss"] and second["theta"] == first["theta"]

    # A different closure (another learning rate) is another function, with its own entry.
    other = _run(cache, lr=0.1)
    assert other["stats"]["traced"] == 1 and len(_exported(cache)) == 2
    assert other["theta"] != first["theta"]

    # A damaged entry is traced again and replaced, with the same numbers.
    (cache / "exported" / stored[0]).write_bytes(b"not an export")
    repaired = _run(cache)
    assert repaired["stats"]["traced"] == 1 and repaired["theta"] == first["theta"]
    assert _run(cache)["stats"]["loaded"] == 1


def test_exported_function_matches_plain_jit_and_keeps_pytrees():
    """The export route computes what ``jax.jit`` of the same function computes, bit for
    bit, and hands back the caller's pytree structure."""
    from pqfl.compile_cache import PersistentFunction

    def fn(params, x):
        return {"y": jnp.sin(params["a"] @ x) * params["b"], "n": jnp.sum(x**2)}

    params = {"a": jnp.asarray(np.random.default_rng(1).normal(size=(3, 4))), "b": jnp.asarray(0.5)}
    x = np.random.default_rng(2).normal(size=4)
    persistent = PersistentFunction(fn, "test-fn", ("static", 1), out_like=lambda *_: {"y": 0, "n": 0})
    got, want = persistent(params, x), jax.jit(fn)(params, x)
    assert set(got) == {"y", "n"}
    np.testing.assert_array_equal(np.asarray(got["y"]), np.asarray(want["y"]))
    np.testing.assert_array_equal(np.asarray(got["n"]), np.asarray(want["n"]))
    # New values, same signature: the prepared call is reused.
    got = persistent(params, np.ones(4) * 2.0)
    np.testing.assert_array_equal(np.asarray(got["y"]), np.asarray(jax.jit(fn)(params, np.ones(4) * 2.0)["y"]))


def test_a_step_fed_its_own_results_runs_one_compiled_executable():
    """A training step is first called with fresh arrays (not yet committed to a device) and
    then with its own results (committed), directly or through ``leaf_call``. Both must run
    the executable of the first call: a change of placement alone used to lower and compile
    the same step a second time. Counted with JAX's lowering events, which precede every
    XLA compile (or its lookup in the persistent cache); the numbers must equal plain
    ``jax.jit`` fed the same way, bit for bit."""
    from pqfl.compile_cache import PersistentFunction

    def step(params, x):
        return {"w": params["w"] - 0.1 * jnp.tanh(params["w"] * x), "b": params["b"] + jnp.sum(x) * 1e-3}

    lowered = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowered.append(kwargs.get("fun_name"))

    x = np.random.default_rng(3).normal(size=5)
    fresh = {"w": jnp.asarray(np.linspace(-1, 1, 5)), "b": jnp.asarray(np.array(0.25))}
    persistent = PersistentFunction(step, "test-step", ("placement",), out_like=lambda *_: {"w": 0, "b": 0})
    params = persistent(fresh, x)  # prepared: traced, lowered and compiled here
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        params = persistent(params, x)  # its own (committed) results
        call = persistent.leaf_call(params, x)
        leaves = jax.tree.leaves((params, x))
        for _ in range(3):
            carry = call(*leaves)
            leaves = [*carry, x]
        persistent(fresh, x)  # and fresh arrays again
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert lowered == []

    want = fresh
    for _ in range(5):
        want = jax.jit(step)(want, x)
    got = jax.tree.unflatten(jax.tree.structure(want), carry)
    np.testing.assert_array_equal(np.asarray(got["w"]), np.asarray(want["w"]))
    np.testing.assert_array_equal(np.asarray(got["b"]), np.asarray(want["b"]))


def test_a_cache_folder_that_cannot_be_written_costs_a_trace_not_the_run(tmp_path):
    """The traced function is still used when its export cannot be stored."""
    cache = tmp_path / "jax-cache"
    cache.mkdir()
    (cache / "exported").write_text("a file where the folder of exports would go")
    first = _run(cache)
    assert first["stats"]["traced"] == 1 and first["stats"]["loaded"] == 0
    assert _run(cache)["stats"]["traced"] == 1  # nothing was stored, so the next process traces again
