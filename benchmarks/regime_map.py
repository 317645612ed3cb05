"""When does federating or personalizing pay? The regime map of issue 20.

One fleet of four clients on scikit-learn's digits, the embedded default's split
(50/20/30 % train/val/test, 20 % anomalies), over a grid of regimes:

- training rows per client: 16, 32, 64, 128 or all (``partition.max_train_rows``, a
  label-stratified cap; validation and test rows are untouched);
- label skew: Dirichlet α ∈ {0.1, 1, 10};
- anomalies: ``shared`` (digits 0–4 normal at every client) or ``context`` (each client's
  two commonest digits normal, as in the default);
- hardware: ``identical`` (four noiseless 6-qubit amplitude circuits) or
  ``heterogeneous`` (the default's four profiles: encodings, qubit counts, noise, shots).

Every method trains under one budget (the training-budget rule of issue 19): the same
rounds, local epochs and batch size, so each passes over every training row equally
often, and ``federation.select: best_val``, each client keeping its best validation round.
The budget and λ were fixed before any run (no choice was made on these cells' results).
Beside the circuits: per-client and pooled logistic regression (scikit-learn), and the
linear control of ``benchmarks.linear_control`` (alone, FedAvg with fine-tuning, pooled).
Library only (no Prefect). Usage:

    .venv/bin/python -m benchmarks.regime_map [--seeds 0,1,2,3,4] [--workers 2]
        [--rows 16,32,64,128,all] [--alphas 0.1,1,10] [--anomalies shared,context]
        [--hardware identical,heterogeneous] [--methods ...] [--out benchmarks/reports/regime_map]
        [--images docs/images] [--no-mlflow] [--report-only]

Cases (cell × seed) are appended to ``OUT.csv`` as they finish, and a rerun skips the
cases already there, so an interrupted map resumes. Writes ``OUT.md`` (per cell: mean
AUROC of every method and which beat ``local`` and ``fedavg`` beyond noise, paired 95 %
intervals over seeds), the plot ``IMAGES/regime_map.png`` (mean-client AUROC against rows
per client, one panel per α × anomalies × hardware) and one MLflow run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pqfl.benchmark.statistics import paired_interval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("16", "32", "64", "128", "all")
ALPHAS = ("0.1", "1", "10")
ANOMALIES = ("shared", "context")
HARDWARE = ("identical", "heterogeneous")
# The personalized schemes of issue 20, the whole-model sharing of issue 19 (across the
# fleet, and within hardware-compatible groups), its shared encoder with its control, and
# the paper's methods.
METHODS = (
    "local",
    "fedavg",
    "pqfl",
    "centralized",
    "fedavg_ft",
    "ditto",
    "fedrep",
    "apfl",
    "fedavg_full",
    "fedavg_full_ft",
    "fedavg_full_ft@hardware",
    "feddbe",
    "feddistill",
    "fedenc",
    "local_enc",
)
CLASSICAL = ("logreg-client", "logreg-pooled", "linear-local", "linear-fedavg_ft", "linear-pooled")
BUDGET = {"rounds": 10, "local_epochs": 5, "batch_size": 16, "lr": 0.05, "lambda": 0.01}
AMPLITUDE = {"qubits": 6, "layers": 2, "entangling": "ring", "encoding": "amplitude"}
HETEROGENEOUS = [
    {"name": "clean-6q-amplitude", **AMPLITUDE},
    {"name": "noisy-6q-amplitude", **AMPLITUDE, "entangling": "all_to_all",
     "noise": {"depolarizing": 0.01, "amplitude_damping": 0.005, "readout": 0.02}},
    {"name": "noisy-4q-angle", "qubits": 4, "layers": 3, "entangling": "linear", "encoding": "angle",
     "noise": {"depolarizing": 0.005, "readout": 0.01}},
    {"name": "shots-5q-iqp", "qubits": 5, "layers": 2, "entangling": "ring", "encoding": "iqp", "shots": 1024},
]  # fmt: skip
IDENTICAL = [{"name": f"amp-6q-{i}", **AMPLITUDE} for i in range(4)]


def config(rows: str, alpha: str, anomalies: str, hardware: str, seed: int, budget: dict = BUDGET) -> dict:
    """The config of one cell and seed."""
    normal = {"normal": "global"} if anomalies == "shared" else {"normal": "context", "normal_classes_per_client": 2}
    return {
        "name": f"regime-{rows}-{alpha}-{anomalies}-{hardware}",
        "dataset": {
            "source": "sklearn:digits",
            **({"normal_classes": [0, 1, 2, 3, 4]} if anomalies == "shared" else {}),
        },
        "partition": {
            "alpha": float(alpha),
            **normal,
            "anomaly_ratio": 0.2,
            "min_anomalies": 3,
            "train": 0.5,
            "val": 0.2,
            "test": 0.3,
            "max_train_rows": None if rows == "all" else int(rows),
        },
        "federation": {**budget, "seed": seed, "min_clients": 2, "select": "best_val", "methods": ["local"]},
        "clients": IDENTICAL if hardware == "identical" else HETEROGENEOUS,
    }


COLUMNS = ["rows", "alpha", "anomalies", "hardware", "seed", "train_rows", "method", "mean_auroc", "mean_val_auroc",
           "kept_round", "seconds"]  # fmt: skip


def run_case(case: tuple) -> list[dict]:
    """The given methods on one cell and seed, and (with ``references``) the classical
    references: one row each. ``case`` is (cell, seed, methods, budget[, references])."""
    from benchmarks.linear_control import run_linear
    from pqfl.baselines import run_baselines
    from pqfl.compile_cache import enable_persistent_cache
    from pqfl.config import parse_config
    from pqfl.federated.rounds import run_federation
    from pqfl.fleet import prepare

    (rows, alpha, anomalies, hardware), seed, methods, budget, *rest = case
    references = rest[0] if rest else True
    enable_persistent_cache()
    cfg = parse_config(config(rows, alpha, anomalies, hardware, seed, budget))
    fleet = prepare(cfg)
    keys = {"rows": rows, "alpha": alpha, "anomalies": anomalies, "hardware": hardware, "seed": seed,
            "train_rows": float(np.mean([c.n_train for c in fleet.clients]))}  # fmt: skip
    out = []
    for method in methods:
        name, _, share = method.partition("@")
        if share and hardware == "identical":  # one hardware group: the same federation as without groups
            continue
        fed = cfg.federation.model_copy(update={"share": share}) if share else cfg.federation
        started = time.perf_counter()
        result = run_federation(fleet, name, fed, simulator=cfg.simulator)
        out.append({**keys, "method": method, "mean_auroc": result.summary.mean_auroc,
                    "mean_val_auroc": result.summary.mean_val_auroc,
                    "kept_round": float(np.mean(result.selected_rounds)),
                    "seconds": time.perf_counter() - started})  # fmt: skip
    if not references:
        return out
    fed = cfg.federation
    linear_budget = dict(rounds=fed.rounds, epochs=fed.local_epochs, batch=fed.batch_size, lr=fed.lr, seed=seed)
    refs = run_baselines(fleet.datas, fleet.stats, "supervised", seed, ["logreg"])
    refs += [run_linear(fleet.datas, fleet.stats, s, **linear_budget) for s in ("local", "fedavg_ft", "pooled")]
    out += [{**keys, "method": r["method"], "mean_auroc": r["mean_auroc"],
             "mean_val_auroc": r.get("mean_val_auroc", np.nan)} for r in refs]  # fmt: skip
    return out


CELL = ["alpha", "anomalies", "hardware", "rows"]


def verdicts(frame: pd.DataFrame) -> pd.DataFrame:
    """Per cell and method: the mean AUROC, and its paired difference (with interval) to
    ``local`` and to ``fedavg``; ``beats_local`` / ``beats_fedavg`` when the interval lies above 0."""
    rows = []
    for cell, part in frame.groupby(CELL, sort=False):
        wide = part.pivot(index="seed", columns="method", values="mean_auroc")
        for method in wide.columns:
            row = dict(zip(CELL, cell), method=method, auroc=wide[method].mean(), seeds=wide[method].notna().sum())
            for ref in ("local", "fedavg"):
                if method != ref and ref in wide:
                    d, lo, hi, _ = paired_interval(wide[method], wide[ref])
                    row |= {f"vs_{ref}": d, f"vs_{ref}_low": lo, f"vs_{ref}_high": hi, f"beats_{ref}": lo > 0}
            rows.append(row)
    return pd.DataFrame(rows)


def _order(methods) -> list[str]:
    known = [*METHODS, *CLASSICAL]
    return [m for m in known if m in set(methods)] + sorted(set(methods) - set(known))


def report(frame: pd.DataFrame, seconds: float | None = None, command: str = "", budget: dict = BUDGET) -> str:
    """The map as markdown: how it was made, a summary of which methods win where, and one
    table per (α, anomalies, hardware) panel."""
    v = verdicts(frame)
    seeds = sorted(frame.seed.unique())
    lines = [
        "# Regime map: when does federating or personalizing pay?",
        "",
        f"Made by `{command or 'python -m benchmarks.regime_map'}`"
        + (f" in {seconds / 60:.0f} min on 2 cores" if seconds else "")
        + f"; seeds {', '.join(map(str, seeds))}; {frame.groupby(CELL).ngroups} cells. "
        f"Budget for every method: {budget['rounds']} rounds × {budget['local_epochs']} local epochs, batch "
        f"{budget['batch_size']}, Adam lr {budget['lr']}, λ {budget['lambda']}, each client keeping its best "
        "validation round (`select: best_val`). Choices made: none on these results — the budget, λ, the grid "
        "and the methods were fixed before the first case ran; thresholds are chosen on each client's "
        "validation split, test data only scores.",
        "",
        "Figures are the mean over seeds of the mean-client test AUROC. A ✓ in `> local` / `> fedavg` means the "
        "paired 95 % interval over seeds of the method minus `local` (or `fedavg`) lies above 0; ✗ below 0.",
        "",
        "![regime map](../../docs/images/regime_map.png)",
        "",
        "## Which methods beat local and fedavg beyond noise",
        "",
        "Cells (of each panel's five row counts) where the method's interval against both lies above 0:",
        "",
    ]
    both = v[v.get("beats_local", False).fillna(False) & v.get("beats_fedavg", False).fillna(False)]
    panels = list(frame.groupby(["alpha", "anomalies", "hardware"], sort=False).groups)
    header = "| method | " + " | ".join(f"α {a}, {an}, {h}" for a, an, h in panels) + " |"
    lines += [header, "|---|" + "---|" * len(panels)]
    for m in _order(v.method.unique()):
        if m in ("local", "fedavg"):
            continue
        cells = []
        for a, an, h in panels:
            won = both[(both.method == m) & (both.alpha == a) & (both.anomalies == an) & (both.hardware == h)]
            cells.append(",".join(won.rows) if len(won) else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += controls(frame)
    for (a, an, h), part in v.groupby(["alpha", "anomalies", "hardware"], sort=False):
        lines += ["", f"## α {a}, {an} anomalies, {h} hardware", ""]
        rows = [r for r in ROWS if r in set(part.rows)]
        train = frame[(frame.alpha == a) & (frame.anomalies == an) & (frame.hardware == h)]
        mean_rows = train.groupby("rows").train_rows.mean()
        lines.append("| method | " + " | ".join(f"{r} ({mean_rows[r]:.0f})" for r in rows) + " |")
        lines.append("|---|" + "---|" * len(rows))
        for m in _order(part.method.unique()):
            cells = []
            for r in rows:
                x = part[(part.method == m) & (part.rows == r)]
                if not len(x):
                    cells.append("")
                    continue
                x = x.iloc[0]
                mark = "".join(
                    s
                    for ref, s in (("local", "L"), ("fedavg", "F"))
                    if f"beats_{ref}" in x and isinstance(x[f"beats_{ref}"], (bool, np.bool_)) and x[f"beats_{ref}"]
                )
                worse = (
                    " ✗"
                    if m != "local" and "vs_local_high" in x and pd.notna(x["vs_local_high"]) and x["vs_local_high"] < 0
                    else ""
                )
                cells.append(f"{x.auroc:.3f}" + (f" ✓{mark}" if mark else "") + worse)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "Columns: training rows per client (the mean actually held). ✓L / ✓F: beyond noise above local / "
            "fedavg; ✗: beyond noise below local."
        )
    return "\n".join(lines) + "\n"


def controls(frame: pd.DataFrame) -> list[str]:
    """Report lines pairing each method with its control (``gap_decomposition.CONTROLS``,
    the same model with nothing shared) cell by cell: what the sharing itself adds."""
    from benchmarks.gap_decomposition import CONTROLS

    lines = []
    for method, control in CONTROLS.items():
        diffs, above, below = [], 0, 0
        for _, part in frame.groupby(CELL, sort=False):
            wide = part.pivot(index="seed", columns="method", values="mean_auroc")
            if {method, control} <= set(wide):
                d, lo, hi, _ = paired_interval(wide[method], wide[control])
                diffs.append(d)
                above, below = above + (lo > 0), below + (hi < 0)
        if diffs:
            lines.append(
                f"- `{method}` against its control `{control}` (the same model trained alone): above it beyond "
                f"noise in {above} of {len(diffs)} cells, below in {below}; mean difference {np.mean(diffs):+.3f}."
            )
    return ["", *lines] if lines else []


def plot(frame: pd.DataFrame, path: Path) -> None:
    """Mean-client AUROC against training rows per client, one panel per (α, anomalies,
    hardware), one line per method (classical references dashed)."""
    panels = list(frame.groupby(["anomalies", "hardware", "alpha"], sort=False).groups)
    anomalies = [a for a in ANOMALIES if a in set(frame.anomalies)]
    hardware = [h for h in HARDWARE if h in set(frame.hardware)]
    alphas = [a for a in ALPHAS if a in set(frame.alpha)]
    grid = [(an, h) for an in anomalies for h in hardware]
    fig, axes = plt.subplots(len(grid), len(alphas), figsize=(4.2 * len(alphas), 3.2 * len(grid)),
                             sharex=True, sharey=True, squeeze=False)  # fmt: skip
    methods = _order(frame.method.unique())
    colors = {m: plt.cm.tab20(i % 20) for i, m in enumerate(methods)}
    for an, h, a in panels:
        ax = axes[grid.index((an, h)), alphas.index(a)]
        part = frame[(frame.anomalies == an) & (frame.hardware == h) & (frame.alpha == a)]
        for m in methods:
            x = part[part.method == m].groupby("rows").agg(auroc=("mean_auroc", "mean"), n=("train_rows", "mean"))
            x = x.reindex([r for r in ROWS if r in x.index])
            if len(x):
                ax.plot(x.n, x.auroc, marker="o", ms=3, lw=1.2, color=colors[m], label=m,
                        ls="--" if m in CLASSICAL else "-")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_title(f"α {a}, {an} anomalies, {h}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("training rows per client")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean-client AUROC")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_to_mlflow(frame: pd.DataFrame, out: Path, image: Path) -> str:
    """One MLflow run (experiment ``pqfl-benchmark-regime-map``): the report, the CSV, the
    plot, and one metric per cell and method."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri)
    name = "pqfl-benchmark-regime-map"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, run_name="regime-map", tags={"pqfl.suite": "regime-map"})
    ts = int(time.time() * 1000)
    cells = frame.groupby([*CELL, "method"]).mean_auroc.mean()
    metrics = [
        Metric(f"alpha_{a}/{an}/{h}/rows_{r}/{m.replace('@', '_at_')}/mean_auroc", float(x), ts, 0)
        for (a, an, h, r, m), x in cells.items()
    ]
    for start in range(0, len(metrics), 500):
        client.log_batch(run.info.run_id, metrics=metrics[start : start + 500])
    for path in (out.with_suffix(".md"), out.with_suffix(".csv"), image):
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def pending(csv: Path, cells: list[tuple], seeds: list[int], methods=METHODS) -> list[tuple]:
    """What ``csv`` lacks, seed by seed (a map cut short has every cell on its first seeds):
    (cell, seed, the methods missing there, whether its classical references are missing).
    A method added to the map later trains alone on the cases already there."""
    have: dict[tuple, set] = {}
    if csv.exists():
        frame = pd.read_csv(csv, dtype={"rows": str, "alpha": str})
        for key, part in frame.groupby(["rows", "alpha", "anomalies", "hardware", "seed"]):
            have[key] = set(part.method)
    out = []
    for s in seeds:
        for c in cells:
            done = have.get((*c, s), set())
            # a grouped method on identical hardware is not trained (one group), so never missing there
            missing = [m for m in methods if m not in done and not ("@" in m and c[3] == "identical")]
            refs = not done & set(CLASSICAL)
            if missing or refs:
                out.append((c, s, missing, refs))
    return out


def record(csv: Path, rows: list[dict]) -> str:
    """Append one case's rows to ``csv``; a one-line summary of them."""
    csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).reindex(columns=COLUMNS).to_csv(csv, mode="a", header=not csv.exists(), index=False)
    r = rows[0]
    return (f"rows {r['rows']} α {r['alpha']} {r['anomalies']} {r['hardware']} seed {r['seed']}: "
            + ", ".join(f"{x['method']} {x['mean_auroc']:.3f}" for x in rows))  # fmt: skip


def write_outputs(
    csv: Path, out: Path, image: Path, elapsed: float | None, command: str, mlflow: bool, budget: dict = BUDGET
) -> str | None:
    """The report and the plot from ``csv``, and the MLflow run (its id) when ``mlflow``."""
    frame = pd.read_csv(csv, dtype={"rows": str, "alpha": str})
    plot(frame, image)
    out.with_suffix(".md").write_text(report(frame, elapsed, command, budget))
    return log_to_mlflow(frame, out, image) if mlflow else None


def grid(rows=ROWS, alphas=ALPHAS, anomalies=ANOMALIES, hardware=HARDWARE) -> list[tuple]:
    """The cells (rows, α, anomalies, hardware) of the chosen values; unknown values raise."""
    for values, allowed, what in ((rows, ROWS, "rows"), (alphas, ALPHAS, "alphas"),
                                  (anomalies, ANOMALIES, "anomalies"), (hardware, HARDWARE, "hardware")):  # fmt: skip
        if bad := [v for v in values if v not in allowed]:
            raise ValueError(f"{what}: unknown {bad}; choose from {', '.join(allowed)}")
    return list(product(rows, alphas, anomalies, hardware))


def check_methods(methods: list[str]) -> None:
    from pqfl.federated.strategies import STRATEGIES

    if missing := [m for m in ("local", "fedavg") if m not in methods]:
        raise ValueError(f"methods: add {', '.join(missing)}; every cell is paired against local and fedavg")
    if bad := [m for m in methods if m.partition("@")[0] not in STRATEGIES]:
        raise ValueError(f"methods: unknown {bad}; choose from {', '.join(STRATEGIES)} (name@share for groups)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--alphas", default=",".join(ALPHAS))
    ap.add_argument("--anomalies", default=",".join(ANOMALIES))
    ap.add_argument("--hardware", default=",".join(HARDWARE))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--workers", type=int, default=2, help="cases trained at once, one process each")
    ap.add_argument("--out", default="benchmarks/reports/regime_map")
    ap.add_argument("--images", default="docs/images")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report and plot from OUT.csv")
    args = ap.parse_args(argv)
    out, image = Path(args.out), Path(args.images) / "regime_map.png"
    csv = out.with_suffix(".csv")
    methods = args.methods.split(",")
    try:
        cells = grid(*(getattr(args, k).split(",") for k in ("rows", "alphas", "anomalies", "hardware")))
        check_methods(methods)
    except ValueError as err:
        raise SystemExit(f"regime_map: {err}") from None
    started = time.perf_counter()
    if not args.report_only:
        cases = pending(csv, cells, [int(s) for s in args.seeds.split(",")], methods)
        print(f"{len(cases)} cases to train", flush=True)
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            jobs = [(c, s, missing, BUDGET, refs) for c, s, missing, refs in cases]
            for i, rows in enumerate(pool.map(run_case, jobs), 1):
                print(f"[{i}/{len(cases)}] {record(csv, rows)}", flush=True)
    elapsed = None if args.report_only else time.perf_counter() - started
    command = " ".join(["python -m benchmarks.regime_map", *(sys.argv[1:] if argv is None else argv)])
    run_id = write_outputs(csv, out, image, elapsed, command, not args.no_mlflow)
    print(f"wrote {out.with_suffix('.md')}, {csv} and {image}" + (f"; MLflow run {run_id}" if run_id else ""))


if __name__ == "__main__":
    main()
