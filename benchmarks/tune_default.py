"""Choose λ (and the learning rate) for PQFL on the default scenario by *validation* AUROC.

Runs the library's federation (``pqfl.run_federation``, no Prefect or MLflow) over a small
grid and several seeds and prints, per setting, the mean over seeds of the mean-client
validation AUROC (the selection criterion) next to the test AUROC (reported, never used
to choose). Usage:

    .venv/bin/python -m benchmarks.tune_default [--seeds 0,1,2] [--lambdas 0.01,0.1,1] [--lrs 0.05]
"""

from __future__ import annotations

import argparse

import pandas as pd

from pqfl.compile_cache import enable_persistent_cache
from pqfl.config import load_config
from pqfl.federated.rounds import run_federation
from pqfl.federated.strategies import PQFL
from pqfl.fleet import prepare


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lambdas", default="0.01,0.03,0.1,0.3,1.0")
    ap.add_argument("--lrs", default="0.05")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    enable_persistent_cache()
    base = load_config(args.config)
    rows = []
    for lr in [float(v) for v in args.lrs.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            over = {"federation.seed": seed, "federation.lr": lr}
            if args.rounds:
                over["federation.rounds"] = args.rounds
            cfg = base.with_overrides(over)
            fleet = prepare(cfg)
            runs = [(m, None, m) for m in ("local", "fedavg", "fedprox")]
            runs += [("pqfl", lam, PQFL(lam=lam)) for lam in [float(v) for v in args.lambdas.split(",")]]
            for method, lam, strategy in runs:
                summary = run_federation(fleet, strategy, cfg.federation, simulator=cfg.simulator).summary
                rows.append(
                    {
                        "method": method,
                        "lambda": lam,
                        "lr": lr,
                        "seed": seed,
                        "val": summary.mean_val_auroc,
                        "test": summary.mean_auroc,
                    }
                )
    frame = pd.DataFrame(rows)
    table = frame.groupby(["method", "lambda", "lr"], dropna=False)[["val", "test"]].agg(["mean", "std"])
    print(table.sort_values(("val", "mean"), ascending=False).to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
