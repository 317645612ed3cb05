"""The ODDS headline tables: counted from the benchmark JSON's rows and paired differences."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from benchmarks.odds_summary import main, paired_table, target_counts
from pqfl.benchmark.statistics import paired_difference, summary_table

DATASETS = ("cardio", "pendigits", "optdigits", "vowels", "wbc", "letter")
METHODS = {
    "supervised": ("pqfl", "fedavg", "local", "logreg-client"),
    "one_class": ("pqfl", "fedavg", "local", "iforest-client"),
}


def _payload(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    records = [
        {
            "dataset": d,
            "objective": o,
            "method": m,
            "kind": "x",
            "seed": s,
            **{
                k: float(rng.uniform(0.5, 1.0))
                for k in ("mean_auroc", "mean_aupr", "mean_false_error", "mean_missing_error", "worst_auroc")
            },
        }
        for d in DATASETS
        for o, ms in METHODS.items()
        for m in ms
        for s in range(4)
    ]
    for r in records:  # on cardio PQFL leads every method on every seed: an interval above 0
        if r["dataset"] == "cardio" and r["method"] == "pqfl":
            r["mean_auroc"] = 1.2 + 0.01 * r["seed"] ** 2
    table = summary_table(records)
    return {
        "rows": table.to_dict("records"),
        "paired_difference": paired_difference(pd.DataFrame(records)).to_dict("records"),
    }


def test_target_counts_follow_the_rows_and_the_intervals(tmp_path, capsys):
    payload = _payload()
    rows = pd.DataFrame(payload["rows"]).set_index(["dataset", "objective", "method"])["mean_auroc"]
    paired = pd.DataFrame(payload["paired_difference"])
    counts = target_counts(payload).set_index("target")
    for objective, other, need in (("supervised", "logreg-client", 4), ("one_class", "iforest-client", 3)):
        ahead = [d for d in DATASETS if rows[(d, objective, "pqfl")] >= rows[(d, objective, other)]]
        row = counts.loc[f"{objective} pqfl ≥ {other} on ≥ {need} of 6"]
        assert row["pqfl ≥ it (means)"].split(" ")[0] == str(len(ahead))
        assert row["met"] == ("yes" if len(ahead) >= need else "no")
        part = paired[(paired.objective == objective) & (paired.against == other)]
        assert row["interval above 0"].split(" ")[0] == str(int((part.ci_low > 0).sum()))
        assert "cardio" in row["interval above 0"] and "cardio" not in row["interval below 0"]
        assert row["interval below 0"].split(" ")[0] == str(int((part.ci_high < 0).sum()))
    cells = paired_table(payload).set_index("dataset")
    first = paired[(paired.objective == "supervised") & (paired.against == "fedavg")].iloc[0]
    assert cells.loc[first.dataset, "sup. pqfl − fedavg"].startswith(f"{first.difference:+.3f} [{first.ci_low:+.3f}")
    path = tmp_path / "odds.json"
    path.write_text(json.dumps({"rows": payload["rows"]}))  # an older JSON, without paired differences
    main([str(path)])
    out = capsys.readouterr().out
    assert "n/a" in out and "sup. pqfl − fedavg" not in out
