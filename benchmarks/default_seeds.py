"""The embedded default over many seeds: every method it lists, paired against ``local``
and ``fedavg`` (the README's table is one seed of this).

The seed changes the partition, the initial circuits and heads and every minibatch; the
rest of the config is the embedded default, unchanged. Library only (no Prefect). Usage:

    .venv/bin/python -m benchmarks.default_seeds [--seeds 0,...,9] [--out benchmarks/reports/default_seeds]

Writes ``OUT.csv`` (one row per method and seed, with the per-client logistic regression
as the classical reference) and ``OUT.md`` (mean ± sd, paired 95 % intervals against
``local`` and ``fedavg``, and on how many seeds each method beat ``local``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.gap_decomposition import CONTROLS
from benchmarks.regime_map import verdicts
from pqfl.baselines import run_baselines
from pqfl.benchmark.statistics import paired_interval
from pqfl.compile_cache import enable_persistent_cache
from pqfl.config import load_config
from pqfl.federated.rounds import run_federation
from pqfl.fleet import prepare


def run(seeds: list[int], done: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per method and seed; with ``done`` (an earlier run's rows, kept first), only
    the (method, seed) rows it lacks are trained, and the reference only for a new seed."""
    rows = [] if done is None else done.to_dict("records")
    have = set() if done is None else set(zip(done.method, done.seed))
    for seed in seeds:
        cfg = load_config().with_overrides({"federation.seed": seed})
        todo = [m for m in cfg.federation.methods if (m, seed) not in have]
        reference = not any(s == seed for _, s in have)
        if not todo and not reference:
            continue
        fleet = prepare(cfg)
        for method in todo:
            started = time.perf_counter()
            result = run_federation(fleet, method, cfg.federation, simulator=cfg.simulator)
            rows.append({"seed": seed, "method": method, "mean_auroc": result.summary.mean_auroc,
                         "worst_auroc": result.summary.worst_auroc,
                         "kept_round": float(np.mean(result.selected_rounds)),
                         "seconds": time.perf_counter() - started})  # fmt: skip
        for r in (
            run_baselines(fleet.datas, fleet.stats, cfg.federation.objective, seed, ["logreg"]) if reference else []
        ):
            rows.append({"seed": seed, "method": r["method"], "mean_auroc": r["mean_auroc"],
                         "worst_auroc": r["worst_auroc"]})  # fmt: skip
        print(f"seed {seed}: " + ", ".join(f"{r['method']} {r['mean_auroc']:.3f}" for r in rows if r["seed"] == seed),
              flush=True)  # fmt: skip
    return pd.DataFrame(rows)


def report(frame: pd.DataFrame, seconds: float | None = None) -> str:
    cells = frame.assign(alpha="0.5", anomalies="context", hardware="heterogeneous", rows="32")
    v = verdicts(cells).set_index("method")
    wide = frame.pivot(index="seed", columns="method", values="mean_auroc")
    worst = frame.groupby("method", sort=False).worst_auroc.mean()
    seeds = sorted(frame.seed.unique())
    lines = [
        f"Seeds {', '.join(map(str, seeds))}" + (f"; {seconds / 60:.1f} min on 2 cores" if seconds else "") + ".",
        "",
        "| method | mean AUROC (± sd) | worst client | − local [95 % CI] | − fedavg [95 % CI] | seeds above local |",
        "|---|---|---|---|---|---|",
    ]

    def interval(row, ref):
        if f"vs_{ref}" not in row or pd.isna(row[f"vs_{ref}"]):
            return ""
        mark = " ✓" if row[f"vs_{ref}_low"] > 0 else (" ✗" if row[f"vs_{ref}_high"] < 0 else "")
        return f"{row[f'vs_{ref}']:+.3f} [{row[f'vs_{ref}_low']:+.3f}, {row[f'vs_{ref}_high']:+.3f}]{mark}"

    methods = list(frame.method.unique())
    classical = [m for m in methods if m.startswith("logreg")]  # the references after the circuits
    for method in [*(m for m in methods if m not in classical), *classical]:
        row, x = v.loc[method], wide[method]
        above = "" if method == "local" else f"{int((x > wide['local']).sum())}/{x.notna().sum()}"
        lines.append(
            f"| {method} | {x.mean():.3f} ± {x.std(ddof=1):.3f} | {worst[method]:.3f} | "
            f"{interval(row, 'local')} | {interval(row, 'fedavg')} | {above} |"
        )
    for method, control in CONTROLS.items():  # what the sharing itself adds
        if {method, control} <= set(wide):
            d, lo, hi, _ = paired_interval(wide[method], wide[control])
            lines += ["", f"`{method}` − its control `{control}` (the same model trained alone): "
                          f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=",".join(map(str, range(10))))
    ap.add_argument("--out", default="benchmarks/reports/default_seeds")
    ap.add_argument("--report-only", action="store_true", help="rewrite OUT.md from OUT.csv")
    ap.add_argument("--add", action="store_true", help="keep OUT.csv's rows and train only the missing ones")
    args = ap.parse_args(argv)
    out = Path(args.out)
    started, seconds = time.perf_counter(), None
    if args.report_only:
        frame = pd.read_csv(out.with_suffix(".csv"))
    else:
        enable_persistent_cache()
        csv = out.with_suffix(".csv")
        frame = run([int(s) for s in args.seeds.split(",")], pd.read_csv(csv) if args.add and csv.exists() else None)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out.with_suffix(".csv"), index=False)
        seconds = None if args.add else time.perf_counter() - started  # an addition's time is not the table's
    text = report(frame, seconds)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
