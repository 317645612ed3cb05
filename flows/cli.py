"""The ``pqfl`` command line: ``pqfl run`` trains and compares methods, ``pqfl compare``
reads the same table back from MLflow.

Bad input prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import NoReturn

# Quiet, offline-friendly Prefect defaults; the user's own settings win. The console stays
# quiet (Prefect's console handler would print a failing or interrupted run's errors and
# tracebacks; the CLI ends every run with one line of its own, tracebacks go to a log file),
# while the Prefect API gets the runs' logs at INFO: Prefect's own (states, retries and
# their reasons) and pqfl's round lines, dropped clients and failures (flows/train.py).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # e.g. "Creating initial MLflow database tables"
# A local Dask cluster (runner kind dask) logs its start-up and shutdown at INFO/WARNING.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")

import pandas as pd  # noqa: E402

from pqfl.config import METHODS  # noqa: E402
from pqfl.errors import PQFLInputError, PQFLRunError  # noqa: E402
from tasks.settings import (
    load_run_config,  # noqa: E402
    parse_run_config,  # noqa: E402
)

COMMANDS = ("run", "compare", "ui", "bench", "benchmark")
TABLE_COLUMNS = {
    "mean_auroc": "mean AUROC",
    "mean_aupr": "mean AUPR",
    "mean_false_error": "mean false err",
    "mean_missing_error": "mean missing err",
    "worst_auroc": "worst AUROC",
    "wall_s": "wall s",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every bad input
        if message.startswith("argument -"):  # "argument --rounds: …" names its flag first, as our own checks do
            raise PQFLInputError(message.removeprefix("argument "))
        if message.startswith("argument {"):  # an unknown command
            raise PQFLInputError(f"command: {message.partition('}: ')[2]}")
        raise PQFLInputError(message if self.prog == "pqfl" else f"{self.prog}: {message}")


def _whole_number(least: int):
    """An argparse type: an integer of at least ``least`` (argparse puts the flag before the message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    from pqfl import __version__

    p = _Parser(prog="pqfl", description="Personalized quantum federated learning for anomaly detection")
    p.add_argument("--version", action="version", version=f"pqfl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=_Parser)
    run = sub.add_parser("run", help="train the chosen methods on identical partitions and print the comparison")
    run.add_argument("--config", help="YAML config (default: the embedded pqfl/configs/default.yaml)")
    run.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    run.add_argument("--rounds", type=_whole_number(1), help="number of global rounds K (at least 1)")
    run.add_argument("--seed", type=_whole_number(0), help="run seed (0 or more)")
    run.add_argument("--dataset", help="dataset source, e.g. sklearn:digits, odds:PATH.mat, csv:PATH#label=COL")
    run.add_argument("--json", dest="json_out", help="write results as JSON to this file")
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue an interrupted run from its last complete round: any MLflow parent run id of it "
        "(its stored config is used; --config only says where its MLflow store is)",
    )
    run.add_argument(
        "--dask-address", help="run the client tasks on the Dask cluster whose scheduler is at tcp://HOST:PORT"
    )
    cmp_ = sub.add_parser(
        "compare", help="print the method table of one `pqfl run` invocation from MLflow (default: the latest complete)"
    )
    cmp_.add_argument("--experiment", help="MLflow experiment name (default: the config's)")
    cmp_.add_argument("--config", help="config whose experiment and store to read (default: embedded)")
    which = cmp_.add_mutually_exclusive_group()
    which.add_argument("--invocation", metavar="ID", help="the invocation to show (tag pqfl.invocation of its runs)")
    which.add_argument("--run", metavar="RUN_ID", help="show the invocation of this parent or client run")
    cmp_.add_argument("--json", dest="json_out", help="write the invocation, its settings and the table as JSON here")
    ui = sub.add_parser("ui", help="start the MLflow UI on the project's store (runs, plots, registered detectors)")
    ui.add_argument("--config", help="config whose store to open (default: embedded; MLFLOW_TRACKING_URI wins)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1, this machine only)")
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    sim = bench_sub.add_parser("sim", help="time the simulator's value-and-gradient step against PennyLane's paths")
    sim.add_argument("--json", dest="json_out", help="write every time and ratio as JSON to this file")
    sim.add_argument("--qubits", default="4,6,8,10", help="comma-separated qubit counts (default 4,6,8,10)")
    sim.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per measurement cell")
    e2e = bench_sub.add_parser(
        "e2e",
        help="whole-process wall of `pqfl run`, cold and warm cache, split into imports/server/data/train/...;"
        " and the library alone, without Prefect and MLflow",
    )
    e2e.add_argument("--config", help="config YAML (default: the embedded default)")
    e2e.add_argument("--runs", type=_whole_number(1), default=3, help="warm runs per case (medians; default 3)")
    e2e.add_argument("--json", dest="json_out", help="write every run's figures as JSON to this file")
    e2e.add_argument(
        "--odds-dir",
        help="folder of the ODDS .mat files (e.g. ../shared/data/odds): also time one case of benchmarks/suites/odds.yaml",
    )
    suite = sub.add_parser(
        "benchmark", help="run a benchmark suite: datasets x methods x seeds, classical references, report"
    )
    suite.add_argument("--suite", required=True, help="suite YAML, e.g. benchmarks/suites/odds.yaml")
    suite.add_argument("--data-dir", help="folder that relative dataset paths in the suite are read from")
    suite.add_argument(
        "--json", dest="json_out", help="write the rows as JSON here (the markdown report goes beside it, .md)"
    )
    return p


def _qubit_list(text: str) -> list[int]:
    try:
        qubits = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        qubits = []
    if not qubits or any(q < 1 or q > 12 for q in qubits):
        raise PQFLInputError(f"--qubits: expected comma-separated integers between 1 and 12, got {text!r}")
    return qubits


def _bench(args) -> int:
    if args.bench == "e2e":
        return _bench_e2e(args)
    from pqfl.quantum.speed import run_benchmark

    qubits = _qubit_list(args.qubits)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    result = run_benchmark(qubits, timeout=args.timeout, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(result["table"])
    for key in ("speedup_vs_per_sample_q8", "speedup_vs_broadcast_autograd_q8", "noisy_speedup_vs_default_mixed_q8"):
        if result.get(key):
            print(f"{key}: {result[key]:.1f}x")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


def _bench_e2e(args) -> int:
    from benchmarks.e2e import run_e2e

    if args.config:
        load_run_config(args.config)  # a bad config fails here, in one line, not in the first child run
    if args.json_out:
        _check_output("--json", Path(args.json_out))
    if args.odds_dir:
        _check_odds_dir(args.odds_dir)
    result = run_e2e(
        args.config,
        args.runs,
        progress=lambda line: print(f"[pqfl] {line}", file=sys.stderr, flush=True),
        odds_dir=args.odds_dir,
    )
    print(result["table"])
    for name, case in result["cases"].items():
        what = {"full": "across runs and cold/warm", "library": "to pqfl run's, in every run"}.get(name, "across runs")
        print(f"{name}: metrics identical {what}: {case['metrics_identical']}")
    if "odds_case" in result:
        print(f"ODDS case: rows identical across runs: {result['odds_case']['rows_identical']}")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


def _check_odds_dir(folder: str) -> None:
    """``--odds-dir`` must hold the file of the ODDS suite's case that ``pqfl bench e2e`` times
    (checked as ``pqfl benchmark`` checks it, before any run)."""
    import tempfile

    from benchmarks.e2e import ODDS_SUITE, first_case_suite
    from pqfl.benchmark.suite import check_suite

    if not Path(folder).is_dir():
        raise PQFLInputError(f"--odds-dir: {folder} is not a folder; pass the folder of the ODDS .mat files")
    with tempfile.TemporaryDirectory() as tmp:
        first_case_suite(ODDS_SUITE, Path(tmp) / "suite.yaml")
        try:
            check_suite(str(Path(tmp) / "suite.yaml"), folder)
        except PQFLInputError as err:
            raise PQFLInputError(f"--odds-dir {folder}: {err}") from None


def _overrides(args) -> dict:
    out = {}
    if args.methods is not None:
        from pqfl.config import clip

        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise PQFLInputError(
                f"--methods: no method given ({clip(repr(args.methods))}); list one or more of {','.join(METHODS)}"
            )
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise PQFLInputError(f"--methods: unknown method(s) {clip(unknown)}; choose from {','.join(METHODS)}")
        out["federation.methods"] = methods
    if args.rounds is not None:
        out["federation.rounds"] = args.rounds
    if args.seed is not None:
        out["federation.seed"] = args.seed
    if args.dataset:
        out["dataset.source"] = args.dataset
    if args.dask_address:
        out["runner.kind"] = "dask"
        out["runner.address"] = args.dask_address
    return out


def format_table(rows: dict[str, dict]) -> str:
    """The methods' results; with attackers, the honest clients' mean AUROC beside the mean
    over every client, and with DP the ε spent."""
    frame = pd.DataFrame.from_dict(rows, orient="index")[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
    frame.index.name = "method"
    if any("honest" in r for r in rows.values()):
        frame.insert(1, "honest AUROC", [r.get("honest", {}).get("mean_auroc", float("nan")) for r in rows.values()])
    if any("epsilon" in r for r in rows.values()):
        frame["epsilon"] = [r.get("epsilon", float("nan")) for r in rows.values()]
    return frame.to_string(float_format=lambda v: f"{v:.3f}")


def _check_output(flag: str, path: Path) -> None:
    """Refuse an output file the run could not write at its end: a folder, a path under a
    regular file, or a folder without write permission."""
    from flows.tracking import writable_folder

    if path.is_dir():
        raise PQFLInputError(f"{flag}: {path} is a folder; give a file name")
    above = path.parent.resolve()
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise PQFLInputError(f"{flag}: {path} lies under the regular file {above}; choose a path in a folder")
    if not writable_folder(above) or (path.exists() and not os.access(path, os.W_OK)):
        raise PQFLInputError(f"{flag}: {path} cannot be written (no permission); choose a writable path")


def _check_outputs(cfg, json_out: str | None) -> None:
    """Everything a run writes, checked before it starts: the MLflow store, the checkpoint
    folder and the ``--json`` file."""
    from flows.checkpoint import CHECKPOINT_ENV, checkpoint_root
    from flows.tracking import check_store, tracking_uri, writable_folder

    uri = tracking_uri(cfg)
    check_store(uri)
    root = checkpoint_root(uri)  # a store without a checkpoint folder fails here, not mid-run
    if not writable_folder(root):
        raise PQFLInputError(
            f"{CHECKPOINT_ENV}: the checkpoint folder {root} cannot be written; set {CHECKPOINT_ENV} "
            "to a writable folder or make it writable"
        )
    if json_out:
        _check_output("--json", Path(json_out))
    if cfg.runner.kind == "dask" and cfg.runner.address:
        host, _, port = cfg.runner.address.removeprefix("tcp://").rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as err:
            raise PQFLInputError(
                f"--dask-address: the Dask scheduler at {cfg.runner.address} does not answer ({err.strerror or err}); "
                "start it (`dask scheduler`) or fix the address"
            ) from None


def _run(args) -> int:
    from flows.runners import prefect_api
    from tasks.retry import with_fault_env

    if args.resume:
        from flows.checkpoint import resume_target

        changed = sorted(k.split(".")[-1] for k in _overrides(args))
        if changed:
            raise PQFLInputError(
                f"--resume: continues the run with its stored config; drop the options that change it ({', '.join(changed)})"
            )
        _, cfg = resume_target(args.resume, args.config)
    else:
        cfg = with_fault_env(load_run_config(args.config).with_overrides(_overrides(args)))
    with prefect_api() as api:  # a temporary server starts now, while the rest is imported and checked
        _check_outputs(cfg, args.json_out)
        from tasks.federated import check_methods, prepared_fleet

        prepared = time.perf_counter()
        prepared_fleet(cfg)  # fail fast on data problems, before any run starts; the methods reuse it
        prepare_s = time.perf_counter() - prepared
        check_methods(cfg)
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)

        from flows.progress import show_progress
        from flows.train import pqfl_train
        from pqfl.compile_cache import enable_persistent_cache

        enable_persistent_cache()
        started = time.perf_counter()
        print(
            f"[pqfl] {cfg.experiment_name}: {len(cfg.clients)} clients, {cfg.federation.rounds} rounds, "
            f"methods {','.join(cfg.federation.methods)}, data {cfg.dataset.source}",
            file=sys.stderr,
        )
        # per-round lines on stderr (a progress bar when it is a terminal); Dask workers get a shared Prefect API
        with show_progress(cfg), api.active():
            flow_start_unix = time.time()
            result = pqfl_train(args.config, None if args.resume else _overrides(args), resume=args.resume)
            flow_s = time.time() - flow_start_unix
    result["wall_s"] = time.perf_counter() - started
    # where this process's time went (read by `pqfl bench e2e`); the methods' train and evaluate seconds are in each method's entry
    result["timings"] = {
        "flow_start_unix": flow_start_unix,
        "flow_s": flow_s,
        "server_wait_s": api.waited_s,
        "prepare_s": prepare_s,
    }
    print(format_table(result["methods"]))
    attackers = next((r["attackers"] for r in result["methods"].values() if r.get("attackers")), None)
    if attackers:  # the same clients attack under every method (drawn from the seed)
        print(f"\nattacking clients ({cfg.federation.attack.kind}): {', '.join(attackers)}")
    print(f"\ntotal wall time {result['wall_s']:.1f} s; MLflow experiment '{result['experiment']}'")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


def _compare(args) -> int:
    from flows.compare import as_json, compare, describe

    if args.json_out:
        _check_output("--json", Path(args.json_out))
    result = compare(
        load_run_config(args.config),
        experiment=args.experiment,
        invocation=args.invocation,
        run_id=args.run,
        note=lambda line: print(f"[pqfl] {line}", file=sys.stderr),
    )
    print(describe(result))
    print()
    print(format_table(result["methods"]))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(as_json(result), indent=2))
    return 0


def _benchmark(args) -> int:
    from tasks.settings import check_run_suite

    spec, cases = check_run_suite(args.suite, args.data_dir)  # fail fast: suite, configs, data files
    _check_outputs(parse_run_config(cases[0].config), args.json_out)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    from flows.runners import prefect_api

    with prefect_api() as api:
        return _run_benchmark(args, spec, cases, api)


def _run_benchmark(args, spec, cases, api) -> int:
    from flows.benchmark import pqfl_benchmark
    from pqfl.compile_cache import enable_persistent_cache

    enable_persistent_cache()
    progress = logging.getLogger("pqfl.progress")
    progress.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[pqfl] %(message)s"))
    progress.addHandler(handler)
    progress.propagate = False
    print(f"[pqfl] benchmark {spec.name}: {len(cases)} cases, methods {','.join(spec.methods)}", file=sys.stderr)
    with api.active():
        result = pqfl_benchmark(args.suite, args.data_dir, args.json_out)
    print(result["table"])
    print(
        f"\nwall time {result['wall_s']:.1f} s; MLflow experiment '{result['experiment']}', run {result['mlflow_run_id']}"
    )
    if args.json_out:
        print(f"report: {result['report']}")
    return 0


def _ui(args) -> int:
    from flows.mlflow_ui import serve_ui

    return serve_ui(load_run_config(args.config), args.host, args.port)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _signal_name(err: BaseException) -> str:
    """SIGINT for Ctrl-C's KeyboardInterrupt; SIGTERM for ours or Prefect's TerminationSignal."""
    if isinstance(err, Terminated) or getattr(err, "signal", None) == signal.SIGTERM:
        return "SIGTERM"
    return "SIGINT"


def _failure_log(err: BaseException) -> Path:
    """Write ``err``'s traceback to a log file (the console gets one line) and return its path."""
    path = Path(tempfile.gettempdir()) / f"pqfl-failure-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text("".join(traceback.format_exception(err)))
    return path


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a run failed after it started, 2 bad input (nothing started),
    130 interrupted by SIGINT (Ctrl-C), 143 interrupted by SIGTERM. Every ending other
    than 0 is one line on stderr; a traceback goes to a log file whose path is printed."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        parser = _parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help, --version
            return done.code or 0
        if args.command is None:  # bare `pqfl`: the usage, then the one error line
            print(parser.format_usage().rstrip(), file=sys.stderr)
            raise PQFLInputError(f"no command given; choose one of {', '.join(COMMANDS)} (`pqfl -h` says what they do)")
        commands = {"run": _run, "compare": _compare, "bench": _bench, "benchmark": _benchmark, "ui": _ui}
        return commands[args.command](args)
    except PQFLInputError as err:
        print(f"pqfl: error: {err}", file=sys.stderr)
        return 2
    except PQFLRunError as err:
        print(f"pqfl: run failed: {err}", file=sys.stderr)
        return 1
    except BaseException as err:
        if isinstance(err, SystemExit):
            raise
        from flows.interrupts import interruption

        interrupt = interruption(err)
        name = _signal_name(interrupt) if interrupt is not None else None
        if name is not None:
            from flows.recorder import MethodRecorder

            if MethodRecorder.interrupted:
                run_id, held = MethodRecorder.interrupted[-1]
                print(
                    f"pqfl: interrupted by {name}: the runs are marked KILLED and {held} is checkpointed; "
                    f"resume with `pqfl run --resume {run_id}`",
                    file=sys.stderr,
                )
            else:
                print(f"pqfl: interrupted by {name}", file=sys.stderr)
            return 130 if name == "SIGINT" else 143
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        print(f"pqfl: run failed: {reason} (traceback in {_failure_log(err)})", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def entry() -> NoReturn:
    """The ``pqfl`` console script: :func:`main`, then an exit without the interpreter's
    teardown. The exit handlers still run (Prefect's and MLflow's flushes, JAX's clean-up),
    then the streams are flushed and the process ends; tearing down the imported modules
    took 1.6 s after every command and does nothing a finished command needs."""
    import atexit

    code = main()
    try:
        atexit._run_exitfuncs()  # what the interpreter's own exit runs first
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing left to say
                pass
        os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    entry()
