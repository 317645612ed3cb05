"""What a benchmark run hands back: the markdown report and the JSON rows.

The report (:func:`build_report`) holds the main table (:func:`display_table`: mean ± std
over seeds, PyOD's reference for one_class), PQFL's relative change, its win counts and
its paired differences (:func:`paired_display`); :func:`json_rows` gives the summary rows
with the fields of :data:`JSON_KEYS`. Plain text and pandas, shared by the flow and the
tools under ``benchmarks/``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from pqfl.benchmark.statistics import relative_change, win_counts

if TYPE_CHECKING:
    from pqfl.benchmark.suite import Suite

JSON_KEYS = (
    "dataset",
    "method",
    "objective",
    "mean_auroc",
    "mean_auroc_std",
    "mean_aupr",
    "mean_false_error",
    "mean_missing_error",
    "worst_auroc",
)


def json_rows(table: pd.DataFrame) -> list[dict]:
    """The JSON's ``rows``: one per row of ``summary_table``, the fields of ``JSON_KEYS``."""
    return [
        {k: (r[k] if k in ("dataset", "method", "objective") else float(r[k])) for k in JSON_KEYS}
        for r in table.to_dict("records")
    ]


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
    out = out.rename(
        columns={
            "mean_aupr": "AUPR",
            "mean_false_error": "false err",
            "mean_missing_error": "missing err",
            "worst_auroc": "worst AUROC",
        }
    )
    cols = ["dataset", "objective", "method", "AUROC", "AUPR", "false err", "missing err", "worst AUROC"]
    out = out[cols]
    if not pyod.empty and (out["objective"] == "one_class").any():
        for col in ("pyod_best_roc", "pyod_best_detector", "pyod_iforest_roc"):
            out[col] = [
                pyod.at[d, col] if o == "one_class" and d in pyod.index else None
                for d, o in zip(out["dataset"], out["objective"])
            ]
    return out


def paired_display(paired: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """The report's view of ``paired_difference``: against the other quantum methods and the
    per-client references only, "difference [low, high]" per cell."""
    keep = paired[paired["against"].isin(methods) | paired["against"].str.endswith("-client")]
    if keep.empty:
        return keep
    cells = [
        f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] {n}/{k}" if not math.isnan(lo) else f"{d:+.3f} {n}/{k}"
        for d, lo, hi, n, k in zip(
            keep["difference"], keep["ci_low"], keep["ci_high"], keep["pqfl >= it"], keep["seeds"]
        )
    ]
    wide = keep.assign(cell=cells).pivot(index=["dataset", "objective"], columns="against", values="cell")
    return wide.reindex(pd.unique(pd.MultiIndex.from_frame(keep[["dataset", "objective"]]))).fillna("")


def build_report(
    suite: Suite,
    table: pd.DataFrame,
    pyod: pd.DataFrame,
    wall_s: float,
    notes: list[str],
    paired: pd.DataFrame | None = None,
) -> str:
    """The markdown report of a run: its tables from ``summary_table`` (and ``paired_difference``)."""
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
        parts += [
            "## PQFL minus the other method, paired by seed (mean-client AUROC)",
            "",
            "Mean per-seed difference, its 95% paired-t interval, and on how many seeds PQFL was ≥ the "
            "other method. An interval that holds 0 does not separate the two on these seeds.",
            "",
            markdown_table(shown),
            "",
        ]
    if not pyod.empty:
        parts += [
            "PyOD columns: PyOD's published unsupervised ROC-AUC on the whole file (60/40 split, "
            "standardised), a reference point only: its split and its pooled detectors differ from the "
            "federated per-client setup here.",
            "",
        ]
    parts += [f"- {n}" for n in notes]
    return "\n".join(parts).rstrip() + "\n"
