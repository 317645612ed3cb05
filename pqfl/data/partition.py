"""Non-IID partition of a dataset over clients, anomaly labelling, per-client splits.

Samples of each class are spread over clients by Dirichlet(α) proportions (label skew),
optionally scaled by lognormal client sizes (quantity skew). Anomalies are then defined
per client: ``global`` — the configured normal classes are normal everywhere;
``context`` — each client's own most frequent classes are normal there, so a class that
is normal at one client is an anomaly at another. ``anomaly_classes`` narrows which
non-normal classes supply the anomalies (anomaly-type sensitivity); the anomalies kept
per client follow ``anomaly_ratio``. Sources that carry anomaly labels (ODDS) keep them. Each client's rows are split train/val/test, stratified by label.

Every client needs ``min_anomalies`` anomalies and as many normal rows. When the data as a
whole has too few (:func:`shortage`), no redraw can help, so the error says what is missing
instead of suggesting a different Dirichlet α.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split

from pqfl.config import PartitionConfig
from pqfl.data.sources import Dataset
from pqfl.errors import PQFLInputError
from pqfl.rng import derive_rng, derive_seed


@dataclass
class ClientData:
    """One client's private data: raw features and anomaly labels (1 = anomaly) per split."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    normal_classes: list[int] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        return len(self.y_train)


def _dirichlet_assign(y: np.ndarray, n_clients: int, alpha: float, skew: float, rng) -> list[np.ndarray]:
    sizes = rng.lognormal(0.0, skew, n_clients) if skew > 0 else np.ones(n_clients)
    owned: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        p = rng.dirichlet(np.full(n_clients, alpha)) * sizes
        counts = rng.multinomial(len(idx), p / p.sum())
        for n, part in enumerate(np.split(idx, np.cumsum(counts)[:-1])):
            owned[n].append(part)
    return [np.sort(np.concatenate(parts)) for parts in owned]


def _label_client(y_rows: np.ndarray, ds: Dataset, cfg: PartitionConfig, normal_global: list[int], rng):
    """Return (kept row positions, anomaly labels, normal classes) for one client's rows."""
    if ds.anomaly_labels:
        return np.arange(len(y_rows)), y_rows.astype(np.int64), [0]
    if cfg.normal == "global":
        normal = sorted(normal_global)
    else:
        classes, counts = np.unique(y_rows, return_counts=True)
        order = np.lexsort((classes, -counts))
        normal = sorted(classes[order[: cfg.normal_classes_per_client]].tolist())
    is_normal = np.isin(y_rows, normal)
    normal_pos = np.flatnonzero(is_normal)
    candidates = ~is_normal if cfg.anomaly_classes is None else ~is_normal & np.isin(y_rows, cfg.anomaly_classes)
    anomaly_pos = np.flatnonzero(candidates)
    target = max(cfg.min_anomalies, int(round(cfg.anomaly_ratio / (1 - cfg.anomaly_ratio) * len(normal_pos))))
    chosen = rng.choice(anomaly_pos, size=min(target, len(anomaly_pos)), replace=False)
    keep = np.sort(np.concatenate([normal_pos, chosen]))
    return keep, (~is_normal[keep]).astype(np.int64), normal


def _split(idx: np.ndarray, labels: np.ndarray, cfg: PartitionConfig, seed: int):
    rest, test, y_rest, y_test = train_test_split(
        idx, labels, test_size=cfg.test, stratify=labels, random_state=seed % (2**31)
    )
    train, val, y_train, y_val = train_test_split(
        rest, y_rest, test_size=cfg.val / (cfg.train + cfg.val), stratify=y_rest, random_state=(seed + 1) % (2**31)
    )
    return (train, y_train), (val, y_val), (test, y_test)


def _cap(train: np.ndarray, y: np.ndarray, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` of the training rows, stratified by label (scikit-learn's split), so a
    capped client keeps its share of anomalies and at least one of each label. Dropping
    fewer rows than there are labels cannot be stratified (scikit-learn refuses): those
    few are dropped at random from the commonest label."""
    drop = len(y) - rows
    if drop < len(np.unique(y)):
        labels, counts = np.unique(y, return_counts=True)
        commonest = np.flatnonzero(y == labels[np.argmax(counts)])
        gone = np.random.default_rng(seed % (2**31)).choice(commonest, size=drop, replace=False)
        keep = np.setdiff1d(np.arange(len(y)), gone)
        return train[keep], y[keep]
    kept, _, y_kept, _ = train_test_split(train, y, train_size=rows, stratify=y, random_state=seed % (2**31))
    return kept, y_kept


def shortage(ds: Dataset, n_clients: int, cfg: PartitionConfig, normal_classes: list[int]) -> tuple[str, str]:
    """What makes every draw fail, judged from the data's totals: (what the data has, the
    fix), or ("", "") when the totals suffice. Each client needs ``min_anomalies`` anomalies
    and as many normal rows."""
    m, k = cfg.min_anomalies, n_clients
    if not ds.anomaly_labels and cfg.normal == "context":  # each client's own commonest classes are normal
        n_classes = len(np.unique(ds.y))
        if cfg.anomaly_classes is None and n_classes <= cfg.normal_classes_per_client:
            return (
                f"{n_classes} classes, all of them normal at every client (partition.normal_classes_per_client = "
                f"{cfg.normal_classes_per_client}), so no anomalies",
                "lower partition.normal_classes_per_client",
            )
        supply = [(f"rows ({m} anomalies + {m} normal rows per client)", len(ds.y), 2 * m * k, "")]
        if cfg.anomaly_classes is not None:
            supply.append(
                ("rows of partition.anomaly_classes", int(np.isin(ds.y, cfg.anomaly_classes).sum()), m * k, "")
            )
    elif ds.anomaly_labels:
        supply = [
            ("anomalies (y = 1 rows)", int((ds.y == 1).sum()), m * k, "use data with labelled anomalies"),
            ("normal rows (y = 0)", int((ds.y == 0).sum()), m * k, "use data with normal rows"),
        ]
    else:
        normal = np.isin(ds.y, normal_classes)
        anomalous = ~normal if cfg.anomaly_classes is None else ~normal & np.isin(ds.y, cfg.anomaly_classes)
        supply = [
            (
                "anomalies (rows outside dataset.normal_classes)",
                int(anomalous.sum()),
                m * k,
                "make fewer classes normal (dataset.normal_classes)",
            ),
            ("normal rows (of dataset.normal_classes)", int(normal.sum()), m * k, ""),
        ]
    for what, have, need, fix_for_none in supply:
        if have == 0 and fix_for_none:
            return f"no {what}", fix_for_none
        if have < need:
            return (
                f"{have} {what}, fewer than the {need} that {k} clients take with partition.min_anomalies = {m}",
                "lower partition.min_anomalies or use fewer clients",
            )
    return "", ""


def partition(
    ds: Dataset,
    client_names: list[str],
    cfg: PartitionConfig,
    normal_classes: list[int],
    seed: int,
    attempts: int = 200,
) -> list[ClientData]:
    """Spread ``ds`` over the named clients; identical output for identical inputs and seed.

    A draw that leaves a client without ``min_anomalies`` anomalies (or normal rows) is
    redrawn from the next attempt's stream, so the partition follows the Dirichlet
    conditioned on that minimum, and a seed that succeeds at attempt k gives the same
    partition whatever ``attempts`` is (wbc, 21 anomalies over four clients: seed 4 of the
    ODDS suite needs more than 25 attempts).
    """
    n_clients = len(client_names)
    present = set(np.unique(ds.y).tolist())
    if not ds.anomaly_labels and cfg.normal == "global":
        missing = sorted(set(normal_classes) - present)
        if missing:
            raise PQFLInputError(
                f"dataset.normal_classes: classes {missing} do not occur in {ds.name}; pick existing classes"
            )
    if not ds.anomaly_labels and cfg.anomaly_classes is not None:
        missing = sorted(set(cfg.anomaly_classes) - present)
        if missing:
            raise PQFLInputError(
                f"partition.anomaly_classes: classes {missing} do not occur in {ds.name}; pick existing classes"
            )
        if cfg.normal == "global" and set(cfg.anomaly_classes) <= set(normal_classes):
            raise PQFLInputError(
                "partition.anomaly_classes: every listed class is also in dataset.normal_classes; list classes that are not normal"
            )
    start = f"partition: could not give every client at least {cfg.min_anomalies} anomalies and normal samples"
    missing, fix = shortage(ds, n_clients, cfg, normal_classes)
    if missing:
        raise PQFLInputError(f"{start}: the data ({ds.name}) has {missing}; {fix}")
    problem = ""
    for attempt in range(attempts):
        rng = derive_rng(seed, "partition", attempt)
        owned = _dirichlet_assign(ds.y, n_clients, cfg.alpha, cfg.quantity_skew, rng)
        clients: list[ClientData] = []
        for n, rows in enumerate(owned):
            keep, labels, normal = _label_client(ds.y[rows], ds, cfg, normal_classes, rng)
            rows = rows[keep]
            n_anom = int(labels.sum())
            if n_anom < cfg.min_anomalies or len(labels) - n_anom < cfg.min_anomalies:
                problem = f"client {client_names[n]!r} got {n_anom} anomalies and {len(labels) - n_anom} normal samples"
                break
            (tr, ytr), (va, yva), (te, yte) = _split(rows, labels, cfg, derive_seed(seed, "split", attempt, n))
            if cfg.max_train_rows is not None and len(tr) > cfg.max_train_rows:
                tr, ytr = _cap(tr, ytr, cfg.max_train_rows, derive_seed(seed, "cap", attempt, n))
            clients.append(
                ClientData(client_names[n], ds.X[tr], ytr, ds.X[va], yva, ds.X[te], yte, [int(c) for c in normal])
            )
        else:
            return clients
    raise PQFLInputError(
        f"{start} ({problem}); raise partition.alpha, lower partition.min_anomalies or use fewer clients"
    )
