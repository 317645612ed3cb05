"""A suite entry's objective_overrides apply to that dataset and objective only, after the
suite-wide objective_overrides (per-dataset settings chosen on validation)."""

from __future__ import annotations

from pqfl.benchmark.suite import Suite, expand_cases
from pqfl.config import parse_config


def test_entry_objective_overrides_apply_to_their_dataset_and_objective_only():
    suite = Suite.model_validate(
        {
            "name": "t",
            "objectives": ["supervised", "one_class"],
            "methods": ["pqfl"],
            "base": {"clients": [{"name": "a", "qubits": 2}], "federation": {"lr": 0.2, "lambda": 0.1}},
            "objective_overrides": {"one_class": {"federation.lr": 0.05}},
            "datasets": [
                {
                    "name": "d1",
                    "source": "sklearn:digits",
                    "overrides": {"federation.lambda": 0.3},
                    "objective_overrides": {"one_class": {"federation.lr": 0.01, "dataset.keep_norm": True}},
                },
                {"name": "d2", "source": "sklearn:digits"},
            ],
        }
    )
    got = {}
    for case in expand_cases(suite, None):
        fed = parse_config(case.config)
        got[(case.dataset, case.objective)] = (fed.federation.lr, fed.federation.lam, fed.dataset.keep_norm)
    assert got[("d1", "supervised")] == (0.2, 0.3, False)
    assert got[("d1", "one_class")] == (0.01, 0.3, True)
    assert got[("d2", "supervised")] == (0.2, 0.1, False)
    assert got[("d2", "one_class")] == (0.05, 0.1, False)
