"""The ODDS tuning tool: validation AUROC only, on tuning seeds, averaged over them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from benchmarks.tune_odds_val import main
from tests.test_benchmark import TINY_SUITE, _odds_like


def test_tuning_prints_validation_only_and_averages_the_tuning_seeds(tmp_path, capsys):
    _odds_like(tmp_path / "toy.mat")
    suite = {**TINY_SUITE, "methods": ["pqfl"]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    variants = {"as is": {}, "lambda 1": {"federation.lambda": 1.0}}
    (tmp_path / "v.json").write_text(json.dumps(variants))
    main([str(tmp_path / "suite.yaml"), str(tmp_path), "supervised", str(tmp_path / "v.json"), "--seeds", "7,8"])
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    # One line per seed for the reference and for each variant; the suite's own seeds (0, 1) are not used.
    assert sorted({r["seed"] for r in rows}) == [7, 8]
    assert [r["variant"] for r in rows if r["seed"] == 7] == ["logreg-client", "as is", "lambda 1"]
    # Nothing but validation figures is printed.
    assert all(set(r) == {"dataset", "seed", "variant", "val_auroc", "per_client"} for r in rows)
    assert "test" not in out.lower()
    for r in rows:
        assert len(r["per_client"]) == 2 and abs(r["val_auroc"] - np.mean(r["per_client"])) < 1e-3
    # The table's cell is the mean over the tuning seeds.
    table = {
        line.split("|")[1].strip(): float(line.split("|")[2])
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| variant")
    }
    for name in ("logreg-client", "as is", "lambda 1"):
        seeds = [r["val_auroc"] for r in rows if r["variant"] == name]
        assert abs(table[name] - np.mean(seeds)) < 2e-3
    # The variant was applied: a strong proximal pull changes PQFL's validation scores.
    assert [r["per_client"] for r in rows if r["variant"] == "as is"] != [
        r["per_client"] for r in rows if r["variant"] == "lambda 1"
    ]


def test_tuning_refuses_the_suites_reporting_seeds(tmp_path):
    suite = {**TINY_SUITE, "methods": ["pqfl"]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    (tmp_path / "v.json").write_text(json.dumps({"as is": {}}))
    with pytest.raises(SystemExit, match=r"tuning seeds \[1\] are reporting seeds"):
        main([str(tmp_path / "suite.yaml"), str(tmp_path), "supervised", str(tmp_path / "v.json"), "--seeds", "7,1"])
