"""Which kind of heterogeneity makes the shared θ useless: a ladder of fleets from identical
circuits to today's heterogeneous one, on a data-scarce fleet whose clients share their
normal classes (issue 19).

Every rung has the same 8 clients' rows (same partition, same seeds); only the circuits
change. Each rung trains ``local``, ``fedavg``, ``pqfl`` and ``centralized`` under one
budget (same rounds, local epochs and batch size, so every method passes over each
training row equally often) with ``federation.select: best_val`` (each client keeps its
best validation round; test data never chooses), and the classical logistic regression
per client and pooled as the control. Library only (no Prefect or MLflow). Usage:

    .venv/bin/python -m benchmarks.gap_decomposition [--seeds 0,1,2,3,4] [--rounds 20]
        [--epochs 10] [--rungs identical,encodings,...] [--out benchmarks/reports/gap_decomposition]
        [--methods local,fedavg,pqfl,centralized,fedavg_full,fedavg_full_ft@encoding] [--no-diagnostics]

A method written ``name@share`` runs with ``federation.share: share`` (fleet, encoding or
hardware) instead of the run's ``--share``. ``local``, ``fedavg`` and ``centralized`` must
be among the methods: the table is paired against them.

Writes ``OUT.csv`` (one row per rung × method × seed) and ``OUT.md`` (the table with paired
95 % intervals against ``local`` and ``fedavg``, and the fraction of the local → centralized
gap each method closes).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.linear_control import SCHEMES, run_linear
from pqfl.baselines import run_baselines
from pqfl.benchmark.statistics import paired_interval
from pqfl.compile_cache import enable_persistent_cache
from pqfl.config import parse_config
from pqfl.federated.client import evaluate_members, refit_head
from pqfl.federated.rounds import Federation, run_federation
from pqfl.fleet import prepare
from pqfl.results import RoundSummary

METHODS = ("local", "fedavg", "pqfl", "centralized")
# A diagnostic beside them: the kept models with each client's head refitted (logistic
# regression on the training rows' circuit outputs) to the θ it is evaluated with. FedAvg
# evaluates the averaged block with a head trained on the client's own pre-average block.
REFIT = ("local", "fedavg")
# A second diagnostic: the same methods started with one head for every client (client
# 0's initial head) where all heads have one shape. Every client's head is drawn from its
# own seed stream, so in round 1 clients whose heads point opposite ways push the shared θ
# opposite ways, and the average can cancel.
SAME_INIT = ("fedavg", "pqfl")
# A method and its control: the same model trained with nothing shared. The difference,
# paired by seed, is what the sharing itself gives.
CONTROLS = {"fedenc": "local_enc"}
NOISE = {"depolarizing": 0.01, "amplitude_damping": 0.005, "readout": 0.02}


def _clients(kinds: list[dict]) -> list[dict]:
    """8 clients: the 4 kinds twice, named by position."""
    return [{"name": f"c{i}-{k['encoding']}-{k['qubits']}q", **k} for i, k in enumerate(kinds * 2)]


# From identical circuits to today's fleet, one kind of heterogeneity added per rung.
SAME = {"qubits": 6, "layers": 2, "entangling": "ring"}
RUNGS = {
    "identical": _clients([{**SAME, "encoding": "amplitude"}] * 4),
    "encodings": _clients([{**SAME, "encoding": e} for e in ("amplitude", "amplitude", "angle", "iqp")]),
    "qubits": _clients(
        [
            {**SAME, "encoding": "amplitude"},
            {**SAME, "encoding": "amplitude"},
            {**SAME, "qubits": 4, "layers": 3, "encoding": "angle"},
            {**SAME, "qubits": 5, "encoding": "iqp"},
        ]
    ),
    "noise": _clients(
        [
            {**SAME, "encoding": "amplitude"},
            {**SAME, "encoding": "amplitude", "noise": NOISE},
            {**SAME, "qubits": 4, "layers": 3, "encoding": "angle", "noise": {"depolarizing": 0.005, "readout": 0.01}},
            {**SAME, "qubits": 5, "encoding": "iqp", "shots": 1024},
        ]
    ),
    "today": _clients(
        [
            {**SAME, "encoding": "amplitude"},
            {**SAME, "entangling": "all_to_all", "encoding": "amplitude", "noise": NOISE},
            {
                "qubits": 4,
                "layers": 3,
                "entangling": "linear",
                "encoding": "angle",
                "noise": {"depolarizing": 0.005, "readout": 0.01},
            },
            {**SAME, "qubits": 5, "encoding": "iqp", "shots": 1024},
        ]
    ),  # fmt: skip
}


def config(
    rung: str,
    seed: int,
    rounds: int,
    epochs: int,
    batch: int,
    lam: float,
    share: str = "fleet",
    odds: str | None = None,
) -> dict:
    """The data-scarce shared-normal fleet of issue 19: digits 0–4 normal at every client,
    Dirichlet(1) over classes, 20 % of a client's rows for training. With ``odds`` (the path
    of an ODDS .mat file) the same split of that dataset, whose normal rows are normal at
    every client and whose anomalies keep their own share."""
    split = {"alpha": 1.0, "min_anomalies": 4, "train": 0.2, "val": 0.3, "test": 0.5}
    if odds:
        data, partition = {"source": f"odds:{odds}"}, split
    else:
        data = {"source": "sklearn:digits", "normal_classes": [0, 1, 2, 3, 4]}
        partition = {**split, "normal": "global", "anomaly_ratio": 0.2}
    return {
        "name": f"gap-{rung}",
        "dataset": data,
        "partition": partition,
        "federation": {
            "methods": list(METHODS),
            "rounds": rounds,
            "local_epochs": epochs,
            "batch_size": batch,
            "lr": 0.05,
            "lambda": lam,
            "seed": seed,
            "min_clients": 2,
            "select": "best_val",
            "share": share,
        },
        "clients": RUNGS[rung],
    }


def run(
    rungs,
    seeds,
    rounds,
    epochs,
    batch,
    lam,
    share: str = "fleet",
    methods=METHODS,
    diagnostics: bool = True,
    odds: str | None = None,
    done: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per rung × method × seed; with ``done`` (an earlier run's rows), only the
    (rung, method, seed) and classical rows it lacks are trained, and its rows come first."""
    rows = [] if done is None else done.to_dict("records")
    have = set() if done is None else set(zip(done.rung, done.method, done.seed))
    for rung in rungs:
        for seed in seeds:
            todo = [m for m in methods if (rung, m, seed) not in have]
            classical = rung == rungs[0] and not any(r == "classical" and s == seed for r, _, s in have)
            if not todo and not classical:
                continue
            cfg = parse_config(config(rung, seed, rounds, epochs, batch, lam, share, odds))
            fleet = prepare(cfg)
            train_rows = [len(c.y_train) for c in fleet.clients]
            for method in todo:
                name, _, shared = method.partition("@")
                fed = cfg.federation.model_copy(update={"share": shared}) if shared else cfg.federation
                started = time.perf_counter()
                result = run_federation(fleet, name, fed, simulator=cfg.simulator)
                rows.append(
                    {
                        "rung": rung,
                        "method": method,
                        "seed": seed,
                        "mean_auroc": result.summary.mean_auroc,
                        "mean_val_auroc": result.summary.mean_val_auroc,
                        "last_round_auroc": result.history[-1].mean_auroc,
                        "mean_selected_round": float(np.mean(result.selected_rounds)),
                        "train_rows": float(np.mean(train_rows)),
                        "seconds": time.perf_counter() - started,
                    }
                )
                print(f"{rung:10s} {method:12s} seed {seed}: {rows[-1]['mean_auroc']:.3f} "
                      f"(rounds kept {rows[-1]['mean_selected_round']:.1f}, {rows[-1]['seconds']:.1f} s)", flush=True)  # fmt: skip
                if diagnostics and method in REFIT:
                    summary = refitted(result, cfg)
                    rows.append({**rows[-1], "method": f"{method}+refit", "mean_auroc": summary.mean_auroc,
                                 "mean_val_auroc": summary.mean_val_auroc, "last_round_auroc": float("nan")})  # fmt: skip
            for method in SAME_INIT if diagnostics and done is None else ():
                federation = Federation(fleet, method, cfg.federation, simulator=cfg.simulator)
                start = federation.initial_state()
                if len({st.w.shape for st in start.states}) > 1:
                    continue
                head = start.states[0]
                start = replace(start, states=[replace(st, w=head.w.copy(), b=head.b) for st in start.states])
                started = time.perf_counter()
                kept = federation.run(resume=start)
                rows.append({**rows[-1], "method": f"{method}+same-init", "mean_auroc": kept.summary.mean_auroc,
                             "mean_val_auroc": kept.summary.mean_val_auroc,
                             "last_round_auroc": kept.history[-1].mean_auroc,
                             "mean_selected_round": float(np.mean(kept.selected_rounds)),
                             "seconds": time.perf_counter() - started})  # fmt: skip
            if classical:  # the classical control: the rows are the same on every rung
                fed = cfg.federation
                budget = dict(rounds=fed.rounds, epochs=fed.local_epochs, batch=fed.batch_size, lr=fed.lr, seed=seed)
                linear = [run_linear(fleet.datas, fleet.stats, s, **budget) for s in SCHEMES]
                for r in [*run_baselines(fleet.datas, fleet.stats, "supervised", seed, ["logreg"]), *linear]:
                    rows.append({"rung": "classical", "method": r["method"], "seed": seed,
                                 "mean_auroc": r["mean_auroc"], "train_rows": float(np.mean(train_rows))})  # fmt: skip
    return pd.DataFrame(rows)


def refitted(result, cfg) -> RoundSummary:
    """The result's kept models, each client's head refitted to the θ it is evaluated with
    (training rows only; the threshold is still chosen on validation)."""
    fed, evaluations = cfg.federation, []
    for setup, members in zip(result.clients, result.members):
        fixed = [
            (refit_head(setup, replace(st, theta=theta), simulator=cfg.simulator, seed=fed.seed, round_index=0), theta)
            for st, theta in members
        ]
        evaluations.append(evaluate_members(setup, fixed, fed=fed, simulator=cfg.simulator, round_index=fed.rounds))
    return RoundSummary.of(fed.rounds, evaluations)


def _closed(gain: pd.Series, gap: pd.Series, resamples: int = 2000) -> str:
    """The fraction of the local → centralized gap a method closes: its mean gain over
    local divided by the mean gap (over seeds), with a 95 % bootstrap interval over seeds."""
    both = pd.concat([gain, gap], axis=1).dropna().to_numpy()
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(both), size=(resamples, len(both)))
    ratios = both[picks, 0].mean(axis=1) / both[picks, 1].mean(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return f"{both[:, 0].mean() / both[:, 1].mean():+.2f} [{low:+.2f}, {high:+.2f}]"


def _paired(wide: pd.DataFrame, a: str, b: str) -> str:
    diff, low, high, _ = paired_interval(wide[a], wide[b])
    if not low < high:  # one seed, or a constant difference
        return f"{diff:+.3f}"
    mark = " ✓" if low > 0 else (" ✗" if high < 0 else "")
    return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]{mark}"


def report(frame: pd.DataFrame) -> str:
    lines = [
        "| rung | method | mean AUROC (± sd) | − local [95 % CI] | − fedavg [95 % CI] | gap closed [95 % CI] | round kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for rung, part in frame[frame.rung != "classical"].groupby("rung", sort=False):
        wide = part.pivot(index="seed", columns="method", values="mean_auroc")
        gap = wide["centralized"] - wide["local"]
        variants = (*METHODS, *(f"{r}+refit" for r in REFIT), *(f"{m}+same-init" for m in SAME_INIT))
        for method in [*(m for m in variants if m in wide), *(m for m in wide if m not in variants)]:
            x = wide[method]
            closed = "" if method in ("local", "centralized") else _closed(x - wide["local"], gap)
            kept = part[part.method == method]["mean_selected_round"].mean()
            lines.append(
                f"| {rung} | {method} | {x.mean():.3f} ± {x.std(ddof=1):.3f} | "
                f"{_paired(wide, method, 'local') if method != 'local' else ''} | "
                f"{_paired(wide, method, 'fedavg') if method != 'fedavg' else ''} | "
                f"{closed} | {kept:.1f} |"
            )
    pairs = []
    for rung, part in frame[frame.rung != "classical"].groupby("rung", sort=False):
        wide = part.pivot(index="seed", columns="method", values="mean_auroc")
        pairs += [f"| {rung} | {m} − {c} | {_paired(wide, m, c)} |" for m, c in CONTROLS.items() if {m, c} <= set(wide)]
    classical = frame[frame.rung == "classical"]
    if len(classical):
        wide = classical.pivot(index="seed", columns="method", values="mean_auroc")
        for method in wide.columns:
            lines.append(
                f"| classical | {method} | {wide[method].mean():.3f} ± {wide[method].std(ddof=1):.3f} | | | | |"
            )
    if pairs:  # what sharing adds over the same model trained alone
        lines += ["", "| rung | method − its control | paired difference [95 % CI] |", "|---|---|---|", *pairs]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lambda", dest="lam", type=float, default=0.01)
    ap.add_argument("--rungs", default=",".join(RUNGS))
    ap.add_argument("--share", default="fleet", help="federation.share: fleet, encoding or hardware")
    ap.add_argument("--methods", default=",".join(METHODS), help="methods, name or name@share")
    ap.add_argument("--no-diagnostics", action="store_true", help="skip the refitted-head and same-init variants")
    ap.add_argument("--odds", help="an ODDS .mat file to use instead of digits (its normal rows normal everywhere)")
    ap.add_argument("--out", default="benchmarks/reports/gap_decomposition")
    ap.add_argument("--report-only", action="store_true", help="rewrite OUT.md from OUT.csv without training")
    ap.add_argument("--add", action="store_true", help="keep OUT.csv's rows and train only the missing ones")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        table = report(pd.read_csv(out.with_suffix(".csv")))
        out.with_suffix(".md").write_text(table + "\n")
        print(table)
        return
    enable_persistent_cache()
    rungs = args.rungs.split(",")
    unknown = [r for r in rungs if r not in RUNGS]
    if unknown:
        raise SystemExit(f"--rungs: unknown {unknown}; choose from {', '.join(RUNGS)}")
    methods = args.methods.split(",")
    done = pd.read_csv(out.with_suffix(".csv")) if args.add and out.with_suffix(".csv").exists() else None
    if missing := [
        m for m in ("local", "fedavg", "centralized") if m not in {*methods, *([] if done is None else done.method)}
    ]:
        raise SystemExit(
            f"--methods: add {', '.join(missing)}; the table is paired against local, fedavg and centralized"
        )
    seeds = [int(s) for s in args.seeds.split(",")]
    frame = run(
        rungs,
        seeds,
        args.rounds,
        args.epochs,
        args.batch,
        args.lam,
        args.share,
        methods,
        not args.no_diagnostics,
        args.odds,
        done,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    table = report(frame)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
