"""The benchmark: suites, classical references, tables, and one end-to-end run of
`pqfl benchmark` through a real (temporary) Prefect server into a real MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

# Prefect's log handlers keep the sys.stderr of their set-up (on importing prefect.main): set them up
# now, not inside a capsys test whose stream is closed after it.
import prefect.main  # noqa: F401
import pytest
import scipy.io
import yaml
from mlflow.tracking import MlflowClient
from scipy import stats

from pqfl.baselines import DETECTORS, anomaly_scores, run_baseline, run_baselines
from pqfl.benchmark.report import JSON_KEYS
from pqfl.benchmark.statistics import paired_difference, pyod_reference, relative_change, summary_table
from pqfl.benchmark.suite import check_suite, expand_cases, load_suite
from pqfl.config import parse_config
from pqfl.data.partition import partition
from pqfl.data.preprocessing import GlobalStats, SufficientStats
from pqfl.data.sources import Dataset
from pqfl.errors import PQFLInputError
from pqfl.metrics import choose_threshold, client_metrics
from tasks.settings import parse_run_config
from tests.servers import reporting_to
from tests.test_loaders import write_cifar10, write_svhn

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent
SUITES = sorted((ROOT / "benchmarks" / "suites").glob("*.yaml"))


def _odds_like(path: Path, seed: int = 0, n: int = 600) -> None:
    """An ODDS-format .mat: X (n, d) float, y (n, 1) with 1 = anomaly, anomalies shifted."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(float)
    X = rng.normal(size=(n, 6)) + 2.5 * y[:, None] * rng.choice([-1, 1], size=(n, 6))
    scipy.io.savemat(path, {"X": X, "y": y.reshape(-1, 1)})


TINY_SUITE = {
    "name": "tiny",
    "seeds": [0, 1],
    "objectives": ["supervised", "one_class"],
    "methods": ["pqfl", "fedavg"],
    "baselines": ["iforest", "logreg"],
    "pyod_reference": "pyod.csv",
    "base": {
        "partition": {"alpha": 2.0, "min_anomalies": 3},
        "federation": {"rounds": 2, "local_epochs": 1, "lr": 0.1, "batch_size": 32},
        # One circuit structure for both clients: one compilation per objective keeps the test fast.
        "clients": [{"name": "amp2-a", "qubits": 2, "layers": 1}, {"name": "amp2-b", "qubits": 2, "layers": 1}],
    },
    "datasets": [{"name": "toy", "source": "odds:toy.mat", "overrides": {"dataset.max_samples": 400}}],
}


# --- suites ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suites_validate_and_expand(path, tmp_path):
    suite = load_suite(path)
    cases = expand_cases(suite, tmp_path)
    per_dataset = len(suite.sweep.values) if suite.sweep else 1
    expected = sum(len(d.seeds or suite.seeds) for d in suite.datasets) * per_dataset * len(suite.objectives)
    assert len(cases) == expected
    for case in cases:
        cfg = parse_run_config(case.config)
        assert cfg.federation.objective == case.objective and cfg.federation.seed == case.seed
        assert cfg.experiment_name == suite.experiment_name
        assert cfg.tracking.log_models is False  # metrics only: no registered model per client per case
        if not cfg.dataset.source.startswith("sklearn:"):
            assert cfg.dataset.source.split(":", 1)[1].startswith(str(tmp_path))


def test_odds_suite_covers_the_issue_datasets_and_a_50_client_scenario():
    odds = load_suite(ROOT / "benchmarks" / "suites" / "odds.yaml")
    assert {"cardio", "pendigits", "optdigits", "vowels", "wbc", "letter"} <= {d.name for d in odds.datasets}
    assert set(odds.objectives) == {"supervised", "one_class"}
    fleet = parse_config(expand_cases(odds, "/data")[0].config).clients
    assert len({(c.qubits, c.encoding, c.entangling, c.noise) for c in fleet}) == len(fleet)  # heterogeneous
    scale = load_suite(ROOT / "benchmarks" / "suites" / "odds_50_clients.yaml")
    assert all(len(parse_config(c.config).clients) == 50 for c in expand_cases(scale, "/data"))


def test_sweep_wildcards_and_replicated_fleets(tmp_path):
    suite = load_suite(ROOT / "benchmarks" / "suites" / "heterogeneity_sweep.yaml")
    cases = expand_cases(suite, None)
    for case in cases:
        cfg = parse_config(case.config)
        assert {c.noise.depolarizing for c in cfg.clients} == {case.sweep_value}
        assert {c.noise.readout for c in cfg.clients} == {case.sweep_value}
        assert case.dataset.endswith(f"noise={case.sweep_value:g}")
    assert sorted({c.sweep_value for c in cases}) == sorted(suite.sweep.values)
    assert len({len(parse_config(c.config).clients) for c in cases}) == 1
    qubits = [c.qubits for c in parse_config(cases[0].config).clients]
    assert len(set(qubits)) == len(qubits)  # qubit counts differ across clients

    data = {**TINY_SUITE, "datasets": [{**TINY_SUITE["datasets"][0], "replicate_clients": 3, "seeds": [5]}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    cases = expand_cases(load_suite(tmp_path / "s.yaml"), tmp_path)
    names = [c.name for c in parse_config(cases[0].config).clients]
    assert len(names) == 6 and len(set(names)) == 6 and {c.seed for c in cases} == {5}


def test_paper_suite_reads_cifar10_and_svhn_fixtures(tmp_path):
    rng = np.random.default_rng(0)
    write_cifar10(tmp_path / "cifar-10-batches-bin", rng, per_file=400)
    (tmp_path / "svhn").mkdir()
    write_svhn(tmp_path / "svhn" / "train_32x32.mat", rng, n=7)  # too small on purpose: partition must say so
    with pytest.raises(PQFLInputError, match="partition: could not give every client"):
        check_suite(str(ROOT / "benchmarks" / "suites" / "paper_cifar_svhn.yaml"), str(tmp_path))
    big = rng.integers(0, 256, size=(32, 32, 3, 2400), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "svhn" / "train_32x32.mat", {"X": big, "y": rng.integers(1, 11, (2400, 1))})
    suite, cases = check_suite(str(ROOT / "benchmarks" / "suites" / "paper_cifar_svhn.yaml"), str(tmp_path))
    assert {c.entry for c in cases} == {d.name for d in suite.datasets}


def test_check_suite_partitions_every_case_before_anything_runs(tmp_path):
    """The first case of each dataset is fully prepared; every other case (each seed and
    objective draws its own partition) is partitioned too, so an infeasible one fails now."""
    _odds_like(tmp_path / "toy.mat")
    entry = {**TINY_SUITE["datasets"][0], "objective_overrides": {"one_class": {"partition.min_anomalies": 200}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**TINY_SUITE, "datasets": [entry]}))
    with pytest.raises(PQFLInputError, match=r"dataset 'toy', objective one_class, seed 0: partition: could not give"):
        check_suite(str(tmp_path / "s.yaml"), str(tmp_path))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TINY_SUITE))
    assert len(check_suite(str(tmp_path / "s.yaml"), str(tmp_path))[1]) == 4


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"baselines": ["knn"]}, "unknown baseline"),
        ({"methods": ["pqfl", "pqfl"]}, "listed twice"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"datasets": [{"name": "a", "source": "odds:a.mat"}] * 2}, "names repeat"),
        ({"base": {"clients": []}}, "clients"),
    ],
)
def test_bad_suites_name_the_field(change, needle, tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**TINY_SUITE, **change}))
    with pytest.raises(PQFLInputError, match=needle):
        expand_cases(load_suite(tmp_path / "s.yaml"), tmp_path)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    _odds_like(tmp_path / "toy.mat")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TINY_SUITE))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"}
    # The CLI's entry point in a new process, which then names the heavy libraries it loaded:
    # a wrong path is reported before scikit-learn, JAX, Prefect or MLflow load (about 1 s, not 5).
    heavy = "{'sklearn', 'jax', 'pennylane', 'prefect', 'mlflow'} & {m.split('.')[0] for m in sys.modules}"
    code = f"import sys; from flows.cli import main; code = main(sys.argv[1:]); print(sorted({heavy})); sys.exit(code)"
    proc = subprocess.run(
        [sys.executable, "-c", code, "benchmark", "--suite", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope.yaml not found" in proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
    from flows.cli import main

    for args, needle in (
        (["--suite", str(tmp_path / "s.yaml"), "--data-dir", str(tmp_path / "nodir")], "nodir is not a folder"),
        (["--suite", str(tmp_path / "s.yaml"), "--data-dir", str(ROOT)], "toy.mat not found"),
        (["--data-dir", str(tmp_path)], "--suite"),
    ):
        assert main(["benchmark", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "store").exists()


def test_a_suite_of_files_without_a_data_folder_names_the_deployment_parameter(tmp_path, monkeypatch):
    """The nightly deployment runs the flow, not the CLI: the message names both ways to give the folder."""
    from flows.benchmark import check_run_suite

    (tmp_path / "data").mkdir()
    _odds_like(tmp_path / "data" / "toy.mat")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TINY_SUITE))
    monkeypatch.chdir(tmp_path)  # toy.mat is not in the working folder either
    with pytest.raises(PQFLInputError) as err:
        check_run_suite(str(tmp_path / "s.yaml"), None)
    assert "toy.mat" in str(err.value) and "deployment's data_dir parameter" in str(err.value)
    assert "--data-dir" in str(err.value)
    spec, cases = check_run_suite(str(tmp_path / "s.yaml"), str(tmp_path / "data"))
    assert cases


# --- classical references and tables ---------------------------------------------------


@pytest.fixture(scope="module")
def toy_clients():
    rng = np.random.default_rng(1)
    y = (rng.random(900) < 0.08).astype(int)
    X = rng.normal(size=(900, 5))
    X[:, 0] += y * (4 + np.abs(rng.normal(0, 2, 900)))  # far out on one side: linearly separable
    X[:, 1:] += y[:, None] * rng.normal(0, 2.5, (900, 4))  # and scattered: no tight cluster of anomalies
    ds = Dataset(X, y, True, "toy")
    datas = partition(
        ds, ["a", "b", "c"], parse_config({"clients": [{"name": "x", "qubits": 2}]}).partition, [0], seed=0
    )
    return datas, GlobalStats.from_sums([SufficientStats.of(d.X_train) for d in datas])


def test_every_reference_detects_shifted_anomalies(toy_clients):
    datas, stats = toy_clients
    for objective in ("supervised", "one_class"):
        results = run_baselines(datas, stats, objective, seed=0)
        expected = {f"{n}-{s}" for n, (o, _) in DETECTORS.items() if o == objective for s in ("client", "pooled")}
        assert {r["method"] for r in results} == expected
        for r in results:
            assert r["mean_auroc"] > 0.8, r["method"]  # higher score = more anomalous (reversed would be < 0.2)
            assert r["worst_auroc"] == min(c.auroc for c in r["per_client"])


def test_a_client_trained_on_one_label_gets_a_chance_level_reference(toy_clients):
    datas, stats = toy_clients
    normal_only = replace(datas[0], X_train=datas[0].X_train[datas[0].y_train == 0],
                          y_train=datas[0].y_train[datas[0].y_train == 0])  # fmt: skip
    result = run_baseline("logreg", "client", [normal_only, *datas[1:]], stats, seed=0)
    first, *rest = result["per_client"]
    assert first.auroc == 0.5 and np.all(first.test_scores == first.test_scores[0])
    assert all(r.auroc > 0.8 for r in rest)  # the other clients fit as before


def test_threshold_comes_from_validation_and_pooled_shares_one_model(toy_clients):
    datas, stats = toy_clients
    pooled = run_baseline("iforest", "pooled", datas, stats, seed=0)
    own = run_baseline("iforest", "client", datas, stats, seed=0)
    from sklearn.ensemble import IsolationForest

    def z(X):
        return (X - stats.mean) / stats.scale

    model = IsolationForest(n_estimators=100, random_state=0).fit(np.concatenate([z(d.X_train) for d in datas]))
    for d, row in zip(datas, pooled["per_client"]):
        # Refit with the pooled seed: identical scores, and the metrics follow the validation threshold.
        val = anomaly_scores(model, z(d.X_val))
        test = anomaly_scores(model, z(d.X_test))
        if np.allclose(test, row.test_scores):
            assert client_metrics(d.y_test, test, choose_threshold(d.y_val, val))["false_error"] == row.false_error
    assert [r.auroc for r in own["per_client"]] != [r.auroc for r in pooled["per_client"]]
    again = run_baseline("iforest", "client", datas, stats, seed=0)
    assert [r.auroc for r in again["per_client"]] == [r.auroc for r in own["per_client"]]  # seeded


def test_features_scope_fits_on_what_each_circuit_is_fed():
    """``-features``: one model per client on its feature map's output (e.g. 4 amplitudes,
    or 2 squashed PCA angles), not on the standardised raw features."""
    from sklearn.linear_model import LogisticRegression

    from pqfl.fleet import prepare

    cfg = parse_config(
        {
            "dataset": {"source": "sklearn:breast_cancer", "max_samples": 300},
            "partition": {"min_anomalies": 3},
            "clients": [
                {"name": "amp", "qubits": 2, "encoding": "amplitude"},
                {"name": "ang", "qubits": 2, "encoding": "angle"},
            ],
        }
    )
    fleet = prepare(cfg)
    setups, datas, stats = fleet.clients, fleet.datas, fleet.stats
    feats = run_baseline("logreg", "features", datas, stats, seed=0, setups=setups)
    raw = run_baseline("logreg", "client", datas, stats, seed=0)
    assert feats["method"] == "logreg-features"
    for s, row in zip(setups, feats["per_client"]):
        model = LogisticRegression(class_weight="balanced", max_iter=2000).fit(s.X_train, s.y_train)
        assert np.allclose(row.test_scores, model.predict_proba(s.X_test)[:, 1])
        val = model.predict_proba(s.X_val)[:, 1]
        assert (
            row.false_error == client_metrics(s.y_test, row.test_scores, choose_threshold(s.y_val, val))["false_error"]
        )
    # Two angles or four amplitudes of 30 features: not the raw-feature model.
    assert [r.auroc for r in feats["per_client"]] != [r.auroc for r in raw["per_client"]]
    assert {r["method"] for r in run_baselines(datas, stats, "supervised", 0, setups=setups)} == {
        "logreg-client",
        "logreg-pooled",
        "logreg-features",
    }
    with pytest.raises(PQFLInputError, match="setups"):
        run_baseline("logreg", "features", datas, stats, seed=0)


def test_summary_and_relative_change_are_computed_from_the_seeds():
    rng = np.random.default_rng(2)
    records = [
        {
            "dataset": d,
            "objective": "supervised",
            "method": m,
            "kind": "quantum",
            "seed": s,
            **{
                k: float(rng.uniform(0.5, 1.0))
                for k in ("mean_auroc", "mean_aupr", "mean_false_error", "mean_missing_error", "worst_auroc")
            },
        }
        for d in ("a", "b")
        for m in ("pqfl", "fedavg", "logreg-client")
        for s in (0, 1, 2)
    ]
    table = summary_table(records).set_index(["dataset", "objective", "method"])
    frame = pd.DataFrame(records)
    for (d, _, m), row in table.iterrows():
        seeds = frame[(frame.dataset == d) & (frame.method == m)]["mean_auroc"]
        assert row["mean_auroc"] == pytest.approx(seeds.mean())
        assert row["mean_auroc_std"] == pytest.approx(seeds.std(ddof=1))
    rel = relative_change(table.reset_index())
    for (d, o), row in rel.iterrows():
        p, f = table.loc[(d, o, "pqfl"), "mean_auroc"], table.loc[(d, o, "fedavg"), "mean_auroc"]
        assert row["vs fedavg"] == pytest.approx(100 * (p - f) / f)


def test_paired_difference_pairs_seeds_and_matches_a_paired_t_interval():
    rng = np.random.default_rng(5)
    seeds = [3, 0, 7, 1, 4]
    records = [
        {"dataset": "a", "objective": o, "method": m, "seed": s, "mean_auroc": float(rng.uniform(0.5, 1.0))}
        for o in ("supervised", "one_class")
        for m in ("pqfl", "fedavg", "logreg-client")
        for s in seeds
    ]
    frame = pd.DataFrame(records).sample(frac=1.0, random_state=1)  # pairing must not rely on row order
    paired = paired_difference(frame).set_index(["objective", "against"])
    assert set(paired.index) == {(o, m) for o in ("supervised", "one_class") for m in ("fedavg", "logreg-client")}
    for (o, other), row in paired.iterrows():
        p = {r["seed"]: r["mean_auroc"] for r in records if r["objective"] == o and r["method"] == "pqfl"}
        q = {r["seed"]: r["mean_auroc"] for r in records if r["objective"] == o and r["method"] == other}
        d = np.array([p[s] - q[s] for s in seeds])
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        assert row["difference"] == pytest.approx(d.mean())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
        assert row["pqfl >= it"] == int((d >= 0).sum()) and row["seeds"] == len(seeds)
    one_seed = paired_difference(pd.DataFrame([r for r in records if r["seed"] == 3]))
    assert one_seed["ci_low"].isna().all() and (one_seed["seeds"] == 1).all()
    with pytest.raises(ValueError):  # a seed twice (e.g. two sweep values under one label) cannot be paired
        paired_difference(pd.concat([frame, frame.head(1)]))


def test_pyod_reference_skips_detectors_that_did_not_run(tmp_path):
    path = tmp_path / "ref.csv"
    pd.DataFrame(
        {
            "Data": ["cardio", "wbc"],
            "#Samples": [10, 20],
            "IForest": [0.9, 0.8],
            "LOF": [0.0, 0.95],
            "OCSVM": [0.93, 0.7],
        }
    ).to_csv(path, index=False)
    ref = pyod_reference(path, {"cardio-5": "cardio", "wbc": "wbc", "other": "nope"})
    assert ref.loc["cardio-5", "pyod_best_detector"] == "OCSVM" and ref.loc["wbc", "pyod_best_detector"] == "LOF"
    assert ref.loc["wbc", "pyod_iforest_roc"] == 0.8 and "other" not in ref.index
    assert pyod_reference(tmp_path / "missing.csv", {"a": "a"}).empty


# --- end to end -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory, prefect_server):
    folder = tmp_path_factory.mktemp("bench")
    _odds_like(folder / "toy.mat")
    pd.DataFrame({"Data": ["toy"], "#Samples": [600], "IForest": [0.81], "KNN": [0.86]}).to_csv(
        folder / "pyod.csv", index=False
    )
    # pqfl alone: every extra method run costs Prefect and MLflow time; the comparison is with the references.
    (folder / "suite.yaml").write_text(yaml.safe_dump({**TINY_SUITE, "methods": ["pqfl"]}))
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from flows.cli import main

    try:
        with reporting_to(prefect_server):
            code = main(
                [
                    "benchmark",
                    "--suite",
                    str(folder / "suite.yaml"),
                    "--data-dir",
                    str(folder),
                    "--json",
                    str(folder / "out" / "bench.json"),
                ]
            )
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)
    assert code == 0
    return folder, json.loads((folder / "out" / "bench.json").read_text()), MlflowClient(tracking_uri=uri)


@pytest.mark.timeout(600)
def test_benchmark_rows(benchmark_run):
    folder, result, client = benchmark_run
    rows = result["rows"]
    assert all(tuple(r) == JSON_KEYS for r in rows)
    expected = {("toy", "pqfl", o) for o in ("supervised", "one_class")}
    expected |= {("toy", f"logreg-{s}", "supervised") for s in ("client", "pooled", "features")}
    expected |= {("toy", f"iforest-{s}", "one_class") for s in ("client", "pooled", "features")}
    assert {(r["dataset"], r["method"], r["objective"]) for r in rows} == expected
    for r in rows:
        for k in JSON_KEYS[3:]:
            assert 0.0 <= r[k] <= 1.0, (r, k)
    # The std is over the two seeds of the per-seed table logged to MLflow.
    per_seed = pd.read_csv(client.download_artifacts(result["mlflow_run_id"], "results_per_seed.csv", str(folder)))
    for r in rows:
        seeds = per_seed[(per_seed.method == r["method"]) & (per_seed.objective == r["objective"])]
        assert sorted(seeds["seed"]) == [0, 1]
        assert r["mean_auroc"] == pytest.approx(seeds["mean_auroc"].mean())
        assert r["mean_auroc_std"] == pytest.approx(seeds["mean_auroc"].std(ddof=1))
    rel = {(x["dataset"], x["objective"]): x for x in result["relative_change"]["mean_auroc"]}
    by = {(r["method"], r["objective"]): r["mean_auroc"] for r in rows}
    assert rel[("toy", "one_class")]["vs iforest-client"] == pytest.approx(
        100 * (by[("pqfl", "one_class")] - by[("iforest-client", "one_class")]) / by[("iforest-client", "one_class")]
    )
    assert result["pyod_reference"] == [
        {"dataset": "toy", "pyod_best_roc": 0.86, "pyod_best_detector": "KNN", "pyod_iforest_roc": 0.81}
    ]
    # PQFL minus each reference, paired by seed, from the same per-seed table.
    paired = {(x["objective"], x["against"]): x for x in result["paired_difference"]}
    for objective, ref in (("one_class", "iforest-client"), ("supervised", "logreg-client")):
        part = per_seed[per_seed.objective == objective].pivot(index="seed", columns="method", values="mean_auroc")
        diff = part["pqfl"] - part[ref]
        assert paired[(objective, ref)]["difference"] == pytest.approx(diff.mean())
        assert paired[(objective, ref)]["pqfl >= it"] == int((diff >= 0).sum())


@pytest.mark.timeout(600)
def test_benchmark_report_and_mlflow(benchmark_run):
    folder, result, client = benchmark_run
    report = (folder / "out" / "bench.md").read_text()
    for r in result["rows"]:
        assert (
            f"| {r['dataset']} | {r['objective']} | {r['method']} | {r['mean_auroc']:.3f} ± {r['mean_auroc_std']:.3f} |"
            in report
        )
    assert "relative change" in report and "0.860 | KNN | 0.810" in report
    paired = next(
        x for x in result["paired_difference"] if x["objective"] == "one_class" and x["against"] == "iforest-client"
    )
    assert "paired by seed" in report and "| toy | one_class |" in report
    assert (
        f"{paired['difference']:+.3f} [{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}] {paired['pqfl >= it']}/2"
        in report
    )
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["pqfl.role"] == "benchmark"
    assert run.data.tags["prefect.flow_run_id"] not in ("", "none")
    assert run.data.metrics["toy/supervised/pqfl/mean_auroc"] == pytest.approx(
        next(r["mean_auroc"] for r in result["rows"] if r["method"] == "pqfl" and r["objective"] == "supervised")
    )
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "summary.csv", "results_per_seed.csv", "benchmark.json", "suite.yaml", "plots"} <= top
    for kind in ("convergence", "per_client", "roc_pr"):
        files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, f"plots/{kind}")}
        assert {"toy_supervised.png", "toy_one_class.png"} <= files or kind == "roc_pr"
    roc = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots/roc_pr")}
    assert {f"toy_{o}_{m}.png" for o in ("supervised", "one_class") for m in ("pqfl", "classical")} == roc
    # Every method run (2 objectives x 2 seeds) is nested under the benchmark run.
    nested = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(nested) == 4 and {n.data.tags["pqfl.method"] for n in nested} == {"pqfl"}
    assert {(n.data.tags["pqfl.benchmark.objective"], n.data.tags["pqfl.benchmark.seed"]) for n in nested} == {
        (o, s) for o in ("supervised", "one_class") for s in ("0", "1")
    }
    assert all(n.info.status == "FINISHED" for n in nested)


def test_sweep_plot_draws_auroc_against_the_swept_value(tmp_path):
    from pqfl.benchmark.suite import Sweep
    from pqfl.plots import sweep_plot

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        [
            {
                "entry": "digits",
                "objective": "supervised",
                "method": m,
                "seed": s,
                "sweep_value": v,
                "mean_auroc": float(rng.uniform(0.5, 1)),
            }
            for m in ("pqfl", "fedavg")
            for s in (0, 1)
            for v in (0.0, 0.02, 0.05)
        ]
    )
    sweep_plot(
        frame, Sweep(name="noise", values=[0.0, 0.02, 0.05], paths=["clients.*.noise.depolarizing"]), tmp_path / "s.png"
    )
    from PIL import Image

    with Image.open(tmp_path / "s.png") as img:
        assert img.size[0] > 300 and img.size[1] > 200
