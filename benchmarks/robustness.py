"""The robustness suite (issue 23): honest clients' AUROC under attack for every aggregation
rule, AUROC against the ε of client-level DP, and membership-inference AUROC with and
without DP. Library only for the training (``pqfl.federated``); the results are written to
``benchmarks/reports/`` and logged to MLflow as one run. Usage:

    .venv/bin/python -m benchmarks.robustness [--suite benchmarks/robustness.yaml]
        [--seeds 0,1,2] [--out benchmarks/reports/robustness] [--images docs/images] [--no-mlflow]

Every case of a seed trains on the same prepared fleet; an attack or a rule changes only the
federation. The "best" robust rule per attack is chosen on the honest clients' validation
AUROC (mean over seeds), never on test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402
from scipy.stats import ttest_rel  # noqa: E402

from pqfl.benchmark.report import markdown_table  # noqa: E402
from pqfl.compile_cache import enable_persistent_cache  # noqa: E402
from pqfl.config import parse_config  # noqa: E402
from pqfl.federated.rounds import Federation  # noqa: E402
from pqfl.fleet import prepare  # noqa: E402
from pqfl.privacy.membership import membership_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrivacySweep(_Strict):
    clip: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    noise_multipliers: list[float] = Field(min_length=1)


class MembershipSettings(_Strict):
    methods: list[str] = Field(min_length=1)
    noise_multiplier: float = Field(ge=0)


class RobustnessSuite(_Strict):
    """``benchmarks/robustness.yaml``: the fleet, the grid and the sweeps."""

    name: str
    seeds: list[int] = Field(min_length=1)
    methods: list[str] = Field(min_length=1)
    base: dict[str, Any]
    fractions: list[float] = Field(min_length=1)
    attacks: list[dict[str, Any]] = Field(min_length=1)
    aggregators: dict[str, dict[str, Any]] = Field(min_length=1)
    privacy: PrivacySweep
    membership: MembershipSettings
    # Stronger variants of the attacks, at the headline fraction under every rule: whether an
    # attack that plain averaging does not survive exists, and which rule survives it.
    strengths: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _config(suite: RobustnessSuite, seed: int, **federation):
    base = suite.base
    return parse_config(
        {**base, "federation": {**base.get("federation", {}), "seed": seed, **federation}},
        origin=f"suite {suite.name}, seed {seed}, federation {federation}",
    )


def _run(fleet, method: str, cfg) -> tuple[Any, Federation]:
    federation = Federation(fleet, method, cfg.federation)
    return federation.run(), federation


def _row(result, **keys) -> dict:
    honest = [e for e in result.evaluations if e.client not in result.attackers]
    bad = [e for e in result.evaluations if e.client in result.attackers]
    return {
        **keys,
        "honest_auroc": float(np.mean([e.auroc for e in honest])),
        "honest_val_auroc": float(np.nanmean([e.val_auroc for e in honest])),
        "attackers_auroc": float(np.mean([e.auroc for e in bad])) if bad else float("nan"),
        "attackers": ",".join(result.attackers),
        "epsilon": result.state.last.epsilon,
    }


SECTIONS = ("attacks", "strength", "privacy", "membership")


def run_suite(
    suite: RobustnessSuite, seeds: list[int], log=print, sections: tuple[str, ...] = SECTIONS
) -> dict[str, pd.DataFrame]:
    """The suite's federations, as one frame per section run (``SECTIONS``)."""
    attack_rows, strength_rows, dp_rows, mia_rows = [], [], [], []
    for seed in seeds:
        base = _config(suite, seed)
        fleet = prepare(base)
        for method in suite.methods:
            for agg_name, agg in suite.aggregators.items() if "attacks" in sections else ():
                t0 = time.perf_counter()
                cfg = _config(suite, seed, aggregator=agg)
                result, _ = _run(fleet, method, cfg)
                attack_rows.append(
                    _row(result, seed=seed, method=method, aggregator=agg_name, attack="none", fraction=0.0)
                )
                for attack in suite.attacks:
                    for fraction in suite.fractions:
                        cfg = _config(suite, seed, aggregator=agg, attack={**attack, "fraction": fraction})
                        result, _ = _run(fleet, method, cfg)
                        attack_rows.append(
                            _row(
                                result,
                                seed=seed,
                                method=method,
                                aggregator=agg_name,
                                attack=attack["kind"],
                                fraction=fraction,
                            )
                        )
                log(f"seed {seed} {method} {agg_name}: {time.perf_counter() - t0:.0f} s")
            for label, attack in suite.strengths.items() if "strength" in sections else ():
                fraction = headline_fraction(suite)
                for agg_name, agg in suite.aggregators.items():
                    cfg = _config(suite, seed, aggregator=agg, attack={**attack, "fraction": fraction})
                    result, _ = _run(fleet, method, cfg)
                    strength_rows.append(
                        _row(result, seed=seed, method=method, aggregator=agg_name, attack=label, fraction=fraction)
                    )
            for sigma in suite.privacy.noise_multipliers if "privacy" in sections else ():
                dp = {"noise_multiplier": sigma, "clip": suite.privacy.clip, "delta": suite.privacy.delta}
                result, _ = _run(fleet, method, _config(suite, seed, privacy=dp))
                dp_rows.append(_row(result, seed=seed, method=method, noise_multiplier=sigma))
        for method in suite.membership.methods if "membership" in sections else ():
            # local uploads nothing, so DP of the uploads changes nothing for it: its two rows
            # must agree, which the report shows.
            dp = {"noise_multiplier": suite.membership.noise_multiplier, "clip": suite.privacy.clip}
            settings = [
                ("none", None),
                (f"sigma={suite.membership.noise_multiplier:g}", {**dp, "delta": suite.privacy.delta}),
            ]
            for label, dp in settings:
                cfg = _config(suite, seed, **({"privacy": dp} if dp else {}))
                result, federation = _run(fleet, method, cfg)
                for row in membership_report(result, cfg.federation, global_model=federation):
                    mia_rows.append({"seed": seed, "dp": label, "epsilon": result.state.last.epsilon, **row})
        log(f"seed {seed} done")
    frames = {
        "attacks": pd.DataFrame(attack_rows),
        "strength": pd.DataFrame(strength_rows),
        "privacy": pd.DataFrame(dp_rows),
        "membership": pd.DataFrame(mia_rows),
    }
    return {k: v for k, v in frames.items() if k in sections}


def _paired(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """Mean of a − b paired by seed and its 95 % t-interval (NaN with fewer than two seeds)."""
    both = pd.concat([a, b], axis=1).dropna()
    diff = both.iloc[:, 0] - both.iloc[:, 1]
    if len(both) < 2 or diff.std(ddof=1) == 0:
        return float(diff.mean()), float("nan"), float("nan")
    ci = ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).confidence_interval(0.95)
    return float(diff.mean()), float(ci.low), float(ci.high)


def verdict(attacks: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Per method and attack at ``fraction``: the honest AUROC lost under plain averaging
    against the attack-free run (paired by seed), the robust rule with the best honest
    validation AUROC under that attack, and its test AUROC's distance from attack-free."""
    free = attacks[(attacks.attack == "none") & (attacks.aggregator == "mean")].set_index(["method", "seed"])
    rows = []
    at = attacks[np.isclose(attacks.fraction, fraction)]
    for (method, attack), part in at.groupby(["method", "attack"], sort=False):
        clean = free.loc[method, "honest_auroc"]
        by_rule = part.set_index(["aggregator", "seed"])
        loss, lo, hi = _paired(clean, by_rule.loc["mean", "honest_auroc"])
        robust = part[part.aggregator != "mean"].groupby("aggregator").honest_val_auroc.mean()
        best = robust.idxmax()
        gap, glo, ghi = _paired(clean, by_rule.loc[best, "honest_auroc"])
        rows.append(
            {
                "method": method,
                "attack": attack,
                "attack-free": clean.mean(),
                "mean rule": by_rule.loc["mean", "honest_auroc"].mean(),
                "loss (mean rule)": loss,
                "loss 95% CI": f"[{lo:.3f}, {hi:.3f}]",
                "best robust rule (val)": best,
                "its AUROC": by_rule.loc[best, "honest_auroc"].mean(),
                "gap to attack-free": gap,
                "gap 95% CI": f"[{glo:.3f}, {ghi:.3f}]",
            }
        )
    return pd.DataFrame(rows)


def grid_table(attacks: pd.DataFrame, method: str) -> pd.DataFrame:
    """Honest mean AUROC (mean over seeds) of ``method``: one row per attack × fraction, one
    column per aggregation rule; the attack-free row first."""
    part = attacks[attacks.method == method]
    table = part.pivot_table(index=["attack", "fraction"], columns="aggregator", values="honest_auroc", aggfunc="mean")
    order = ["none", *[a for a in part.attack.unique() if a != "none"]]
    table = table.reindex(sorted(table.index, key=lambda k: (order.index(k[0]), k[1])))
    return table[list(dict.fromkeys(part.aggregator))].reset_index()


def plot_robustness(attacks: pd.DataFrame, path: Path) -> None:
    kinds = [a for a in attacks.attack.unique() if a != "none"]
    methods = list(attacks.method.unique())
    fig, axes = plt.subplots(len(methods), len(kinds), figsize=(3.2 * len(kinds), 3.0 * len(methods)), sharey=True)
    axes = np.atleast_2d(axes)
    for i, method in enumerate(methods):
        for j, kind in enumerate(kinds):
            ax = axes[i, j]
            for agg in attacks.aggregator.unique():
                free = attacks[(attacks.method == method) & (attacks.aggregator == agg) & (attacks.attack == "none")]
                hit = attacks[(attacks.method == method) & (attacks.aggregator == agg) & (attacks.attack == kind)]
                curve = pd.concat([free, hit]).groupby("fraction").honest_auroc.mean()
                ax.plot(curve.index * 100, curve.values, marker="o", label=agg)
            ax.set_title(f"{method}: {kind}", fontsize=10)
            ax.set_xlabel("attackers (%)")
            if j == 0:
                ax.set_ylabel("honest clients' mean AUROC")
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_privacy(privacy: pd.DataFrame, attacks: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method, part in privacy.groupby("method", sort=False):
        curve = part.groupby("epsilon").honest_auroc.mean().sort_index()
        (line,) = ax.plot(curve.index, curve.values, marker="o", label=f"{method} with DP")
        clean = attacks[(attacks.method == method) & (attacks.attack == "none") & (attacks.aggregator == "mean")]
        ax.axhline(clean.honest_auroc.mean(), color=line.get_color(), ls="--", lw=1, label=f"{method} without DP")
    ax.set_xscale("log")
    ax.set_xlabel("ε spent after the last round (δ = 1e-5)")
    ax.set_ylabel("mean AUROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def membership_table(mia: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("threshold_auroc", "shadow_auroc", "global_threshold_auroc", "global_shadow_auroc") if c in mia]
    out = mia.groupby(["method", "dp"], sort=False)[[*cols, "epsilon"]].mean().reset_index()
    spread = mia.groupby(["method", "dp"], sort=False).threshold_auroc.agg(["min", "max"]).reset_index(drop=True)
    out["threshold min..max"] = [f"{lo:.2f}..{hi:.2f}" for lo, hi in zip(spread["min"], spread["max"])]
    return out


def headline_fraction(suite: RobustnessSuite) -> float:
    """The fraction the verdict is given at: 25 % (the issue's), else the suite's largest."""
    return 0.25 if any(np.isclose(suite.fractions, 0.25)) else max(suite.fractions)


def build_report(suite: RobustnessSuite, seeds, frames, runs: list[dict], images: dict) -> str:
    """The markdown report; ``runs`` are the invocations that produced the frames (command,
    sections, seeds, wall seconds)."""
    attacks, privacy, mia = frames["attacks"], frames["privacy"], frames["membership"]
    made = [f"`{r['command']}` ({', '.join(r['sections'])}; {r['wall_s'] / 60:.1f} min)" for r in runs]
    n_fed = sum(len(frames[k]) for k in ("attacks", "strength", "privacy"))
    lines = [
        f"# Robustness suite `{suite.name}`",
        "",
        f"Made by {'; then '.join(made)}, on 2 cores. Seeds {seeds}; {n_fed} federations trained plus "
        f"{mia.groupby(['seed', 'method', 'dp']).ngroups} for membership inference. Metrics are honest clients' "
        "test AUROC at the last round (mean over clients, then over seeds); the best robust rule per attack is "
        "chosen on the honest clients' validation AUROC, one choice per method × attack on "
        f"seeds {seeds}. Intervals are paired by seed (95 %, t).",
        "",
        f"![robustness]({images['robustness']})",
        "",
    ]
    target = headline_fraction(suite)
    lines += [f"## At {target:.0%} attackers", "", markdown_table(verdict(attacks, target)), ""]
    strength = frames["strength"]
    if len(strength):
        both = pd.concat([attacks[attacks.attack == "none"], strength])
        per_rule = strength.pivot_table(
            index=["method", "attack"], columns="aggregator", values="honest_auroc", aggfunc="mean", sort=False
        )[list(suite.aggregators)].reset_index()
        lines += [
            f"## Stronger attacks at {target:.0%} attackers",
            "",
            ", ".join(f"`{k}`: {v}" for k, v in suite.strengths.items()) + ".",
            "",
            markdown_table(verdict(both, target)),
            "",
            "Honest mean AUROC per rule:",
            "",
            markdown_table(per_rule),
            "",
        ]
    for method in attacks.method.unique():
        lines += [f"## {method}: honest mean AUROC per rule", "", markdown_table(grid_table(attacks, method)), ""]
    dp = privacy.groupby(["method", "noise_multiplier"], sort=False)[["epsilon", "honest_auroc"]].mean().reset_index()
    lines += [
        "## Client-level DP",
        "",
        f"Clip {suite.privacy.clip}, δ = {suite.privacy.delta:g}, noise at the server, "
        "ε from dp-accounting's RDP accountant after the last round.",
        "",
        f"![privacy]({images['privacy']})",
        "",
        markdown_table(dp),
        "",
        "## Membership inference",
        "",
        "Attack AUROC (0.5 = no leakage) against each client's detector (members: its training rows; non-members: "
        "half its test rows) and against the shared global model with the client's head; mean over clients and seeds.",
        "",
        markdown_table(membership_table(mia)),
        "",
    ]
    return "\n".join(lines)


def log_to_mlflow(suite: RobustnessSuite, frames, report: str, out: Path, images: list[Path]) -> str:
    """One MLflow run in the experiment ``pqfl-benchmark-<suite>`` holding the report, the
    tables, the plots and one metric per (method, attack, rule, fraction) cell."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri)
    name = f"pqfl-benchmark-{suite.name}"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, run_name=f"benchmark-{suite.name}", tags={"pqfl.suite": suite.name})
    ts = int(time.time() * 1000)
    cells = frames["attacks"].groupby(["method", "attack", "aggregator", "fraction"]).honest_auroc.mean()
    metrics = [
        Metric(f"{m}/{a}/{g}/{int(round(f * 100))}pct/honest_auroc", float(v), ts, 0)
        for (m, a, g, f), v in cells.items()
    ]
    if len(frames["strength"]):
        strong = frames["strength"].groupby(["method", "attack", "aggregator"]).honest_auroc.mean()
        metrics += [
            Metric(re.sub(r"[^\w\-./ ]", "_", f"{m}/strength/{a}/{g}/honest_auroc"), float(v), ts, 0)
            for (m, a, g), v in strong.items()
        ]
    for (m, sigma), part in frames["privacy"].groupby(["method", "noise_multiplier"]):
        metrics += [
            Metric(f"{m}/dp/sigma_{sigma:g}/honest_auroc", float(part.honest_auroc.mean()), ts, 0),
            Metric(f"{m}/dp/sigma_{sigma:g}/epsilon", float(part.epsilon.mean()), ts, 0),
        ]
    for start in range(0, len(metrics), 500):
        client.log_batch(run.info.run_id, metrics=metrics[start : start + 500])
    for path in [out.with_suffix(".md"), *(out.parent / f"{out.name}_{k}.csv" for k in frames), *images]:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _read(path: Path) -> pd.DataFrame:
    """An earlier run's section (an empty section was written as an empty file)."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="benchmarks/robustness.yaml")
    ap.add_argument("--seeds", default=None, help="comma-separated; default: the suite's")
    ap.add_argument("--out", default="benchmarks/reports/robustness")
    ap.add_argument("--images", default="docs/images")
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}; the others are read from OUT's CSVs of an earlier run",
    )
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args(argv)
    suite = RobustnessSuite.model_validate(yaml.safe_load(Path(args.suite).read_text()))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else suite.seeds
    sections = tuple(s for s in args.sections.split(",") if s)
    if unknown := [s for s in sections if s not in SECTIONS]:
        raise SystemExit(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    out = Path(args.out)
    csv = {key: out.parent / f"{out.name}_{key}.csv" for key in SECTIONS}
    earlier = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    reused = [k for k in SECTIONS if k not in sections]
    if missing := [k for k in reused if not csv[k].exists()]:
        raise SystemExit(f"--sections: no earlier results for {missing} ({csv[missing[0]]}); run those sections too")
    if reused and earlier.get("seeds") != seeds:
        raise SystemExit(f"--sections: the earlier results are for seeds {earlier.get('seeds')}, not {seeds}")
    enable_persistent_cache()
    started = time.perf_counter()
    frames = run_suite(suite, seeds, log=lambda line: print(f"[robustness] {line}", flush=True), sections=sections)
    wall_s = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    for key, frame in frames.items():
        frame.to_csv(csv[key], index=False)
    frames |= {k: _read(csv[k]) for k in reused}
    frames = {k: (f.fillna({"attackers": ""}) if "attackers" in f else f) for k, f in frames.items()}
    images_dir = Path(args.images)
    images_dir.mkdir(parents=True, exist_ok=True)
    paths = {"robustness": images_dir / f"{suite.name}.png", "privacy": images_dir / f"{suite.name}-privacy.png"}
    plot_robustness(frames["attacks"], paths["robustness"])
    plot_privacy(frames["privacy"], frames["attacks"], paths["privacy"])
    rel = {k: os.path.relpath(p.resolve(), out.parent.resolve()) for k, p in paths.items()}
    command = "python -m benchmarks.robustness " + " ".join(argv if argv is not None else sys.argv[1:])
    runs = [r for r in earlier.get("runs", []) if set(r["sections"]) & set(reused)] if reused else []
    runs.append({"command": command.strip(), "sections": list(sections), "seeds": seeds, "wall_s": wall_s})
    report = build_report(suite, seeds, frames, runs, rel)
    out.with_suffix(".md").write_text(report)
    summary = {
        "runs": runs,
        "seeds": seeds,
        "verdict": verdict(frames["attacks"], headline_fraction(suite)).to_dict("records"),
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str))
    if not args.no_mlflow:
        run_id = log_to_mlflow(suite, frames, report, out, list(paths.values()))
        print(f"[robustness] MLflow run {run_id}")
    print(report)


if __name__ == "__main__":
    main()
