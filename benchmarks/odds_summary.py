"""The headline tables of benchmarks/reports/odds.md, computed from a benchmark's --json.

Issue 6's targets on the six ODDS datasets, counted from the rows (mean-client test
AUROC, mean over the suite's seeds), beside the same comparisons paired by seed
(``paired_difference`` in the JSON): the mean difference, its 95% paired-t interval and
on how many seeds PQFL was ahead.

    .venv/bin/python -m benchmarks.odds_summary /tmp/odds.json
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from pqfl.benchmark.report import markdown_table

# (objective, the method PQFL is compared with, at least this many datasets)
TARGETS = (("supervised", "fedavg", 4), ("supervised", "logreg-client", 4), ("one_class", "iforest-client", 3))
MAIN_COLUMNS = (
    ("supervised", "pqfl"),
    ("supervised", "fedavg"),
    ("supervised", "local"),
    ("supervised", "logreg-client"),
    ("one_class", "pqfl"),
    ("one_class", "fedavg"),
    ("one_class", "local"),
    ("one_class", "iforest-client"),
)
SHORT = {"supervised": "sup.", "one_class": "1-class"}


def _listed(names: list[str]) -> str:
    return f"{len(names)} ({', '.join(names)})" if names else "0"


def target_counts(payload: dict) -> pd.DataFrame:
    """Per target: datasets where PQFL's mean ≥ the other's, and where the paired interval is above 0 / below 0."""
    rows = pd.DataFrame(payload["rows"])
    paired = pd.DataFrame(payload.get("paired_difference", []))
    out = []
    for objective, other, need in TARGETS:
        wide = rows[rows.objective == objective].pivot(index="dataset", columns="method", values="mean_auroc")
        ahead = sorted(wide.index[wide["pqfl"] >= wide[other]])
        row = {
            "target": f"{objective} pqfl ≥ {other} on ≥ {need} of {len(wide)}",
            "pqfl ≥ it (means)": _listed(ahead),
            "met": "yes" if len(ahead) >= need else "no",
            "interval above 0": "n/a",
            "interval below 0": "n/a",
        }  # n/a: a JSON without paired differences
        if len(paired):
            part = paired[(paired.objective == objective) & (paired.against == other)]
            row["interval above 0"] = _listed(sorted(part.dataset[part.ci_low > 0]))
            row["interval below 0"] = _listed(sorted(part.dataset[part.ci_high < 0]))
        out.append(row)
    return pd.DataFrame(out)


def main_table(payload: dict) -> pd.DataFrame:
    rows = pd.DataFrame(payload["rows"])
    cells = rows.set_index(["dataset", "objective", "method"])["mean_auroc"]
    datasets = list(dict.fromkeys(rows["dataset"]))
    table = {"dataset": datasets}
    for objective, method in MAIN_COLUMNS:
        table[f"{SHORT[objective]} {method}"] = [
            f"{cells.get((d, objective, method), float('nan')):.3f}" for d in datasets
        ]
    return pd.DataFrame(table)


def paired_table(payload: dict) -> pd.DataFrame:
    paired = pd.DataFrame(payload["paired_difference"])
    out = {}
    for objective, other, _ in TARGETS:
        part = paired[(paired.objective == objective) & (paired.against == other)].set_index("dataset")
        out[f"{SHORT[objective]} pqfl − {other}"] = {
            d: f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] {r['pqfl >= it']}/{r.seeds}"
            for d, r in part.iterrows()
        }
    return pd.DataFrame(out).rename_axis("dataset").reset_index()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="the --json file of `pqfl benchmark --suite benchmarks/suites/odds.yaml`")
    payload = json.loads(open(ap.parse_args(argv).json).read())
    tables = [target_counts(payload), main_table(payload)]
    tables += [paired_table(payload)] if payload.get("paired_difference") else []
    print("\n\n".join(markdown_table(t) for t in tables))


if __name__ == "__main__":
    main()
