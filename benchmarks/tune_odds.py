"""Choose the ODDS suite's training settings on validation data only.

For each variant (dotted overrides on the suite's base config) and each dataset of a
suite, run the quantum methods through the real training flow and the scikit-learn
references, and print mean-client *validation* AUROC. Test metrics are not read.

    .venv/bin/python -m benchmarks.tune_odds benchmarks/suites/odds.yaml ../shared/data/odds supervised
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from flows.benchmark import expand_cases, load_suite
from flows.train import pqfl_train
from pqfl.baselines import run_baselines
from pqfl.config import parse_config
from pqfl.experiment import prepare

VARIANTS = {
    "lr.05-ep2-lam.01": {"federation.lr": 0.05, "federation.local_epochs": 2, "federation.lambda": 0.01},
    "lr.2-ep5-lam.01": {"federation.lr": 0.2, "federation.local_epochs": 5, "federation.lambda": 0.01},
    "lr.2-ep5-lam.1": {"federation.lr": 0.2, "federation.local_epochs": 5, "federation.lambda": 0.1},
    "lr.2-ep5-lam1": {"federation.lr": 0.2, "federation.local_epochs": 5, "federation.lambda": 1.0},
}


def main(suite_path: str, data_dir: str, objective: str, variants: list[str] | None = None, seeds=(0,)) -> None:
    suite = load_suite(suite_path)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in expand_cases(suite, data_dir):
            if case.objective != objective or case.seed not in seeds:
                continue
            cfg = parse_config(case.config).with_overrides({"tracking.experiment": "pqfl-tune-odds"})
            _, datas, stats = prepare(cfg)
            for ref in run_baselines(datas, stats, objective, case.seed):
                if ref["method"].endswith("-client"):
                    rows.append({"dataset": case.dataset, "variant": "-", "method": ref["method"], "val": ref["mean_val_auroc"]})
            for name in variants or list(VARIANTS):
                path = Path(tmp) / "cfg.yaml"
                path.write_text(yaml.safe_dump(cfg.with_overrides(VARIANTS[name]).model_dump(mode="json", by_alias=True)))
                result = pqfl_train(str(path))
                for method, r in result["methods"].items():
                    rows.append({"dataset": case.dataset, "variant": name, "method": method, "val": r["mean_val_auroc"]})
                print(json.dumps(rows[-3:]), flush=True)
    frame = pd.DataFrame(rows)
    print(frame.pivot_table(index=["variant", "method"], columns="dataset", values="val").round(3).to_string())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",") if len(sys.argv) > 4 else None)
