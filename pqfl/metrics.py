"""Anomaly-detection metrics per client (scikit-learn), threshold chosen on validation.

scikit-learn is imported where a metric is computed, not with the module: ``pqfl
compare`` reads the metric names through :mod:`pqfl.results` and never computes one, and
importing ``sklearn.metrics`` took 0.7 s of its start."""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("auroc", "aupr", "false_error", "missing_error", "f1")


def choose_threshold(y_val: np.ndarray, scores_val: np.ndarray) -> float:
    """The score threshold that maximises F1 on the validation split (flag score ≥ threshold)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y_val, scores_val)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def client_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPR, false error = FP/(FP+TN), missing error = FN/(FN+TP) and F1 at ``threshold``."""
    anomalous, flagged = np.asarray(y_true) == 1, np.asarray(scores) >= threshold
    tp, fp = np.count_nonzero(flagged & anomalous), np.count_nonzero(flagged & ~anomalous)
    fn, tn = np.count_nonzero(~flagged & anomalous), np.count_nonzero(~flagged & ~anomalous)
    auroc, aupr = ranking_metrics(y_true, scores)
    return {
        "auroc": auroc,
        "aupr": aupr,
        "false_error": float(fp / max(fp + tn, 1)),
        "missing_error": float(fn / max(fn + tp, 1)),
        # F1 from the counts already at hand (0 when nothing is flagged or anomalous, as
        # f1_score's zero_division=0); f1_score itself cost 1.2 ms a call in every round.
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0,
    }


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """``roc_auc_score`` of binary labels, computed as it computes it: the area under
    ``roc_curve``. The wrapper's input checks cost 2–3 ms a call, and every client's
    evaluation needs it twice a round; labels of one class (AUROC undefined) still go
    through it."""
    from sklearn.metrics import auc, roc_auc_score, roc_curve

    if np.unique(y_true).size != 2:
        return float(roc_auc_score(y_true, scores))
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(auc(fpr, tpr))


def ranking_metrics(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """:func:`auroc` and ``average_precision_score`` (computed as it computes it for binary
    labels, Σ (R_n − R_{n−1}) P_n over ``precision_recall_curve``, without its input checks)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    if np.unique(y_true).size != 2:
        return auroc(y_true, scores), float(average_precision_score(y_true, scores))
    precision, recall, _ = precision_recall_curve(y_true, scores)
    return auroc(y_true, scores), float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def summarize(per_client: list[dict[str, float]]) -> dict[str, float]:
    """Mean over clients of every metric, plus the worst client's AUROC."""
    out = {f"mean_{m}": float(np.mean([c[m] for c in per_client])) for m in METRIC_NAMES}
    out["worst_auroc"] = float(min(c["auroc"] for c in per_client))
    if all("val_auroc" in c for c in per_client):  # for model selection: validation, never test
        out["mean_val_auroc"] = float(np.mean([c["val_auroc"] for c in per_client]))
    return out
