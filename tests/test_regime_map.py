"""The regime map: its cells' configs, its verdicts on hand-made results, resuming from its
CSV, and one tiny map run as the Prefect flow its weekly deployment runs."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Prefect's log handlers keep the sys.stderr of their set-up (on importing prefect.main): set them up
# at collection, before pytest starts capturing per test.
import prefect.main  # noqa: F401
import pytest
from mlflow.tracking import MlflowClient
from prefect.server.api.server import SubprocessASGIServer

from benchmarks.regime_map import CELL, check_methods, config, grid, pending, plot, record, report, verdicts
from pqfl.config import parse_config
from pqfl.fleet import load_and_partition
from tests.servers import reporting_to


def test_cells_set_rows_skew_anomalies_and_hardware_and_nothing_else():
    base = parse_config(config("all", "1", "shared", "heterogeneous", 3))
    capped = parse_config(config("32", "0.1", "context", "identical", 3))
    assert base.partition.max_train_rows is None and capped.partition.max_train_rows == 32
    assert (base.partition.alpha, capped.partition.alpha) == (1.0, 0.1)
    assert base.partition.normal == "global" and base.dataset.normal_classes == [0, 1, 2, 3, 4]
    assert capped.partition.normal == "context" and capped.partition.normal_classes_per_client == 2
    assert len({repr(c.model_dump(exclude={"name"})) for c in base.clients}) == 4  # the default's four profiles
    assert len({repr(c.model_dump(exclude={"name"})) for c in capped.clients}) == 1
    assert base.federation == capped.federation and base.federation.select == "best_val"
    datas = load_and_partition(capped)
    assert all(d.n_train <= 32 for d in datas) and max(d.n_train for d in datas) == 32


def test_grid_and_methods_refuse_unknown_values():
    assert len(grid()) == 5 * 3 * 2 * 2
    with pytest.raises(ValueError, match=r"rows: unknown \['17'\]"):
        grid(rows=["17"])
    with pytest.raises(ValueError, match="methods: add fedavg"):
        check_methods(["local", "pqfl"])
    with pytest.raises(ValueError, match=r"methods: unknown \['scaffold'\]"):
        check_methods(["local", "fedavg", "scaffold"])


def _frame() -> pd.DataFrame:
    """Two cells over three seeds: 'good' beats local and fedavg in the first by 0.1 ± noise,
    and ties local in the second."""
    rows = []
    for rows_, gain in (("16", 0.1), ("all", 0.0)):
        for seed, noise in enumerate((0.0, 0.01, -0.01)):
            keys = dict(rows=rows_, alpha="1", anomalies="shared", hardware="identical", seed=seed, train_rows=16.0)
            for method, auroc in (("local", 0.7), ("fedavg", 0.65), ("good", 0.7 + gain + noise)):
                rows.append({**keys, "method": method, "mean_auroc": auroc + (noise if method == "local" else 0)})
    return pd.DataFrame(rows)


def test_verdicts_pair_by_seed_and_name_the_winners():
    v = verdicts(_frame()).set_index(["rows", "method"])
    assert v.loc[("16", "good"), "vs_local"] == pytest.approx(0.1)
    assert v.loc[("16", "good"), "beats_local"] and v.loc[("16", "good"), "beats_fedavg"]
    assert not v.loc[("all", "good"), "beats_local"]  # a tie: its interval holds 0
    assert v.loc[("all", "good"), "beats_fedavg"]
    text = report(_frame(), 60.0, "python -m benchmarks.regime_map --seeds 0,1,2")
    assert "| good | 16 |" in text  # the summary names the cell it won
    assert "0.800 ✓LF" in text and "seeds 0, 1, 2; 2 cells" in text
    assert "--seeds 0,1,2" in text
    assert "against its control" not in text  # no method here has one


def test_a_method_is_paired_with_its_control_cell_by_cell():
    frame = _frame()
    shared = frame[frame.method == "good"].assign(method="fedenc")
    alone = frame[frame.method == "local"].assign(method="local_enc")  # 0.7 + noise: below 'good' in cell 16
    text = report(pd.concat([frame, shared, alone]), None, "")
    assert "`fedenc` against its control `local_enc` (the same model trained alone): above it beyond noise in 1 of " \
           "2 cells, below in 0; mean difference +0.050." in text  # fmt: skip


def test_pending_resumes_from_the_csv_and_plot_draws_every_panel(tmp_path):
    csv = tmp_path / "map.csv"
    cells = grid(rows=["16", "all"], alphas=["1"], anomalies=["shared"], hardware=["identical"])
    methods = ["local", "fedavg", "good", "fedavg_full_ft@hardware"]
    everything = ["local", "fedavg", "good"]  # one hardware group: the grouped method is never trained there
    assert pending(csv, cells, [0, 1], methods) == [(c, s, everything, True) for s in (0, 1) for c in cells]
    frame = _frame()
    case = frame[(frame.seed == 0) & (frame.rows == "16")]
    record(csv, case[case.method != "good"].to_dict("records"))  # no references, one method missing
    assert pending(csv, cells, [0, 1], methods)[0] == (cells[0], 0, ["good"], True)
    refs = case.iloc[:2].assign(method=["logreg-client", "logreg-pooled"])
    record(csv, [*case[case.method == "good"].to_dict("records"), *refs.to_dict("records")])
    assert pending(csv, cells, [0, 1], methods) == [(c, s, everything, True) for c, s in
                                                     ((cells[1], 0), (cells[0], 1), (cells[1], 1))]  # fmt: skip
    assert list(pd.read_csv(csv).columns)[:8] == ["rows", "alpha", "anomalies", "hardware", "seed", "train_rows",
                                                  "method", "mean_auroc"]  # fmt: skip
    plot(frame, tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 10_000


def test_the_weekly_flow_trains_a_tiny_map_and_logs_it(tmp_path, monkeypatch, prefect_server):
    from flows.regime_map import pqfl_regime_map

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "map"
    kwargs = dict(seeds=[0, 1], rows=["16"], alphas=["1"], anomalies=["shared"], hardware=["identical"],
                  methods=["local", "fedavg"], budget={"rounds": 1, "local_epochs": 1}, out=str(out),
                  images=str(tmp_path))  # fmt: skip
    with reporting_to(prefect_server):
        first = pqfl_regime_map(**kwargs)
        added = pqfl_regime_map(**{**kwargs, "methods": ["local", "fedavg", "pqfl"]})  # pqfl alone, on both seeds
    assert (first["cases"], added["cases"]) == (2, 2)
    # the pool's workers and its event forwarding reported to that server: no temporary one here
    assert not SubprocessASGIServer._instances
    frame = pd.read_csv(out.with_suffix(".csv"), dtype={"rows": str, "alpha": str})
    assert set(frame.method) == {"local", "fedavg", "pqfl", "logreg-client", "logreg-pooled", "linear-local",
                                 "linear-fedavg_ft", "linear-pooled"}  # fmt: skip
    assert frame.groupby(["seed", "method"]).size().eq(1).all()  # nothing trained twice
    assert sorted(frame.seed.unique()) == [0, 1] and frame.mean_auroc.between(0, 1).all()
    assert "1 rounds × 1 local epochs" in out.with_suffix(".md").read_text()
    run = MlflowClient(uri).get_run(added["mlflow_run_id"])
    cells = frame.groupby([*CELL, "method"]).mean_auroc.mean()
    assert run.data.metrics["alpha_1/shared/identical/rows_16/local/mean_auroc"] == pytest.approx(
        cells[("1", "shared", "identical", "16", "local")]
    )
    assert np.isfinite(list(run.data.metrics.values())).all()
