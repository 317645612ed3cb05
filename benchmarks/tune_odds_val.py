"""Per-dataset settings of the ODDS suite, chosen on validation AUROC only, without Prefect.

Runs PQFL through the library's federation (``pqfl.federated.rounds``, the loop the
training flow runs; no MLflow, no Prefect server, so a grid over six datasets takes
minutes on two cores) and prints the mean-client **validation** AUROC after the last
round for each variant, next to the objective's per-client scikit-learn reference
(logistic regression or IsolationForest) on the same validation splits. Test metrics are
computed by ``evaluate`` but never printed.

    .venv/bin/python -m benchmarks.tune_odds_val benchmarks/suites/odds.yaml /work/shared/data/odds \\
        supervised variants.json --seeds 100,101,102,103

Tuning seeds must be apart from the suite's reporting seeds (the tool refuses an overlap): each seed is a
different subsample, partition and initialisation, and validation splits hold only a
handful of anomalies per client, so one seed's validation AUROC is a noisy guide.

A variants file maps a name to dotted overrides, applied on top of the suite's case
config *after* the suite's own per-dataset choices, so each candidate is fully specified
by the suite plus the file.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from pqfl.baselines import run_baseline
from pqfl.benchmark.suite import expand_cases, load_suite
from pqfl.config import parse_config
from pqfl.federated.client import evaluate_members
from pqfl.federated.rounds import Federation
from pqfl.fleet import prepare

REFERENCE = {"supervised": "logreg", "one_class": "iforest"}


def validation_aurocs(cfg, method: str = "pqfl") -> tuple[list[float], list, object]:
    """Per-client validation AUROC of ``method`` after ``federation.rounds`` rounds, plus
    the prepared client data and statistics (for the classical reference). The rounds only
    train; the final models are evaluated once, as the flow's last round evaluates them."""
    fed = cfg.federation
    fleet = prepare(cfg)
    result = Federation(fleet, method, fed, simulator=cfg.simulator).run(evaluate=False)
    evs = [
        evaluate_members(c, m, fed=fed, simulator=cfg.simulator, round_index=fed.rounds)
        for c, m in zip(result.clients, result.members)
    ]
    return [float(e.val_auroc) for e in evs], fleet.datas, fleet.stats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("data_dir")
    ap.add_argument("objective", choices=sorted(REFERENCE))
    ap.add_argument("variants", help="JSON file: {name: {dotted.path: value}}")
    ap.add_argument("--seeds", default="100,101,102,103", help="tuning seeds (keep them apart from the suite's)")
    ap.add_argument("--datasets", default="", help="comma-separated subset of the suite's datasets")
    args = ap.parse_args(argv)
    with open(args.variants) as fh:
        variants = json.load(fh)
    seeds = [int(s) for s in args.seeds.split(",")]
    wanted = [d for d in args.datasets.split(",") if d]
    ref = REFERENCE[args.objective]
    suite = load_suite(args.suite)
    reporting = set(suite.seeds) | {s for d in suite.datasets for s in (d.seeds or [])}
    if reporting & set(seeds):
        raise SystemExit(
            f"tuning seeds {sorted(reporting & set(seeds))} are reporting seeds of {args.suite}: "
            "choose settings on other seeds (e.g. --seeds 100,101,102), or the report tunes on its own splits"
        )
    cases = [
        c
        for c in expand_cases(suite, args.data_dir)
        if c.objective == args.objective and (not wanted or c.dataset in wanted)
    ]
    seen, table = set(), defaultdict(list)
    for case in cases:
        if case.dataset in seen:  # one case per dataset: the tuning seeds replace the suite's
            continue
        seen.add(case.dataset)
        for seed in seeds:
            cfg = parse_config(case.config).with_overrides({"federation.seed": seed})
            for i, (name, over) in enumerate(variants.items()):
                vals, datas, stats = validation_aurocs(cfg.with_overrides(over))
                if i == 0:
                    b = run_baseline(ref, "client", datas, stats, seed)
                    rv = [r.val_auroc for r in b["per_client"]]
                    table[(case.dataset, f"{ref}-client")].append(float(np.mean(rv)))
                    print(
                        json.dumps(
                            {
                                "dataset": case.dataset,
                                "seed": seed,
                                "variant": f"{ref}-client",
                                "val_auroc": round(float(np.mean(rv)), 3),
                                "per_client": [round(v, 3) for v in rv],
                            }
                        ),
                        flush=True,
                    )
                table[(case.dataset, name)].append(float(np.mean(vals)))
                print(
                    json.dumps(
                        {
                            "dataset": case.dataset,
                            "seed": seed,
                            "variant": name,
                            "val_auroc": round(float(np.mean(vals)), 3),
                            "per_client": [round(v, 3) for v in vals],
                        }
                    ),
                    flush=True,
                )
    datasets = list(dict.fromkeys(d for d, _ in table))
    names = list(dict.fromkeys(n for _, n in table))
    print(f"\nmean-client validation AUROC, mean over seeds {args.seeds}")
    print("| variant | " + " | ".join(datasets) + " |")
    print("|---" * (len(datasets) + 1) + "|")
    for n in names:
        print(f"| {n} | " + " | ".join(f"{np.mean(table[(d, n)]):.3f}" for d in datasets) + " |")


if __name__ == "__main__":
    main()
