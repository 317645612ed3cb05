"""pqfl.metrics against scikit-learn and plain NumPy counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

from pqfl.metrics import METRIC_NAMES, choose_threshold, client_metrics, summarize


def _scored(seed: int, n: int = 200, ties: bool = False):
    """Labels with ~20 % anomalies and noisy scores that are higher for anomalies."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    y[:2] = [0, 1]  # both classes present
    scores = rng.normal(size=n) + 1.2 * y
    if ties:
        scores = np.round(scores, 1)
    return y, scores


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_client_metrics_are_sklearns_bit_for_bit(seed, ties):
    """AUROC and AUPR come from the curves roc_auc_score and average_precision_score build on
    (their input checks cost milliseconds a call); the numbers must be theirs exactly, with
    tied scores and float labels too, and the error rates those of confusion_matrix."""
    y, s = _scored(seed, ties=ties)
    threshold = float(np.quantile(s, 0.7))
    for labels in (y, y.astype(float)):
        m = client_metrics(labels, s, threshold)
        assert set(m) == set(METRIC_NAMES)
        assert m["auroc"] == roc_auc_score(y, s)
        assert m["aupr"] == average_precision_score(y, s)
        tn, fp, fn, tp = confusion_matrix(y, (s >= threshold).astype(int)).ravel()
        assert m["false_error"] == fp / (fp + tn)
        assert m["missing_error"] == fn / (fn + tp)
        assert m["f1"] == f1_score(y, (s >= threshold).astype(int))


def test_labels_of_one_class_give_what_sklearn_gives():
    """Where AUROC is undefined (a split without anomalies) the metrics are scikit-learn's own."""
    y, s = np.zeros(30, dtype=int), np.linspace(0.0, 1.0, 30)
    with pytest.warns(Warning):
        m = client_metrics(y, s, 0.5)
    with pytest.warns(Warning):
        expected = roc_auc_score(y, s)
    assert np.isnan(m["auroc"]) and np.isnan(expected)
    assert m["false_error"] == 15 / 30 and m["missing_error"] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_f1_from_the_confusion_matrix_is_sklearns_f1_score(seed):
    """Bit for bit, at every threshold, including one above every score (nothing flagged)."""
    y, s = _scored(seed, n=60, ties=True)
    for threshold in [*np.unique(s), float(s.max()) + 1.0]:
        assert client_metrics(y, s, threshold)["f1"] == f1_score(y, (s >= threshold).astype(int), zero_division=0.0)


def test_threshold_is_inclusive():
    # A score equal to the threshold is flagged as an anomaly.
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.5, 0.9])
    m = client_metrics(y, s, 0.5)
    assert m["missing_error"] == 0.0
    assert m["false_error"] == 0.0
    assert m["f1"] == 1.0


def test_extreme_thresholds():
    y, s = _scored(3)
    flag_all = client_metrics(y, s, float(s.min()))
    assert flag_all["false_error"] == 1.0 and flag_all["missing_error"] == 0.0
    flag_none = client_metrics(y, s, float(s.max()) + 1.0)
    assert flag_none["false_error"] == 0.0 and flag_none["missing_error"] == 1.0
    assert flag_none["f1"] == 0.0


def test_metrics_are_oriented_higher_is_more_anomalous():
    y, s = _scored(4)
    assert client_metrics(y, s, 0.0)["auroc"] > 0.7
    assert client_metrics(y, -s, 0.0)["auroc"] < 0.3


@pytest.mark.parametrize("seed, ties", [(10, False), (11, False), (12, True), (13, True)])
def test_choose_threshold_maximises_validation_f1(seed, ties):
    y, s = _scored(seed, n=150, ties=ties)
    t = choose_threshold(y, s)
    # Brute force: F1 of "score >= u" for every distinct score u.
    best = max(f1_score(y, (s >= u).astype(int)) for u in np.unique(s))
    assert f1_score(y, (s >= t).astype(int)) == pytest.approx(best, abs=1e-12)
    # The threshold is one of the observed scores, so it is meaningful on another split.
    assert t in set(s.tolist())


def test_choose_threshold_separable_validation_gives_perfect_split():
    y = np.array([0] * 20 + [1] * 5)
    s = np.concatenate([np.linspace(0, 1, 20), np.linspace(2, 3, 5)])
    t = choose_threshold(y, s)
    assert 1.0 < t <= 2.0
    m = client_metrics(y, s, t)
    assert m["f1"] == 1.0 and m["false_error"] == 0.0 and m["missing_error"] == 0.0


def test_summarize_means_and_worst_auroc():
    rng = np.random.default_rng(20)
    per_client = [{name: float(rng.random()) for name in METRIC_NAMES} for _ in range(5)]
    out = summarize(per_client)
    for name in METRIC_NAMES:
        assert out[f"mean_{name}"] == pytest.approx(sum(c[name] for c in per_client) / 5)
    assert out["worst_auroc"] == min(c["auroc"] for c in per_client)
    assert set(out) == {f"mean_{n}" for n in METRIC_NAMES} | {"worst_auroc"}


def test_summarize_of_real_clients():
    clients = []
    for seed in range(3):
        y, s = _scored(30 + seed)
        clients.append(client_metrics(y, s, choose_threshold(y, s)))
    out = summarize(clients)
    aurocs = [roc_auc_score(*_scored(30 + seed)) for seed in range(3)]
    assert out["mean_auroc"] == pytest.approx(np.mean(aurocs))
    assert out["worst_auroc"] == pytest.approx(min(aurocs))
