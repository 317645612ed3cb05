"""Choose λ (and the learning rate) for PQFL on the default scenario by *validation* AUROC.

Runs the real training flow over a small grid and several seeds and prints, per setting,
the mean over seeds of the mean-client validation AUROC (the selection criterion) next
to the test AUROC (reported, never used to choose). Usage:

    .venv/bin/python -m benchmarks.tune_default [--seeds 0,1,2] [--lambdas 0.01,0.1,1] [--lrs 0.05]
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pandas as pd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lambdas", default="0.01,0.03,0.1,0.3,1.0")
    ap.add_argument("--lrs", default="0.05")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    from flows.train import pqfl_train
    from pqfl.compile_cache import enable_persistent_cache

    enable_persistent_cache()
    store = tempfile.mkdtemp(prefix="pqfl-tune-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    rows = []
    seeds = [int(s) for s in args.seeds.split(",")]
    base = {"federation.rounds": args.rounds} if args.rounds else {}
    for lr in [float(v) for v in args.lrs.split(",")]:
        for seed in seeds:
            over = {**base, "federation.seed": seed, "federation.lr": lr, "federation.methods": ["local", "fedavg", "fedprox"]}
            res = pqfl_train(args.config, over)
            for m, r in res["methods"].items():
                rows.append({"method": m, "lambda": None, "lr": lr, "seed": seed, "val": r["mean_val_auroc"], "test": r["mean_auroc"]})
            for lam in [float(v) for v in args.lambdas.split(",")]:
                res = pqfl_train(args.config, {**over, "federation.methods": ["pqfl"], "federation.lambda": lam})
                r = res["methods"]["pqfl"]
                rows.append({"method": "pqfl", "lambda": lam, "lr": lr, "seed": seed, "val": r["mean_val_auroc"], "test": r["mean_auroc"]})
    frame = pd.DataFrame(rows)
    table = frame.groupby(["method", "lambda", "lr"], dropna=False)[["val", "test"]].agg(["mean", "std"])
    print(table.sort_values(("val", "mean"), ascending=False).to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
