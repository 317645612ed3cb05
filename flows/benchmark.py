"""The benchmark flow ``pqfl-benchmark`` (nightly deployment ``pqfl-nightly-benchmark``).

A suite (YAML, see ``Suite``) names datasets, objectives, quantum methods and seeds. For
every dataset × objective × seed (× sweep value) a ``pqfl-benchmark-case`` subflow runs
each quantum method through the training flow's ``pqfl-method`` subflow and the
scikit-learn references (``pqfl.baselines``) on the same client splits. The flow then
tabulates mean ± std over seeds, PQFL's relative change and its per-seed paired difference
(with a paired-t interval) against every other method,
draws the plots, writes a markdown report and logs it all to one MLflow parent run of
the benchmark's experiment; the method runs are nested under it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator  # noqa: E402
from scipy.stats import rankdata, ttest_rel  # noqa: E402
from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay  # noqa: E402

from flows.tracking import PARENT_TAG, Tracker  # noqa: E402
from flows.train import task_runner_for, train_method  # noqa: E402
from pqfl.baselines import DETECTORS, detectors_for, run_baselines  # noqa: E402
from pqfl.config import METHODS, Config, parse_config  # noqa: E402
from pqfl.data.sources import load_source  # noqa: E402
from pqfl.errors import PQFLInputError  # noqa: E402
from pqfl.experiment import load_and_partition, prepare  # noqa: E402

log = logging.getLogger("pqfl.progress")

Objective = Literal["supervised", "one_class"]
METRICS = ("mean_auroc", "mean_aupr", "mean_false_error", "mean_missing_error", "worst_auroc")
JSON_KEYS = ("dataset", "method", "objective", "mean_auroc", "mean_auroc_std", "mean_aupr", "mean_false_error",
             "mean_missing_error", "worst_auroc")
PROPOSED = "pqfl"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetEntry(_Strict):
    """One dataset (or scenario) of a suite."""

    name: str = Field(min_length=1)
    # A source string (pqfl.data.sources); a relative path is taken relative to --data-dir.
    source: str
    # Dotted config overrides for this entry, e.g. {"dataset.max_samples": 1500}. A path
    # with ``*`` for the client index (clients.*.noise.depolarizing) applies to every client.
    overrides: dict[str, Any] = Field(default_factory=dict)
    # Overrides for one objective of this entry only (after the suite's objective_overrides),
    # e.g. settings chosen on validation for this dataset's one_class runs.
    objective_overrides: dict[Objective, dict[str, Any]] = Field(default_factory=dict)
    # Repeat the base fleet this many times (names get a -rN suffix): 5 profiles × 10 = 50 clients.
    replicate_clients: int = Field(default=1, ge=1)
    seeds: list[int] | None = Field(default=None, min_length=1)  # default: the suite's seeds
    pyod_name: str | None = None  # row of the PyOD reference table (default: name)


class Sweep(_Strict):
    """One parameter varied over values, e.g. the noise level of every client."""

    name: str = Field(min_length=1)
    values: list[float] = Field(min_length=1)
    paths: list[str] = Field(min_length=1)  # dotted config paths set to each value (``*`` = every client)


class Suite(_Strict):
    """A benchmark suite: datasets × objectives × methods × seeds on one base config."""

    name: str = Field(min_length=1)
    description: str = ""
    experiment: str | None = None  # MLflow experiment (default: pqfl-benchmark-NAME)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    objectives: list[Objective] = Field(default_factory=lambda: ["supervised"], min_length=1)
    methods: list[Literal["local", "fedavg", "fedprox", "pqfl", "centralized"]] = Field(
        default_factory=lambda: ["pqfl", "fedavg", "local"], min_length=1
    )
    baselines: list[str] | None = None  # scikit-learn references (default: all of pqfl.baselines.DETECTORS)
    base: dict[str, Any]  # a pqfl config every case starts from (dataset.source comes from the entry)
    objective_overrides: dict[Objective, dict[str, Any]] = Field(default_factory=dict)
    datasets: list[DatasetEntry] = Field(min_length=1)
    sweep: Sweep | None = None
    # CSV of PyOD's published ROC-AUC (rows = datasets, a column per detector); relative to --data-dir.
    pyod_reference: str | None = None

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, v):
        if v is not None and (unknown := [b for b in v if b not in DETECTORS]):
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(DETECTORS)}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> "Suite":
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"datasets: names repeat ({sorted({n for n in names if names.count(n) > 1})}); name each entry once")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods: a method is listed twice; list each once")
        return self

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"pqfl-benchmark-{self.name}"


class Case(_Strict):
    """One cell of the suite: a dataset (at one sweep value) × objective × seed."""

    dataset: str
    entry: str
    objective: Objective
    seed: int
    sweep_value: float | None = None
    config: dict[str, Any]


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; bad input raises PQFLInputError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise PQFLInputError(f"--suite: file {path} not found; pass a suite YAML such as benchmarks/suites/odds.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PQFLInputError(f"{path}:{where}: YAML syntax error ({getattr(err, 'problem', err)}); fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise PQFLInputError(f"{path}: expected a YAML mapping with name, base and datasets")
    try:
        return Suite.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            msg = "required field is missing; add it to the suite"
        elif first["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling (flows/benchmark.py: Suite)"
        raise PQFLInputError(f"{path}: {loc + ': ' if loc else ''}{msg}") from None


def resolve_source(source: str, data_dir: str | Path | None) -> str:
    """Put a relative path of a file-based source under ``data_dir``."""
    scheme, sep, rest = source.partition(":")
    if not sep or scheme == "sklearn" or data_dir is None:
        return source
    path, hash_, frag = rest.partition("#")
    if Path(path).is_absolute():
        return source
    return f"{scheme}:{Path(data_dir) / path}{hash_}{frag}"


def _expand(overrides: dict[str, Any], n_clients: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if ".*." in f".{key}.":
            for i in range(n_clients):
                out[key.replace("*", str(i), 1)] = value
        else:
            out[key] = value
    return out


def _case_config(suite: Suite, entry: DatasetEntry, objective: str, seed: int, sweep_value, data_dir) -> Config:
    base = dict(suite.base)
    base["dataset"] = {**base.get("dataset", {}), "source": resolve_source(entry.source, data_dir)}
    if entry.replicate_clients > 1:
        base["clients"] = [
            {**c, "name": f"{c['name']}-r{r}"} for r in range(entry.replicate_clients) for c in base.get("clients", [])
        ]
    cfg = parse_config(base, origin=f"suite {suite.name}, dataset {entry.name}")
    overrides = {
        # A benchmark compares metrics: no registered detector per client per case, unless the suite asks.
        "tracking.log_models": bool(base.get("tracking", {}).get("log_models", False)),
        **entry.overrides,
        **suite.objective_overrides.get(objective, {}),
        **entry.objective_overrides.get(objective, {}),
        "federation.objective": objective,
        "federation.seed": seed,
        "federation.methods": list(suite.methods),
        "name": f"{suite.name}-{entry.name}",
        "tracking.experiment": suite.experiment_name,
    }
    if suite.sweep is not None:
        overrides.update({p: sweep_value for p in suite.sweep.paths})
    plain = {k: v for k, v in overrides.items() if "*" not in k}
    cfg = cfg.with_overrides(plain)
    return cfg.with_overrides(_expand({k: v for k, v in overrides.items() if "*" in k}, len(cfg.clients)))


def expand_cases(suite: Suite, data_dir: str | Path | None) -> list[Case]:
    """Every case of the suite, each with its validated config (fails before anything runs)."""
    cases = []
    sweep_values = suite.sweep.values if suite.sweep else [None]
    for entry in suite.datasets:
        for value in sweep_values:
            label = entry.name if value is None else f"{entry.name} {suite.sweep.name}={value:g}"
            for objective in suite.objectives:
                for seed in entry.seeds or suite.seeds:
                    cfg = _case_config(suite, entry, objective, seed, value, data_dir)
                    cases.append(
                        Case(dataset=label, entry=entry.name, objective=objective, seed=seed, sweep_value=value,
                             config=cfg.model_dump(mode="json", by_alias=True))
                    )
    return cases


# --- the flow -------------------------------------------------------------------------


@task(name="classical-references", cache_policy=NO_CACHE)
def classical_references(config: dict, baselines: list[str] | None) -> dict:
    """scikit-learn references on the very client splits the quantum methods use."""
    cfg = parse_config(config)
    setups, datas, stats = prepare(cfg)
    refs = run_baselines(datas, stats, cfg.federation.objective, cfg.federation.seed, baselines, setups)
    return {"baselines": refs, "y_test": [d.y_test for d in datas], "clients": [d.name for d in datas]}


@flow(name="pqfl-benchmark-case", flow_run_name="{case.dataset}-{case.objective}-seed{case.seed}")
def benchmark_case(case: Case, baselines: list[str] | None) -> dict:
    """One dataset × objective × seed: every quantum method, then the classical references."""
    cfg = parse_config(case.config)
    method_flow = train_method.with_options(task_runner=task_runner_for(cfg.runner))
    # This subflow's own run id keys the methods' MLflow runs and checkpoints: unique per case.
    quantum = [method_flow(case.config, m, str(flow_run.id)) for m in cfg.federation.methods]
    refs = classical_references(case.config, baselines)
    return {"quantum": quantum, **refs}


def _record(case: Case, result: dict, kind: str, scores=None) -> dict:
    return {
        "dataset": case.dataset,
        "entry": case.entry,
        "objective": case.objective,
        "seed": case.seed,
        "sweep_value": case.sweep_value,
        "method": result["method"],
        "kind": kind,
        **{m: float(result[m]) for m in METRICS},
        "mean_val_auroc": float(result.get("mean_val_auroc", float("nan"))),
        "per_client": [
            {"client": c["client"], **{k: float(c[k]) for k in ("auroc", "aupr", "false_error", "missing_error")}}
            for c in result["per_client"]
        ],
        "history": result.get("history", []),
        "mlflow_run_id": result.get("mlflow_parent_run_id"),
        "scores": scores,
    }


def summary_table(records: list[dict]) -> pd.DataFrame:
    """Mean ± std over seeds of each metric, one row per dataset × objective × method."""
    frame = pd.DataFrame([{k: r[k] for k in ("dataset", "objective", "method", "kind", "seed", *METRICS)} for r in records])
    keys = ["dataset", "objective", "method"]
    grouped = frame.groupby(keys, sort=False)
    table = grouped[list(METRICS)].mean()
    table["mean_auroc_std"] = grouped["mean_auroc"].std(ddof=1).fillna(0.0)  # sample std; 0 for one seed
    table["seeds"] = grouped["seed"].nunique()
    table["kind"] = grouped["kind"].first()
    return table.reset_index()


def relative_change(table: pd.DataFrame, metric: str = "mean_auroc") -> pd.DataFrame:
    """PQFL's relative change (%) in ``metric`` against every other method, per dataset × objective."""
    wide = table.pivot_table(index=["dataset", "objective"], columns="method", values=metric, sort=False)
    if PROPOSED not in wide:
        return pd.DataFrame()
    others = [c for c in wide.columns if c != PROPOSED]
    return pd.DataFrame({f"vs {c}": 100.0 * (wide[PROPOSED] - wide[c]) / wide[c] for c in others}, index=wide.index)


def paired_difference(frame: pd.DataFrame, metric: str = "mean_auroc", confidence: float = 0.95) -> pd.DataFrame:
    """PQFL minus every other method, paired by seed (same splits), per dataset × objective.

    One row per comparison: the mean per-seed difference, its paired-t confidence interval
    (scipy's ``ttest_rel``; NaN with one seed) and on how many seeds PQFL was ≥ the other.
    With seed-to-seed spreads as large as the gaps, the interval says whether a gap is
    more than the split's noise: an interval that holds 0 does not separate the two.
    """
    rows = []
    for (dataset, objective), part in frame.groupby(["dataset", "objective"], sort=False):
        wide = part.pivot(index="seed", columns="method", values=metric)  # raises on a repeated seed
        if PROPOSED not in wide:
            continue
        for other in [c for c in wide.columns if c != PROPOSED]:
            both = wide[[PROPOSED, other]].dropna()
            diff = both[PROPOSED] - both[other]
            low = high = float("nan")
            if len(both) > 1 and diff.std(ddof=1) > 0:
                ci = ttest_rel(both[PROPOSED], both[other]).confidence_interval(confidence)
                low, high = float(ci.low), float(ci.high)
            elif len(both) > 1:
                low = high = float(diff.mean())
            rows.append({"dataset": dataset, "objective": objective, "against": other, "seeds": len(both),
                         "difference": float(diff.mean()), "ci_low": low, "ci_high": high,
                         "pqfl >= it": int((diff >= 0).sum())})
    return pd.DataFrame(rows)


def pyod_reference(path: Path | None, datasets: dict[str, str]) -> pd.DataFrame:
    """PyOD's published ROC per dataset: the best detector and IForest (a reference, not a target)."""
    if path is None or not path.is_file():
        return pd.DataFrame()
    ref = pd.read_csv(path)
    ref.columns = [c.strip() for c in ref.columns]
    detectors = [c for c in ref.columns if c not in ("Data", "#Samples", "# Dimensions", "Outlier Perc")]
    rows = {}
    for label, key in datasets.items():
        match = ref[ref["Data"].str.strip() == key]
        if match.empty:
            continue
        values = match.iloc[0][detectors].astype(float)
        values = values[values > 0]  # 0.0 marks a detector PyOD did not run on this dataset
        rows[label] = {"pyod_best_roc": values.max(), "pyod_best_detector": values.idxmax(), "pyod_iforest_roc": values.get("IForest")}
    return pd.DataFrame.from_dict(rows, orient="index")


def markdown_table(frame: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    cols = [str(c) for c in frame.columns]

    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else floatfmt.format(v)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def display_table(table: pd.DataFrame, pyod: pd.DataFrame) -> pd.DataFrame:
    """The report's main table: mean ± std AUROC and the other means, PyOD columns for one_class."""
    out = table.copy()
    out["AUROC"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(out["mean_auroc"], out["mean_auroc_std"])]
    out = out.rename(columns={"mean_aupr": "AUPR", "mean_false_error": "false err", "mean_missing_error": "missing err",
                              "worst_auroc": "worst AUROC"})
    cols = ["dataset", "objective", "method", "AUROC", "AUPR", "false err", "missing err", "worst AUROC"]
    out = out[cols]
    if not pyod.empty and (out["objective"] == "one_class").any():
        for col in ("pyod_best_roc", "pyod_best_detector", "pyod_iforest_roc"):
            out[col] = [pyod.at[d, col] if o == "one_class" and d in pyod.index else None
                        for d, o in zip(out["dataset"], out["objective"])]
    return out


def win_counts(table: pd.DataFrame) -> pd.DataFrame:
    """On how many datasets PQFL's mean-client AUROC is ≥ each other method's, per objective."""
    rows = []
    for objective, part in table.groupby("objective", sort=False):
        wide = part.pivot_table(index="dataset", columns="method", values="mean_auroc")
        if PROPOSED not in wide:
            continue
        for other in [c for c in wide.columns if c != PROPOSED]:
            both = wide[[PROPOSED, other]].dropna()
            rows.append({"objective": objective, "against": other,
                         "pqfl >= it": int((both[PROPOSED] >= both[other]).sum()), "datasets": len(both)})
    return pd.DataFrame(rows)


# --- plots ----------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _convergence_plot(records: list[dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    by_method: dict[str, list] = {}
    for r in records:
        if r["history"]:
            by_method.setdefault(r["method"], []).append([h["mean_auroc"] for h in r["history"]])
    for method, curves in by_method.items():
        mean = np.mean(curves, axis=0)
        ax.plot(np.arange(1, len(mean) + 1), mean, marker="o", label=method)
    for r in {r["method"]: r for r in records if r["kind"] == "classical" and r["method"].endswith("-client")}.values():
        level = np.mean([x["mean_auroc"] for x in records if x["method"] == r["method"]])
        ax.axhline(level, linestyle="--", linewidth=1, color="grey")
        ax.annotate(r["method"], (1, level), fontsize=7, color="grey")
    ax.set_xlabel("round")
    ax.set_ylabel("mean-client AUROC (mean over seeds)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _client_bars(records: list[dict], path: Path, title: str) -> None:
    frame = pd.DataFrame(
        [{"method": r["method"], "client": c["client"], "auroc": c["auroc"]}
         for r in records if r["kind"] == "quantum" or r["method"].endswith("-client") for c in r["per_client"]]
    )
    wide = frame.groupby(["client", "method"], sort=False)["auroc"].mean().unstack("method")
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(wide) * max(1, len(wide.columns)) / 3), 4))
    wide.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("test AUROC (mean over seeds)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _roc_pr_plot(records: list[dict], y_test: list[np.ndarray], path: Path, title: str) -> None:
    """Each method's scores, ranked within each client (scales differ between clients'
    models), pooled over clients."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    y = np.concatenate(y_test)
    for r in records:
        if r["scores"] is None:
            continue
        pooled = np.concatenate([rankdata(s) / len(s) for s in r["scores"]])
        RocCurveDisplay.from_predictions(y, pooled, name=r["method"], ax=ax1)
        PrecisionRecallDisplay.from_predictions(y, pooled, name=r["method"], ax=ax2)
    ax1.set_title(f"{title}: ROC (test, ranks pooled over clients)", fontsize=8)
    ax2.set_title("precision-recall", fontsize=8)
    for ax in (ax1, ax2):
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _sweep_plot(table_seeds: pd.DataFrame, sweep: Sweep, path: Path) -> None:
    groups = list(table_seeds.groupby(["entry", "objective"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, ((entry, objective), part) in zip(axes[0], groups):
        for method, m in part.groupby("method", sort=False):
            stats = m.groupby("sweep_value")["mean_auroc"].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=method)
        ax.set_xlabel(sweep.name)
        ax.set_ylabel("mean-client AUROC")
        ax.set_title(f"{entry} ({objective})", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- report ---------------------------------------------------------------------------


def paired_display(paired: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """The report's view of ``paired_difference``: against the other quantum methods and the
    per-client references only, "difference [low, high]" per cell."""
    keep = paired[paired["against"].isin(methods) | paired["against"].str.endswith("-client")]
    if keep.empty:
        return keep
    cells = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] {n}/{k}" if not math.isnan(lo) else f"{d:+.3f} {n}/{k}"
             for d, lo, hi, n, k in zip(keep["difference"], keep["ci_low"], keep["ci_high"], keep["pqfl >= it"], keep["seeds"])]
    wide = keep.assign(cell=cells).pivot(index=["dataset", "objective"], columns="against", values="cell")
    return wide.reindex(pd.unique(pd.MultiIndex.from_frame(keep[["dataset", "objective"]]))).fillna("")


def build_report(suite: Suite, table: pd.DataFrame, pyod: pd.DataFrame, wall_s: float, notes: list[str],
                 paired: pd.DataFrame | None = None) -> str:
    parts = [f"# Benchmark `{suite.name}`", ""]
    if suite.description:
        parts += [suite.description.strip(), ""]
    seeds = sorted({int(s) for s in table["seeds"]})
    parts += [
        f"Mean ± std over seeds (sample std; {', '.join(map(str, seeds))} seed(s) per row) of the mean-client test "
        "metrics; thresholds chosen on each client's validation split. Quantum methods: "
        f"{', '.join(suite.methods)}. Classical references (scikit-learn, same splits): `-client` = one model per "
        "client, `-pooled` = one model on all clients' training rows, `-features` = one model per client on exactly "
        "what its circuit is fed (the encoding's amplitudes or angles). Wall time "
        f"{wall_s / 60:.1f} min.",
        "",
        "## Results",
        "",
        markdown_table(display_table(table, pyod)),
        "",
    ]
    for metric, label in (("mean_auroc", "AUROC"), ("mean_aupr", "AUPR")):
        rel = relative_change(table, metric)
        if not rel.empty:
            parts += [f"## PQFL's relative change in mean-client {label} (%)", "", markdown_table(rel, "{:+.1f}"), ""]
    wins = win_counts(table)
    if not wins.empty:
        parts += ["## Datasets where PQFL's mean-client AUROC ≥ the other method's", "", markdown_table(wins), ""]
    shown = paired_display(paired, list(suite.methods)) if paired is not None and not paired.empty else pd.DataFrame()
    if not shown.empty:
        parts += ["## PQFL minus the other method, paired by seed (mean-client AUROC)", "",
                  "Mean per-seed difference, its 95% paired-t interval, and on how many seeds PQFL was ≥ the "
                  "other method. An interval that holds 0 does not separate the two on these seeds.", "",
                  markdown_table(shown), ""]
    if not pyod.empty:
        parts += ["PyOD columns: PyOD's published unsupervised ROC-AUC on the whole file (60/40 split, "
                  "standardised), a reference point only: its split and its pooled detectors differ from the "
                  "federated per-client setup here.", ""]
    parts += [f"- {n}" for n in notes]
    return "\n".join(parts).rstrip() + "\n"


def _log_benchmark(tracker: Tracker, run_id: str, suite: Suite, suite_path: str, table: pd.DataFrame, frame: pd.DataFrame,
                   report: str, payload: dict, plot_dir: Path) -> None:
    client = tracker.client
    ts = int(time.time() * 1000)
    metrics = [  # e.g. "cardio/supervised/pqfl/mean_auroc"; MLflow keys allow only \w - . / and spaces
        Metric(re.sub(r"[^\w\-./ ]", "_", f"{d}/{o}/{m}/{k}"), float(row[k]), ts, 0)
        for (d, o, m), row in table.set_index(["dataset", "objective", "method"]).iterrows()
        for k in (*METRICS, "mean_auroc_std")
    ]
    for start in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[start : start + 500])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "suite.yaml").write_text(Path(suite_path).read_text())
        (tmp / "report.md").write_text(report)
        table.to_csv(tmp / "summary.csv", index=False)
        frame.to_csv(tmp / "results_per_seed.csv", index=False)
        (tmp / "benchmark.json").write_text(json.dumps(payload, indent=2))
        for name in ("suite.yaml", "report.md", "summary.csv", "results_per_seed.csv", "benchmark.json"):
            client.log_artifact(run_id, str(tmp / name))
    client.log_artifacts(run_id, str(plot_dir), "plots")


@flow(name="pqfl-benchmark")
def pqfl_benchmark(suite: str, data_dir: str | None = None, json_out: str | None = None) -> dict:
    """Run a benchmark suite (YAML file); returns ``{"rows": [...]}`` plus the report and run ids.

    The markdown report is written beside ``json_out`` (same name, ``.md``) when given,
    and always logged to MLflow as ``report.md``.
    """
    started = time.perf_counter()
    spec, cases = check_suite(suite, data_dir)
    first = parse_config(cases[0].config)
    tracker = Tracker(first, str(flow_run.id))
    parent = tracker.client.create_run(
        tracker.experiment_id,
        run_name=f"benchmark-{spec.name}",
        tags={PARENT_TAG: "benchmark", "prefect.flow_run_id": str(flow_run.id), "git_commit": tracker.commit,
              "mlflow.source.git.commit": tracker.commit, "pqfl.suite": spec.name},
    )
    run_id = parent.info.run_id
    params = {"suite": spec.name, "suite_file": str(suite), "data_dir": str(data_dir), "seeds": spec.seeds,
              "objectives": spec.objectives, "methods": spec.methods, "datasets": [d.name for d in spec.datasets],
              "baselines": spec.baselines or list(DETECTORS), "cases": len(cases)}
    tracker.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    records: list[dict] = []
    y_tests: dict[tuple, list] = {}
    try:
        for i, case in enumerate(cases, 1):
            t0 = time.perf_counter()
            out = benchmark_case(case, spec.baselines)
            for q in out["quantum"]:
                records.append(_record(case, q, "quantum"))
                for key, value in (("mlflow.parentRunId", run_id), ("pqfl.benchmark.dataset", case.dataset),
                                   ("pqfl.benchmark.objective", case.objective), ("pqfl.benchmark.seed", str(case.seed))):
                    tracker.client.set_tag(q["mlflow_parent_run_id"], key, value)
            for b in out["baselines"]:
                records.append(_record(case, b, "classical", [c["test_scores"] for c in b["per_client"]]))
            y_tests[(case.dataset, case.objective, case.seed)] = out["y_test"]
            log.info("benchmark %d/%d  %s  %s  seed %d  (%.1f s)", i, len(cases), case.dataset, case.objective,
                     case.seed, time.perf_counter() - t0)
        table = summary_table(records)
        frame = pd.DataFrame([{k: v for k, v in r.items() if k not in ("per_client", "history", "scores")} for r in records])
        ref_path = None
        if spec.pyod_reference:
            ref_path = Path(resolve_source(f"x:{spec.pyod_reference}", data_dir).removeprefix("x:"))
        pyod = pyod_reference(ref_path, {d.name: d.pyod_name or d.name for d in spec.datasets}) if "one_class" in spec.objectives else pd.DataFrame()
        notes = []
        if ref_path is not None and pyod.empty:
            notes.append(f"PyOD reference {ref_path} not found or without matching rows: reference columns left out.")
        wall_s = time.perf_counter() - started
        paired = paired_difference(frame)
        report = build_report(spec, table, pyod, wall_s, notes, paired)
        rows = [
            {k: (r[k] if k in ("dataset", "method", "objective") else float(r[k])) for k in JSON_KEYS}
            for r in table.to_dict("records")
        ]
        payload = {
            "rows": rows,
            "suite": spec.name,
            "experiment": spec.experiment_name,
            "mlflow_run_id": run_id,
            "wall_s": wall_s,
            "relative_change": {
                metric: [{"dataset": d, "objective": o, **{k: float(v) for k, v in row.items()}}
                         for (d, o), row in relative_change(table, metric).iterrows()]
                for metric in ("mean_auroc", "mean_aupr", "mean_false_error")
            },
            "pyod_reference": [{"dataset": d, **r} for d, r in pyod.to_dict("index").items()],
            "paired_difference": paired.to_dict("records"),
        }
        with tempfile.TemporaryDirectory() as tmp:
            plot_dir = Path(tmp)
            _plots(spec, records, y_tests, frame, plot_dir, tracker, run_id)
            _log_benchmark(tracker, run_id, spec, suite, table, frame, report, payload, plot_dir)
        if json_out:
            out_path = Path(json_out)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.with_suffix(".md").write_text(report)
            payload["report"] = str(out_path.with_suffix(".md"))
            out_path.write_text(json.dumps(payload, indent=2))
        tracker.client.set_terminated(run_id, "FINISHED")
    except BaseException as err:
        tracker.client.set_tag(run_id, "pqfl.failure", f"{type(err).__name__}: {err}"[:4000])
        tracker.client.set_terminated(run_id, "FAILED")
        raise
    payload["table"] = display_table(table, pyod).to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")
    payload["report_markdown"] = report
    return payload


def _plots(spec: Suite, records, y_tests, frame: pd.DataFrame, plot_dir: Path, tracker: Tracker, run_id: str) -> None:
    """Convergence, per-client bars and ROC/PR per dataset × objective; the sweep plot."""
    keys = list(dict.fromkeys((r["dataset"], r["objective"]) for r in records))
    for dataset, objective in keys:
        these = [r for r in records if r["dataset"] == dataset and r["objective"] == objective]
        title = f"{spec.name}: {dataset} ({objective})"
        slug = _slug(f"{dataset}_{objective}")
        (plot_dir / "convergence").mkdir(exist_ok=True)
        (plot_dir / "per_client").mkdir(exist_ok=True)
        (plot_dir / "roc_pr").mkdir(exist_ok=True)
        _convergence_plot(these, plot_dir / "convergence" / f"{slug}.png", title)
        _client_bars(these, plot_dir / "per_client" / f"{slug}.png", title)
        seed = min(r["seed"] for r in these)
        first = [r for r in these if r["seed"] == seed]
        _roc_pr_plot(first, y_tests[(dataset, objective, seed)], plot_dir / "roc_pr" / f"{slug}_classical.png",
                     f"{dataset} ({objective}, seed {seed})")
        for r in first:  # the quantum methods' own ROC/PR, drawn by the training flow
            if r["kind"] == "quantum" and r["mlflow_run_id"]:
                with tempfile.TemporaryDirectory() as tmp:
                    local = tracker.client.download_artifacts(r["mlflow_run_id"], "plots/roc_pr.png", tmp)
                    Path(local).rename(plot_dir / "roc_pr" / f"{slug}_{r['method']}.png")
    if spec.sweep is not None:
        _sweep_plot(frame, spec.sweep, plot_dir / f"sweep_{_slug(spec.sweep.name)}.png")


def check_suite(suite_path: str, data_dir: str | None) -> tuple[Suite, list[Case]]:
    """Validate a suite before anything starts: fields, every case's config, each dataset's
    files and feature maps (prepared once per dataset) and every case's partition (each
    seed draws its own), so no case fails on its data after hours of others. Raises
    PQFLInputError naming the case."""
    spec = load_suite(suite_path)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise PQFLInputError(f"--data-dir: directory {data_dir} not found; pass the folder the suite's files are in")
    cases = expand_cases(spec, data_dir)
    for objective in spec.objectives:
        detectors_for(objective, spec.baselines)
    seen, loaded = set(), {}
    for case in cases:
        cfg = parse_config(case.config)
        try:
            if case.dataset not in seen:
                seen.add(case.dataset)
                prepare(cfg)
            else:  # an image set is read once, not once per seed and objective
                source = cfg.dataset.source
                loaded[source] = loaded[source] if source in loaded else load_source(source)
                load_and_partition(cfg, loaded[source])
        except PQFLInputError as err:
            raise PQFLInputError(f"dataset {case.dataset!r}, objective {case.objective}, seed {case.seed}: {err}") from err
    return spec, cases
