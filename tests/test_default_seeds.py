"""``benchmarks.default_seeds --add`` trains only the (method, seed) rows a table lacks."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

import benchmarks.default_seeds as default_seeds
from pqfl.config import load_config


def test_adding_trains_only_the_missing_methods_and_seeds(monkeypatch):
    trained = []

    def recording(fleet, method, fed, **options):  # the selection is under test, not the training
        trained.append((method, fed.seed))
        summary = SimpleNamespace(mean_auroc=0.5 + 0.01 * len(trained), worst_auroc=0.5)
        return SimpleNamespace(summary=summary, selected_rounds=[1])

    monkeypatch.setattr(default_seeds, "run_federation", recording)
    methods = load_config().federation.methods
    done = pd.DataFrame(
        [{"seed": 0, "method": m, "mean_auroc": 0.7, "worst_auroc": 0.6} for m in methods[:-1]]
        + [{"seed": 0, "method": "logreg-client", "mean_auroc": 0.9, "worst_auroc": 0.8}]
    )
    frame = default_seeds.run([0, 1], done)
    assert trained == [(methods[-1], 0), *((m, 1) for m in methods)]
    pd.testing.assert_frame_equal(frame.iloc[: len(done)][done.columns], done)
    first, second = (frame[frame.seed == s] for s in (0, 1))
    assert len(first) == len(done) + 1  # seed 0's reference is not refitted
    assert set(methods) | {"logreg-client"} <= set(second.method)  # a new seed gets its reference
    text = default_seeds.report(frame)
    assert "`fedenc` − its control `local_enc`" in text  # the default lists both
    order = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert order[-2:] == ["logreg-client", "logreg-pooled"] and order.index("local_enc") < order.index("logreg-client")
