"""Per-dataset settings of the ODDS suite, chosen on validation AUROC only, without Prefect.

Runs PQFL through the library's own round loop (the same steps as ``flows/train.py``:
``init_global`` → per client ``local_round`` → ``masked_average`` weighted by training
size → ``evaluate``; no MLflow, no Prefect server, so a grid over six datasets takes
minutes on two cores) and prints the mean-client **validation** AUROC after the last
round for each variant. Test metrics are computed by ``evaluate`` but never printed.

    .venv/bin/python -m benchmarks.tune_odds_val benchmarks/suites/odds.yaml /work/shared/data/odds one_class [seed]

Variants are dotted overrides applied on top of the suite's case config *after* the
suite's own per-dataset choices, so each candidate is fully specified below.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from flows.benchmark import expand_cases, load_suite
from pqfl.config import parse_config
from pqfl.experiment import prepare
from pqfl.federated.aggregation import block_of, masked_average
from pqfl.federated.client import evaluate, init_state, local_round
from pqfl.federated.methods import RULES, prox_weight
from pqfl.federated.server import init_global

BASE = {"federation.lr": 0.2, "federation.local_epochs": 5}
VARIANTS = {
    "supervised": {
        "plain lambda=0.1": {**BASE, "dataset.keep_norm": False, "dataset.keep_residual": False, "federation.lambda": 0.1},
        **{
            f"keep_norm lambda={lam}": {**BASE, "dataset.keep_norm": True, "dataset.keep_residual": False, "federation.lambda": lam}
            for lam in (0.01, 0.03, 0.1, 0.3)
        },
        **{
            f"keep_norm+residual lambda={lam}": {**BASE, "dataset.keep_norm": True, "dataset.keep_residual": True,
                                                 "federation.lambda": lam}
            for lam in (0.01, 0.03, 0.1, 0.3)
        },
    },
    "one_class": {
        "initial_mean plain lr.2": {**BASE, "federation.one_class_center": "initial_mean", "dataset.keep_norm": False, "dataset.keep_residual": False},
        "initial_mean keep_norm lr.2": {**BASE, "federation.one_class_center": "initial_mean", "dataset.keep_norm": True, "dataset.keep_residual": False},
        "zero_state keep_norm lr.2": {**BASE, "federation.one_class_center": "zero_state", "dataset.keep_norm": True, "dataset.keep_residual": False},
        "zero_state keep_norm lr.05-ep2": {"federation.lr": 0.05, "federation.local_epochs": 2,
                                           "federation.one_class_center": "zero_state", "dataset.keep_norm": True, "dataset.keep_residual": False},
        "zero_state plain lr.2": {**BASE, "federation.one_class_center": "zero_state", "dataset.keep_norm": False, "dataset.keep_residual": False},
        "zero_state plain lr.05-ep2": {"federation.lr": 0.05, "federation.local_epochs": 2,
                                       "federation.one_class_center": "zero_state", "dataset.keep_norm": False, "dataset.keep_residual": False},
    },
}


def validation_auroc(cfg, method: str = "pqfl") -> float:
    """Mean-client validation AUROC of ``method`` after ``federation.rounds`` rounds."""
    fed, sim = cfg.federation, cfg.simulator
    setups, _, _ = prepare(cfg)
    G = init_global(cfg.max_layers, cfg.max_qubits, fed.seed)
    states = [init_state(s, block_of(G, s.spec.layers, s.spec.qubits), fed.seed) for s in setups]
    rule, prox = RULES[method], prox_weight(method, fed.lam, fed.mu)
    for k in range(1, fed.rounds + 1):
        blocks = [block_of(G, s.spec.layers, s.spec.qubits) for s in setups]
        starts = blocks if rule.start_from_global else [st.theta for st in states]
        anchors = blocks if rule.prox else [None] * len(setups)
        for i, s in enumerate(setups):
            states[i], _ = local_round(s, states[i], start_theta=starts[i], anchor=anchors[i], prox=prox, fed=fed,
                                       simulator=sim, round_index=k)
        if rule.uploads:
            G = masked_average(G, [st.theta for st in states], [s.n_train for s in setups])
    evs = [evaluate(s, st, st.theta if rule.evaluate_personal else block_of(G, s.spec.layers, s.spec.qubits), fed=fed,
                    simulator=sim, round_index=fed.rounds) for s, st in zip(setups, states)]
    return float(np.mean([e["val_auroc"] for e in evs]))


def main(suite_path: str, data_dir: str, objective: str, seed: int = 0) -> None:
    suite = load_suite(suite_path)
    for case in expand_cases(suite, data_dir):
        if case.objective != objective or case.seed != seed:
            continue
        cfg = parse_config(case.config)
        for name, over in VARIANTS[objective].items():
            val = validation_auroc(cfg.with_overrides(over))
            print(json.dumps({"dataset": case.dataset, "variant": name, "val_auroc": round(val, 3)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
