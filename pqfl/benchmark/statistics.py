"""The benchmark's numbers: per-case records and the tables computed from them.

Each case's methods become records (:func:`case_record`); from these come the mean ± std
over seeds (:func:`summary_table`), PQFL's relative change (:func:`relative_change`), its
per-seed paired difference with a paired-t interval (:func:`paired_difference`), its win
counts over datasets (:func:`win_counts`), and PyOD's published reference
(:func:`pyod_reference`). Plain pandas and SciPy, so the flow, the report and the tools
under ``benchmarks/`` share one computation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from scipy.stats import ttest_rel

if TYPE_CHECKING:
    from pqfl.benchmark.suite import Case

METRICS = ("mean_auroc", "mean_aupr", "mean_false_error", "mean_missing_error", "worst_auroc")
PROPOSED = "pqfl"


def case_record(case: Case, result: dict, kind: str, scores=None) -> dict:
    """One method's result on one case (``kind`` quantum or classical), with its per-client
    metrics, round history, MLflow run id and, for the references, per-client test scores."""
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
            for c in (row if isinstance(row, dict) else row.row() for row in result["per_client"])
        ],
        "history": result.get("history", []),
        "mlflow_run_id": result.get("mlflow_parent_run_id"),
        "scores": scores,
    }


def per_seed_table(records: list[dict]) -> pd.DataFrame:
    """One row per record, without its per-client rows, history and scores (the table
    ``paired_difference`` pairs and the sweep plot draws)."""
    return pd.DataFrame([{k: v for k, v in r.items() if k not in ("per_client", "history", "scores")} for r in records])


def summary_table(records: list[dict]) -> pd.DataFrame:
    """Mean ± std over seeds of each metric, one row per dataset × objective × method."""
    frame = pd.DataFrame(
        [{k: r[k] for k in ("dataset", "objective", "method", "kind", "seed", *METRICS)} for r in records]
    )
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


def paired_interval(a: pd.Series, b: pd.Series, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """a − b paired by their index (seeds): the mean difference, its paired-t confidence
    interval (scipy's ``ttest_rel``) and the number of pairs. With one pair the interval is
    NaN; with a constant difference it is that difference."""
    both = pd.concat([a, b], axis=1).dropna()
    diff = both.iloc[:, 0] - both.iloc[:, 1]
    low = high = float("nan")
    if len(both) > 1 and diff.std(ddof=1) > 0:
        ci = ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).confidence_interval(confidence)
        low, high = float(ci.low), float(ci.high)
    elif len(both) > 1:
        low = high = float(diff.mean())
    return float(diff.mean()), low, high, len(both)


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
            difference, low, high, seeds = paired_interval(wide[PROPOSED], wide[other], confidence)
            both = wide[[PROPOSED, other]].dropna()
            rows.append(
                {
                    "dataset": dataset,
                    "objective": objective,
                    "against": other,
                    "seeds": seeds,
                    "difference": difference,
                    "ci_low": low,
                    "ci_high": high,
                    "pqfl >= it": int((both[PROPOSED] >= both[other]).sum()),
                }
            )
    return pd.DataFrame(rows)


def win_counts(table: pd.DataFrame) -> pd.DataFrame:
    """On how many datasets PQFL's mean-client AUROC is ≥ each other method's, per objective."""
    rows = []
    for objective, part in table.groupby("objective", sort=False):
        wide = part.pivot_table(index="dataset", columns="method", values="mean_auroc")
        if PROPOSED not in wide:
            continue
        for other in [c for c in wide.columns if c != PROPOSED]:
            both = wide[[PROPOSED, other]].dropna()
            rows.append(
                {
                    "objective": objective,
                    "against": other,
                    "pqfl >= it": int((both[PROPOSED] >= both[other]).sum()),
                    "datasets": len(both),
                }
            )
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
        rows[label] = {
            "pyod_best_roc": values.max(),
            "pyod_best_detector": values.idxmax(),
            "pyod_iforest_roc": values.get("IForest"),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
