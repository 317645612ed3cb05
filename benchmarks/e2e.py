"""End-to-end wall of ``pqfl run``: what a user waits for, and where it goes.

``pqfl bench e2e`` runs the command as a user does, in fresh processes on fresh MLflow
stores and a Prefect database without history (:func:`fresh_prefect_home`): once with an
empty compilation cache (cold), then ``runs`` times with the cache that run filled
(warm), for the given config (the embedded default unless ``--config``) and for a
one-method one-round run of it (the fixed cost). From each process's
``--json`` timings it splits the wall into

- start: interpreter start, imports and checks, until the flow starts (the temporary
  Prefect server starts meanwhile; ``server`` is what was still waited for);
- data: data preparation before the flow;
- train and evaluate: the round loops' local training (with aggregation) and evaluation,
  summed over methods; compiling is inside these two, reported beside them as counts and
  thread-seconds;
- orchestration+tracking: the rest of the flow (Prefect runs and tasks, checkpoints,
  MLflow runs, metrics, figures and models);
- exit: stopping the server and the interpreter.

Beside the wall, each run's CPU seconds (``CPU (with its server)``): the process's and
those of the children it waited for, above all the temporary Prefect server, which runs
on the same cores as the training.

Beside them, ``runs`` warm runs of the library alone (``library warm``): the same config's
methods through ``pqfl.federated.rounds.Federation`` in a fresh process, one thread per
client job as the flow's default thread runner, with no Prefect and no MLflow. Its metrics must
equal ``pqfl run``'s; the difference in wall is what the orchestration and tracking layer
costs. There ``start`` is the interpreter and the library's imports, and
``orchestration+tracking`` the round loops' own bookkeeping.

With ``odds_dir`` (the folder of the ODDS ``.mat`` files), also the seconds per case of the
ODDS suite (``benchmarks/suites/odds.yaml``): its first case (first dataset, objective and
seed) as a one-case suite through ``pqfl benchmark``, whole process, once with the case's
circuits not yet in the cache, then ``runs`` times warm; the rows must be identical.

Figures are medians over the warm runs; the cold run is one run. Nothing here is a test:
the suite asserts identical metrics and compile counts, the figures come from here.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import yaml

PHASES = ("start", "server", "data", "train", "evaluate", "orchestration+tracking", "exit")
ODDS_SUITE = Path(__file__).resolve().parent / "suites" / "odds.yaml"


def _child(
    what: str, cmd: list[str], env: dict, folder: Path, out: Path, timeout: float, cwd: str | Path
) -> tuple[float, float, dict]:
    """Run ``cmd`` (``what`` it is, for an error; it writes its JSON result to ``out``) in a
    fresh process; when it was launched (Unix time), its wall and its result, to which
    ``process_cpu_s`` is added: the CPU seconds (user and system) of the process and of
    the children it waited for, such as ``pqfl run``'s temporary Prefect server."""
    folder.mkdir(parents=True)
    launched = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return launched, wall, {**json.loads(out.read_text()), "process_cpu_s": cpu}


@lru_cache(maxsize=1)
def _prefect_home() -> tuple[Path, Path]:
    """The benchmark's Prefect home and the database without history that each command
    starts from, made once per benchmark process (untimed) in a temporary folder that is
    removed when the process exits. The server that migrates the database also leaves its
    memo of Prefect's block registration in the home, for this database path: a user's
    home has one, and without it every server start registers the block types again."""
    from flows.runners import copy_database, served_database

    root = Path(tempfile.mkdtemp(prefix="pqfl-bench-prefect-"))
    atexit.register(shutil.rmtree, root, True)
    home = root / "home"
    template = root / "template.db"
    copy_database(served_database(home), template)
    return home, template


def fresh_prefect_home() -> Path:
    """The benchmark's Prefect home (:func:`_prefect_home`), its database reset to the one
    without history. Commands run one after the other, so they share the path."""
    from flows.runners import copy_database

    home, template = _prefect_home()
    for suffix in ("", "-wal", "-shm"):
        (home / f"prefect.db{suffix}").unlink(missing_ok=True)
    copy_database(template, home / "prefect.db")
    return home


def _command_env(cache: Path, folder: Path) -> dict:
    """The environment of a ``pqfl`` command run here: its own temporary Prefect server (no
    ``PREFECT_API_URL``), no injected faults, the compilation cache ``cache``, a fresh
    MLflow store and checkpoint folder in ``folder``, and a Prefect home whose database
    has no history (:func:`fresh_prefect_home`). Otherwise the temporary server writes to
    the user's ``PREFECT_HOME``, whose database keeps every earlier command's runs; on one
    of 5 GB a warm default run used a fifth more CPU (docs/speed.md), so the figures would
    depend on the machine's history."""
    from flows.runners import DATABASE_SETTINGS

    drop = ("PREFECT_API_URL", "PQFL_FAULT_RATE", *DATABASE_SETTINGS)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        PQFL_CACHE_DIR=str(cache),
        MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}",
        PQFL_CHECKPOINT_DIR=str(folder / "checkpoints"),
        PREFECT_HOME=str(fresh_prefect_home()),
    )
    return env


def run_pqfl(
    args: list[str], cache: Path, folder: Path, timeout: float = 900, tree: str | None = None
) -> tuple[float, float, dict]:
    """``pqfl run ARGS --json`` in a fresh process on a fresh store in ``folder``, with the
    compilation cache ``cache``; with ``tree``, that checkout's own command. Returns when it
    was launched (Unix time), its wall and its ``--json`` result."""
    env = _command_env(cache, folder)
    if tree:
        env["PYTHONPATH"] = tree
    out = folder / "run.json"
    cmd = [sys.executable, "-m", "flows.cli", "run", *args, "--json", str(out)]
    return _child(f"pqfl run {' '.join(args)}", cmd, env, folder, out, timeout, cwd=tree or folder)


def first_case_suite(suite: Path, out: Path) -> str:
    """Write ``suite``'s first case (its first dataset entry, objective and seed) to ``out`` as a
    suite of that one case, the rest of the suite as it is; returns ``"DATASET OBJECTIVE seed S"``."""
    data = yaml.safe_load(suite.read_text())
    entry = dict(data["datasets"][0])
    seed = (entry.pop("seeds", None) or data["seeds"])[0]
    data.update(datasets=[entry], objectives=data["objectives"][:1], seeds=[seed])
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return f"{entry['name']} {data['objectives'][0]} seed {seed}"


def run_suite(suite: Path, data_dir: str, cache: Path, folder: Path, timeout: float = 900) -> tuple[float, float, dict]:
    """``pqfl benchmark --suite SUITE --data-dir DATA_DIR --json`` in a fresh process on a fresh
    store in ``folder``, with the compilation cache ``cache``; as :func:`run_pqfl`, when it
    was launched, its wall and its result."""
    env = _command_env(cache, folder)
    out = folder / "benchmark.json"
    cmd = [sys.executable, "-m", "flows.cli", "benchmark", "--suite", str(suite), "--data-dir", data_dir]
    return _child(f"pqfl benchmark --suite {suite}", [*cmd, "--json", str(out)], env, folder, out, timeout, cwd=folder)


def library_run(config: str | None) -> dict:
    """The config's methods through the library's round loop alone, in this process: the
    fleet prepared once, each method's ``Federation`` run with its client jobs on a thread
    pool (no Prefect, no MLflow, no checkpoints). Returns timings as ``pqfl run --json``
    does (the flow's fields) and each method's summary metrics. The persistent compilation
    cache is the caller's to turn on (the child process of :func:`run_library` does)."""
    from concurrent.futures import ThreadPoolExecutor

    from pqfl.compile_cache import compile_stats
    from pqfl.federated.rounds import Federation
    from pqfl.fleet import prepare
    from tasks.settings import load_run_config

    cfg = load_run_config(config)
    started = time.perf_counter()
    fleet = prepare(cfg)
    prepare_s = time.perf_counter() - started
    flow_start_unix, flow_started = time.time(), time.perf_counter()
    methods = {}
    for method in cfg.federation.methods:
        phases = {"train_s": 0.0, "evaluate_s": 0.0}

        def on_round(state, phases=phases):
            phases["train_s"] += state.last.train_s
            phases["evaluate_s"] += state.last.evaluate_s

        before = compile_stats()
        federation = Federation(fleet, method, cfg.federation, simulator=cfg.simulator)
        # as Prefect's thread runner, which starts a thread per task unless the config caps them
        with ThreadPoolExecutor(max_workers=cfg.runner.max_workers or len(federation.trainers)) as pool:
            result = federation.run(map_fn=lambda fn, jobs: [pool.submit(fn, j) for j in jobs], on_round=on_round)
        compiles = {f"compile_{k}": v - before[k] for k, v in compile_stats().items()}
        methods[method] = {**result.summary.metrics(), "timings": {**phases, **compiles}}
    timings = {
        "flow_start_unix": flow_start_unix,
        "flow_s": time.perf_counter() - flow_started,
        "server_wait_s": 0.0,
        "prepare_s": prepare_s,
    }
    return {"methods": methods, "timings": timings}


def run_library(config: str | None, cache: Path, folder: Path, timeout: float = 900) -> tuple[float, float, dict]:
    """:func:`library_run` in a fresh process with the compilation cache ``cache``; as
    :func:`run_pqfl`, when it was launched, its wall and its result."""
    env = {k: v for k, v in os.environ.items() if k != "PQFL_FAULT_RATE"}
    env["PQFL_CACHE_DIR"] = str(cache)
    out = folder / "run.json"
    cmd = [sys.executable, "-m", "benchmarks.e2e", "library", config or "", str(out)]
    return _child("library run", cmd, env, folder, out, timeout, cwd=folder)


def _one(args: list[str], cache: Path, folder: Path, timeout: float) -> dict:
    """One ``pqfl run`` in a fresh process and store; its wall and its phase split."""
    return _split(*run_pqfl(args, cache, folder, timeout))


def _split(launched: float, wall: float, result: dict) -> dict:
    """A run's wall split into :data:`PHASES` from its result's timings, with its compile
    counts and metrics."""
    t, methods = result["timings"], result["methods"].values()
    train = sum(m["timings"]["train_s"] for m in methods)
    evaluate = sum(m["timings"]["evaluate_s"] for m in methods)
    before_flow = t["flow_start_unix"] - launched
    phases = {
        "start": before_flow - t["server_wait_s"] - t["prepare_s"],
        "server": t["server_wait_s"],
        "data": t["prepare_s"],
        "train": train,
        "evaluate": evaluate,
        "orchestration+tracking": t["flow_s"] - train - evaluate,
        "exit": wall - before_flow - t["flow_s"],
    }
    return {
        "wall_s": wall,
        "cpu_s": result["process_cpu_s"],
        "phases": phases,
        "train_evaluate_share": (train + evaluate) / wall,
        "fixed_s": wall - train - evaluate,
        "compile_traced": sum(m["timings"]["compile_traced"] for m in methods),
        "compile_loaded": sum(m["timings"]["compile_loaded"] for m in methods),
        "compile_thread_s": sum(m["timings"]["compile_seconds"] for m in methods),
        "metrics": {name: m["mean_auroc"] for name, m in result["methods"].items()},
    }


def _median(runs: list[dict]) -> dict:
    keys = (
        "wall_s",
        "cpu_s",
        "train_evaluate_share",
        "fixed_s",
        "compile_traced",
        "compile_loaded",
        "compile_thread_s",
    )
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["phases"] = {p: statistics.median(r["phases"][p] for r in runs) for p in PHASES}
    out["walls"] = [r["wall_s"] for r in runs]
    return out


def run_e2e(
    config: str | None = None,
    runs: int = 3,
    timeout: float = 900,
    progress: Callable[[str], None] = print,
    odds_dir: str | None = None,
) -> dict:
    """Cold and warm walls of the full run and of a one-method one-round run, and with
    ``odds_dir`` of one ODDS suite case; see the module doc."""
    base = ["--config", config] if config else []
    cases = {"full": base, "one-method-one-round": [*base, "--methods", "pqfl", "--rounds", "1"]}
    with tempfile.TemporaryDirectory(prefix="pqfl-e2e-") as tmp:
        cache = Path(tmp) / "cache"
        result = {"config": config or "embedded default", "runs": runs, "cases": {}}
        cold = _one(cases["full"], cache, Path(tmp) / "cold", timeout)
        progress(f"cold full run: {cold['wall_s']:.1f} s")
        result["cases"]["full"] = {"cold": cold}
        for name, args in cases.items():
            warm = []
            for i in range(runs):
                warm.append(_one(args, cache, Path(tmp) / f"{name}-{i}", timeout))
                progress(f"warm {name} run {i + 1}/{runs}: {warm[-1]['wall_s']:.1f} s")
            result["cases"].setdefault(name, {})["warm"] = _median(warm)
            # the numbers must not depend on the cache's state or on the repetition
            same = all(w["metrics"] == warm[0]["metrics"] for w in warm)
            if name == "full":
                same = same and cold["metrics"] == warm[0]["metrics"]
            result["cases"][name]["metrics_identical"] = same
        library = [_split(*run_library(config, cache, Path(tmp) / f"library-{i}", timeout)) for i in range(runs)]
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in library)
        progress(f"warm library runs: {walls} s")
        full = result["cases"]["full"]
        result["cases"]["library"] = {
            "warm": _median(library),
            # the layer must not change a number: the library alone gives pqfl run's metrics
            "metrics_identical": all(r["metrics"] == full["cold"]["metrics"] for r in library),
        }
        result["layer_s"] = full["warm"]["wall_s"] - result["cases"]["library"]["warm"]["wall_s"]
        if odds_dir:
            suite = Path(tmp) / "odds-one-case.yaml"
            label = first_case_suite(ODDS_SUITE, suite)
            done = []
            for i in range(runs + 1):  # the first prepares the case's circuits, which the default has not
                _, wall, out = run_suite(suite, str(Path(odds_dir).resolve()), cache, Path(tmp) / f"odds-{i}", timeout)
                done.append((wall, out["process_cpu_s"], out["rows"]))
                progress(f"{'cold' if i == 0 else 'warm'} ODDS case ({label}) run: {wall:.1f} s")
            result["odds_case"] = {
                "case": label,
                "cold_s": done[0][0],
                "cold_cpu_s": done[0][1],
                "walls": [w for w, _, _ in done[1:]],
                "warm_s": statistics.median(w for w, _, _ in done[1:]),
                "warm_cpu_s": statistics.median(c for _, c, _ in done[1:]),
                "rows_identical": all(r == done[0][2] for _, _, r in done),
            }
    result["table"] = table(result)
    return result


def table(result: dict) -> str:
    """The phase split, one column per measured case."""
    columns = {"full cold": result["cases"]["full"]["cold"], "full warm": result["cases"]["full"]["warm"]}
    columns["1 method 1 round warm"] = result["cases"]["one-method-one-round"]["warm"]
    if "library" in result["cases"]:
        columns["library warm"] = result["cases"]["library"]["warm"]
    lines = [f"{'seconds':<24}" + "".join(f"{c:>24}" for c in columns)]
    lines.append(f"{'whole process':<24}" + "".join(f"{c['wall_s']:>24.1f}" for c in columns.values()))
    for p in PHASES:
        lines.append(f"{'  ' + p:<24}" + "".join(f"{c['phases'][p]:>24.1f}" for c in columns.values()))
    lines.append(f"{'fixed (not train/eval)':<24}" + "".join(f"{c['fixed_s']:>24.1f}" for c in columns.values()))
    lines.append(
        f"{'train+evaluate share':<24}" + "".join(f"{c['train_evaluate_share']:>24.0%}" for c in columns.values())
    )
    lines.append(f"{'CPU (with its server)':<24}" + "".join(f"{c['cpu_s']:>24.1f}" for c in columns.values()))
    lines.append(
        f"{'compiled: traced/loaded':<24}"
        + "".join(f"{'{:.0f}/{:.0f}'.format(c['compile_traced'], c['compile_loaded']):>24}" for c in columns.values())
    )
    lines.append(
        f"{'compile thread-seconds':<24}" + "".join(f"{c['compile_thread_s']:>24.1f}" for c in columns.values())
    )
    if "layer_s" in result:
        lines.append(f"orchestration and tracking layer (full warm - library warm): {result['layer_s']:.1f} s")
    if odds := result.get("odds_case"):
        lines.append(
            f"ODDS suite, seconds per case ({odds['case']}, pqfl benchmark, whole process): "
            f"{odds['warm_s']:.1f} warm (CPU {odds['warm_cpu_s']:.1f}), {odds['cold_s']:.1f} with its circuits uncached"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # `python -m benchmarks.e2e library CONFIG OUT`: run_library's child
    from pqfl.compile_cache import enable_persistent_cache

    _, _, config, out = sys.argv
    enable_persistent_cache()  # as `pqfl run` does, on PQFL_CACHE_DIR
    Path(out).write_text(json.dumps(library_run(config or None)))
