"""Diagnostic: how well the federated Fisher direction alone ranks anomalies.

With ``dataset.projection: fisher`` the server derives, from the clients' summed
statistics, the Fisher discriminant direction w (pqfl.data.preprocessing) and every client
reads its score as its first input. Scoring a client's rows by that one linear projection,
with no circuit and no training, is a classical federated detector built from exactly what
PQFL's preprocessing already shares. This prints its mean-client AUROC per dataset (on
validation and on test, suite seeds) next to per-client logistic regression's, for the
suite's supervised Fisher cases. It chooses nothing; it shows what the shared statistics
alone are worth.

    .venv/bin/python -m benchmarks.fisher_direction benchmarks/suites/odds.yaml ../shared/data/odds
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from sklearn.metrics import roc_auc_score

from pqfl.baselines import run_baseline
from pqfl.benchmark.suite import expand_cases, load_suite
from pqfl.config import parse_config
from pqfl.fleet import prepare


def direction_aurocs(cfg) -> dict[str, float]:
    """Mean-client validation and test AUROC of the Fisher score, and of logreg-client."""
    fleet = prepare(cfg)
    datas, stats = fleet.datas, fleet.stats
    w = stats.eigvecs[:, 0]
    score = lambda X: ((X - stats.mean) / stats.scale) @ w  # noqa: E731
    ref = run_baseline("logreg", "client", datas, stats, cfg.federation.seed)["per_client"]
    return {
        "fisher val": float(np.mean([roc_auc_score(d.y_val, score(d.X_val)) for d in datas])),
        "fisher test": float(np.mean([roc_auc_score(d.y_test, score(d.X_test)) for d in datas])),
        "logreg-client val": float(np.mean([r.val_auroc for r in ref])),
        "logreg-client test": float(np.mean([r.auroc for r in ref])),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("data_dir")
    args = ap.parse_args(argv)
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for case in expand_cases(load_suite(args.suite), args.data_dir):
        cfg = parse_config(case.config)
        if case.objective != "supervised" or cfg.dataset.projection != "fisher":
            continue
        for k, v in direction_aurocs(cfg).items():
            table[case.dataset][k].append(v)
    cols = ["fisher val", "logreg-client val", "fisher test", "logreg-client test"]
    print("| dataset | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for dataset, row in table.items():
        print(f"| {dataset} | " + " | ".join(f"{np.mean(row[c]):.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
