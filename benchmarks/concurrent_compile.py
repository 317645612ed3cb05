"""What do processes that need the same compiled circuit at the same moment cost?

Dask workers, a process pool or two scheduled runs all start by preparing the same training
steps. ``PersistentFunction`` lets one process trace and compile a step while the others
wait for it and load it (``pqfl.compile_cache._exclusive``). This starts N processes on an
empty cache folder that prepare the embedded default's four training steps, released
together; it alternates with ``LOCK_WAIT_S = 0`` (nobody waits: each process prepares every
step itself, as before the lock) and prints for each trial the wall seconds until all are
done, the CPU seconds of all of them, and the steps traced and loaded; then the medians.

    python -m benchmarks.concurrent_compile          # 2 processes, 3 trials of each
    python -m benchmarks.concurrent_compile 4 5      # 4 processes, 5 trials of each
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = """
import json, os, sys, time
import jax, jax.numpy as jnp, numpy as np
import pqfl.compile_cache as cc
from pqfl.config import load_config
from pqfl.federated.local_update import compiled_step
from pqfl.quantum.spec import CircuitSpec
cc.enable_persistent_cache()
if sys.argv[1] == "0":
    cc.LOCK_WAIT_S = 0.0
cfg = load_config()
go = sys.argv[2]
open(f"{go}.{os.getpid()}", "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
for profile in cfg.clients:
    spec = CircuitSpec.from_profile(profile)
    opt, step = compiled_step(spec, "supervised", "fast", profile.shots, cfg.federation.optimizer, cfg.federation.lr)
    rng = np.random.default_rng(0)
    params = {"theta": jnp.asarray(rng.normal(0, 0.3, (spec.layers, spec.qubits, 3))),
              "w": jnp.zeros(spec.n_outputs), "b": jnp.asarray(0.0)}
    dim = 2**spec.qubits if spec.encoding == "amplitude" else spec.qubits
    X, y = rng.random((cfg.federation.batch_size, dim)), np.zeros(cfg.federation.batch_size)
    step(params, opt.init(params), params["theta"], 0.0, X, y, np.ones(len(y)), jnp.zeros(spec.n_outputs),
         jax.random.PRNGKey(0))
print(json.dumps(cc.compile_stats()))
"""


def trial(n: int, wait: bool) -> tuple[float, float, int, int]:
    """(wall s, CPU s of the n processes, steps traced, steps loaded) for one trial."""
    with tempfile.TemporaryDirectory() as folder:
        go = str(Path(folder) / "go")
        env = {**os.environ, "PQFL_CACHE_DIR": str(Path(folder) / "cache")}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, "1" if wait else "0", go],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(n)
        ]
        while len(list(Path(folder).glob("go.*"))) < n:  # all imported: release them together
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited before the start")
            time.sleep(0.05)
        started = time.monotonic()
        Path(go).touch()
        stats = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(p.returncode for p in procs):
        raise RuntimeError("a worker failed")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, sum(s["traced"] for s in stats), sum(s["loaded"] for s in stats)


def main(n: int = 2, trials: int = 3) -> None:
    results: dict[str, list] = {"each prepares": [], "one prepares": []}
    for k in range(trials):
        for name, wait in (("each prepares", False), ("one prepares", True)):
            results[name].append(trial(n, wait))
            wall, cpu, traced, loaded = results[name][-1]
            print(f"trial {k + 1} {name:13s}: {wall:6.1f} s wall  {cpu:6.1f} s CPU  traced {traced}  loaded {loaded}")
    print(f"\n{n} processes, the default's 4 training steps, medians of {trials}, CPU including imports:")
    for name, rows in results.items():
        wall, cpu = (statistics.median(r[i] for r in rows) for i in (0, 1))
        print(f"  {name:13s}: {wall:6.1f} s wall  {cpu:6.1f} s CPU")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
