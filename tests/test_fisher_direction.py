"""The Fisher-direction diagnostic: the shared Fisher score alone, per client, on the suite's
supervised Fisher cases."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import roc_auc_score

from benchmarks.fisher_direction import direction_aurocs, main
from pqfl.baselines import run_baseline
from pqfl.config import parse_config
from pqfl.fleet import prepare
from tests.test_benchmark import TINY_SUITE, _odds_like


def _suite(tmp_path):
    _odds_like(tmp_path / "toy.mat")
    suite = {**TINY_SUITE, "methods": ["pqfl"]}
    suite["datasets"] = [
        {**TINY_SUITE["datasets"][0], "objective_overrides": {"supervised": {"dataset.projection": "fisher"}}}
    ]
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    return tmp_path / "suite.yaml"


def test_the_fisher_score_ranks_as_pooled_lda_and_logreg_is_the_benchmarks_reference(tmp_path):
    from pqfl.benchmark.suite import expand_cases, load_suite

    case = next(c for c in expand_cases(load_suite(_suite(tmp_path)), tmp_path) if c.objective == "supervised")
    cfg = parse_config(case.config).with_overrides({"dataset.fisher_ridge": 0.0})
    got = direction_aurocs(cfg)
    fleet = prepare(cfg)
    datas, stats = fleet.datas, fleet.stats
    # The federated direction is pooled LDA's (scikit-learn, on all clients' training rows together).
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(
        np.concatenate([d.X_train for d in datas]), np.concatenate([d.y_train for d in datas])
    )
    expected = np.mean([roc_auc_score(d.y_test, lda.decision_function(d.X_test)) for d in datas])
    assert got["fisher test"] == pytest.approx(expected, abs=1e-9)
    ref = run_baseline("logreg", "client", datas, stats, cfg.federation.seed)["per_client"]
    assert got["logreg-client test"] == pytest.approx(np.mean([r.auroc for r in ref]), abs=1e-12)


def test_the_table_has_the_fisher_cases_only(tmp_path, capsys):
    main([str(_suite(tmp_path)), str(tmp_path)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| toy")]
    assert len(rows) == 1  # supervised toy uses fisher; one_class cannot
    values = [float(v) for v in rows[0].strip("|").split("|")[1:]]
    assert len(values) == 4 and all(0.0 <= v <= 1.0 for v in values)
