"""Every matplotlib figure of the project.

A training run's per-method figures (:func:`method_convergence_figure`,
:func:`client_roc_pr_figure`) and the comparison of an invocation's methods
(:func:`invocation_comparison_figure`) are returned for MLflow's ``log_figure``; a
benchmark's plots per dataset × objective (:func:`benchmark_convergence_plot`,
:func:`client_bars_plot`, :func:`pooled_roc_pr_plot`) and over a sweep
(:func:`sweep_plot`) are drawn to PNG files of a folder the flow logs whole. This module
only draws, on the non-interactive Agg backend. ``pqfl`` does not import it, so importing
the library stays free of matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy.stats import rankdata  # noqa: E402
from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay  # noqa: E402

if TYPE_CHECKING:
    from pqfl.benchmark.suite import Sweep
    from pqfl.results import ClientEvaluation, RoundSummary


def _rounds_axis(ax) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one round: one tick, not 0.95…1.05


def _legend_outside(ax, **kw) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def method_convergence_figure(history: list[RoundSummary], method: str) -> Figure:
    """One method's run: mean and worst-client AUROC and mean AUPR per round (``history``
    holds one summary per round)."""
    rounds = [h.round for h in history]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.plot(rounds, [h.mean_auroc for h in history], marker="o", label="mean AUROC")
    ax.plot(rounds, [h.worst_auroc for h in history], marker="s", label="worst-client AUROC")
    ax.plot(rounds, [h.mean_aupr for h in history], marker="^", label="mean AUPR")
    _rounds_axis(ax)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{method}: convergence (test)")
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def client_roc_pr_figure(final: list[ClientEvaluation], setups, method: str) -> Figure:
    """One method's run: each client's test ROC (with the chance diagonal) and
    precision-recall curve (``final`` holds each client's evaluation, in the order of ``setups``)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for n, (ev, setup) in enumerate(zip(final, setups)):
        scores = np.asarray(ev.test_scores)
        last = n == len(setups) - 1
        RocCurveDisplay.from_predictions(setup.y_test, scores, name=setup.name, ax=ax1, plot_chance_level=last)
        PrecisionRecallDisplay.from_predictions(setup.y_test, scores, name=setup.name, ax=ax2)
    ax1.set_title(f"{method}: ROC (test)")
    ax2.set_title(f"{method}: precision-recall (test)")
    ax1.legend(fontsize=7, loc="lower right")
    _legend_outside(ax2, fontsize=7)
    fig.tight_layout()
    return fig


def invocation_comparison_figure(results: dict[str, dict], title: str = "") -> Figure:
    """Every method of one invocation side by side: test AUROC per method × client (a
    heatmap with the clients' mean in the last column) and mean-client test AUROC per round
    (``results``: method → its result, with ``per_client`` rows and ``history`` summaries
    as ``pqfl run --json`` writes them)."""
    methods = list(results)
    clients = [c["client"] for c in results[methods[0]]["per_client"]]
    grid = np.array([[c["auroc"] for c in results[m]["per_client"]] for m in methods])
    grid = np.c_[grid, grid.mean(axis=1)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.6 * len(methods) + 3.5),
                                   gridspec_kw={"width_ratios": [1.3, 1]})  # fmt: skip
    image = ax1.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
    ax1.set_xticks(range(len(clients) + 1), [*clients, "mean"], rotation=30, ha="right", fontsize=8)
    ax1.set_yticks(range(len(methods)), methods)
    for (i, j), value in np.ndenumerate(grid):
        ax1.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8, color="white" if value < 0.8 else "black")
    fig.colorbar(image, ax=ax1, label="test AUROC", fraction=0.04)
    ax1.set_title("test AUROC per client")
    for m in methods:
        history = results[m]["history"]
        ax2.plot([h["round"] for h in history], [h["mean_auroc"] for h in history], marker="o", label=m)
    _rounds_axis(ax2)
    ax2.set_ylabel("mean-client test AUROC")
    ax2.set_title("mean-client AUROC per round")
    _legend_outside(ax2, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def benchmark_convergence_plot(records: list[dict], path: Path, title: str) -> None:
    """A benchmark's dataset × objective: each quantum method's mean-client AUROC per round,
    averaged over seeds, with the per-client references' levels as dashed lines
    (``records`` as from ``pqfl.benchmark.statistics.case_record``)."""
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


def client_bars_plot(records: list[dict], path: Path, title: str) -> None:
    """A benchmark's dataset × objective: each client's test AUROC (mean over seeds) per
    quantum method and per-client reference."""
    frame = pd.DataFrame(
        [
            {"method": r["method"], "client": c["client"], "auroc": c["auroc"]}
            for r in records
            if r["kind"] == "quantum" or r["method"].endswith("-client")
            for c in r["per_client"]
        ]
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


def pooled_roc_pr_plot(records: list[dict], y_test: list[np.ndarray], path: Path, title: str) -> None:
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


def sweep_plot(table_seeds: pd.DataFrame, sweep: Sweep, path: Path) -> None:
    """A benchmark's sweep: mean-client AUROC (mean ± std over seeds) against the swept
    value, one panel per dataset × objective (``table_seeds``: one row per case and method)."""
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
