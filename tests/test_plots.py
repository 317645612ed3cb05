"""The figures logged to MLflow say what they claim: the comparison heatmap holds each
method's per-client AUROC and their mean, round axes have integer ticks, the ROC panel has
the chance diagonal, and legends sit outside the curves."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pqfl.plots import client_roc_pr_figure, invocation_comparison_figure, method_convergence_figure, plt
from pqfl.results import ClientEvaluation, RoundSummary

CLIENTS = ["a", "b", "c"]


def _result(seed: int, rounds: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "per_client": [{"client": c, "auroc": float(rng.uniform(0.5, 1))} for c in CLIENTS],
        "history": [{"round": k, "mean_auroc": float(rng.uniform(0.5, 1))} for k in range(1, rounds + 1)],
    }


def _outside(legend) -> bool:
    box = legend.get_window_extent().transformed(legend.axes.transAxes.inverted())
    return box.x0 >= 1.0


def test_the_comparison_figure_shows_every_method_and_client():
    results = {m: _result(i) for i, m in enumerate(["local", "fedavg", "pqfl"])}
    fig = invocation_comparison_figure(results, "inv")
    heat, lines = fig.axes[0], fig.axes[1]
    grid = heat.images[0].get_array()
    expected = np.array([[c["auroc"] for c in r["per_client"]] for r in results.values()])
    np.testing.assert_allclose(grid[:, :-1], expected)
    np.testing.assert_allclose(grid[:, -1], expected.mean(axis=1))
    assert [t.get_text() for t in heat.get_xticklabels()] == [*CLIENTS, "mean"]
    assert [t.get_text() for t in heat.get_yticklabels()] == list(results)
    assert {t.get_text() for t in heat.texts} == {f"{v:.3f}" for v in grid.ravel()}
    assert [line.get_label() for line in lines.get_lines()] == list(results)
    for line, r in zip(lines.get_lines(), results.values()):
        assert list(line.get_xdata()) == [h["round"] for h in r["history"]]
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in lines.get_xticks())
    assert _outside(lines.get_legend())
    plt.close(fig)


def test_round_axes_have_integer_ticks_and_outside_legends():
    history = [RoundSummary(k, 0.6 + k / 100, 0.5, 0.4, 0.1, 0.2, 0.5, 0.6) for k in (1, 2, 3)]
    fig = method_convergence_figure(history, "pqfl")
    fig.canvas.draw()
    ticks = fig.axes[0].get_xticks()
    assert all(float(t).is_integer() for t in ticks) and len(ticks) <= 8
    assert _outside(fig.axes[0].get_legend())
    plt.close(fig)


def test_the_roc_panel_has_the_chance_diagonal():
    rng = np.random.default_rng(0)
    setups, final = [], []
    for name in CLIENTS:
        y = (rng.random(80) < 0.2).astype(int)
        scores = y + rng.normal(0, 0.8, 80)
        setups.append(SimpleNamespace(name=name, y_test=y))
        final.append(ClientEvaluation(name, 0.5, 0.7, roc_auc_score(y, scores), 0.5, 0.1, 0.1, 0.5, scores))
    fig = client_roc_pr_figure(final, setups, "pqfl")
    roc, pr = fig.axes
    chance = [line for line in roc.get_lines() if "chance" in line.get_label().lower()]
    assert len(chance) == 1
    np.testing.assert_allclose(chance[0].get_xdata(), [0, 1])
    np.testing.assert_allclose(chance[0].get_ydata(), [0, 1])
    labels = [t.get_text() for t in roc.get_legend().get_texts()]
    for name, ev in zip(CLIENTS, final):  # sklearn's label carries the AUC it computed from the scores
        assert any(label.startswith(name) and f"{ev.auroc:.2f}" in label for label in labels), labels
    fig.canvas.draw()
    assert _outside(pr.get_legend())
    plt.close(fig)


@pytest.mark.parametrize("rounds", [1, 12])
def test_integer_ticks_hold_for_short_and_long_runs(rounds):
    fig = invocation_comparison_figure({"local": _result(0, rounds)})
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in fig.axes[1].get_xticks())
    plt.close(fig)
