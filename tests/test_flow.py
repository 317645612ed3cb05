"""The training flow under a real (temporary) Prefect server, logging to a real MLflow store."""

from __future__ import annotations

import copy
import json
import logging
import os
import uuid
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from prefect.runtime import flow_run
from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings
from sklearn.metrics import roc_auc_score

from benchmarks.e2e import library_run
from benchmarks.tune_odds_val import validation_aurocs
from flows.detector_model import feature_columns, registered_name
from flows.train import pqfl_train
from pqfl.config import load_config
from pqfl.fleet import prepare
from pqfl.privacy.dp import epsilon_spent
from pqfl.quantum.reference import to_openqasm
from tests.tiny import TINY, write_config

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def two_runs(harness, tmp_path_factory):
    """The tiny config run twice with the same seed, into one MLflow store."""
    folder = tmp_path_factory.mktemp("flow")
    cfg = write_config(folder)
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri  # must override the config's own store
    try:
        first = pqfl_train(str(cfg))
        second = pqfl_train(str(cfg))
        reference = pqfl_train(str(cfg), {"simulator": "reference", "federation.methods": ["pqfl", "centralized"]})
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return first, second, MlflowClient(tracking_uri=uri), folder, reference


def _metrics_only(result: dict) -> dict:
    return {m: {k: v for k, v in r.items() if k not in ("wall_s", "timings")} for m, r in result["methods"].items()}


def test_same_seed_gives_identical_metrics(two_runs):
    first, second, *_ = two_runs
    assert _metrics_only(first) == _metrics_only(second)
    assert first["mlflow_parent_run_ids"] != second["mlflow_parent_run_ids"]


def test_a_second_run_in_the_process_compiles_nothing_and_times_its_phases(two_runs):
    """Every circuit's step and scoring function is prepared once per process: the second
    run of the same config traces and loads nothing. Each method's rounds split into
    training and evaluation seconds that fit in its wall time."""
    first, second, *_ = two_runs
    for method, r in second["methods"].items():
        assert r["timings"]["compile_traced"] == r["timings"]["compile_loaded"] == 0, method
    for method, r in first["methods"].items():
        t = r["timings"]
        assert t["train_s"] > 0 and t["evaluate_s"] > 0, method
        assert t["train_s"] + t["evaluate_s"] <= r["wall_s"], method


def test_the_library_alone_computes_the_flows_numbers(two_runs):
    """`pqfl bench e2e` prices the Prefect and MLflow layer against the same methods run
    through the library alone (benchmarks/e2e.library_run); that holds only if the library
    run computes what the flow computed, with the functions the flow prepared."""
    first, _, _, folder, _ = two_runs
    alone = library_run(str(folder / "config.yaml"))
    assert list(alone["methods"]) == list(first["methods"])
    for method, r in first["methods"].items():
        got = alone["methods"][method]
        for key in ("mean_auroc", "mean_aupr", "mean_false_error", "mean_missing_error", "worst_auroc"):
            assert got[key] == r[key], (method, key)
        assert got["timings"]["compile_traced"] == got["timings"]["compile_loaded"] == 0, method
        assert got["timings"]["train_s"] > 0 and got["timings"]["evaluate_s"] > 0, method


def test_every_method_reports_sane_metrics(two_runs):
    first, *_ = two_runs
    assert set(first["methods"]) == {"local", "fedavg", "fedprox", "pqfl", "centralized"}
    for method, r in first["methods"].items():
        assert [h["round"] for h in r["history"]] == [1, 2]
        assert len(r["per_client"]) == 3
        for key in ("mean_auroc", "mean_aupr", "mean_false_error", "mean_missing_error", "worst_auroc"):
            assert 0.0 <= r[key] <= 1.0, (method, key)
        assert r["worst_auroc"] == min(c["auroc"] for c in r["per_client"])


def test_methods_differ_where_their_rules_differ(two_runs):
    first, *_ = two_runs
    aurocs = {m: tuple(c["auroc"] for c in r["per_client"]) for m, r in first["methods"].items()}
    # local never sees the server, pqfl is pulled towards it: they must not coincide.
    assert aurocs["local"] != aurocs["pqfl"]
    assert aurocs["fedavg"] != aurocs["local"]


def test_mlflow_layout(two_runs):
    first, _, client, folder, _ = two_runs
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    assert exp.artifact_location.startswith((folder / "mlruns").resolve().as_uri())
    for method, run_id in first["mlflow_parent_run_ids"].items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["pqfl.method"] == method
        assert run.data.tags["prefect.flow_run_id"] not in ("", "none")
        assert len(run.data.tags["git_commit"]) in (40, len("unknown"))
        assert run.data.params["federation.rounds"] == "2"
        assert run.data.params["clients.1.noise.depolarizing"] == "0.02"
        # MLflow's own tags (user, source) and a description shown on the run page.
        assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.type"] == "LOCAL"
        assert method in run.data.tags["mlflow.note.content"] and "2 rounds" in run.data.tags["mlflow.note.content"]
        # System metrics of the training process, however short the run.
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
        history = client.get_metric_history(run_id, "test/mean_auroc")
        assert sorted(m.step for m in history) == [1, 2]
        assert history[-1].value == pytest.approx(first["methods"][method]["mean_auroc"])
        for name in ("test/mean_aupr", "test/mean_false_error", "test/mean_missing_error", "test/worst_auroc"):
            assert len(client.get_metric_history(run_id, name)) == 2
        top = {a.path for a in client.list_artifacts(run_id)}
        assert {"config.yaml", "results.csv", "results.json", "plots"} <= top
        plots = {a.path for a in client.list_artifacts(run_id, "plots")}
        assert plots == {"plots/convergence.png", "plots/roc_pr.png", "plots/comparison.png"}
        children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
        assert sorted(c.data.tags["pqfl.client"] for c in children) == ["amp-3q", "angle-2q-noisy", "iqp-2q-shots"]
        for child in children:
            assert child.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(child.info.run_id, "test/auroc")] == [1, 2]
            # Each split as an MLflow dataset of the client's run: name, digest and shape, no rows.
            name = child.data.tags["pqfl.client"]
            inputs = {i.dataset.name: i for i in child.inputs.dataset_inputs}
            assert set(inputs) == {f"{name}-train", f"{name}-val", f"{name}-test"}
            for split, given in inputs.items():
                tags = {t.key: t.value for t in given.tags}
                assert tags["mlflow.data.context"] == split.rsplit("-", 1)[1] and len(given.dataset.digest) >= 8
                assert json.loads(given.dataset.profile)["features_shape"][0] > 0
            circuit = {a.path for a in client.list_artifacts(child.info.run_id, "circuit")}
            assert circuit == {"circuit/circuit.txt", "circuit/circuit.qasm"}
            if child.data.tags["pqfl.client"] == "angle-2q-noisy" and method != "centralized":
                assert child.data.params["noise.depolarizing"] == "0.02"
                assert child.data.params["encoding"] == "angle"
                assert (child.data.params["reupload"], child.data.params["measure"]) == ("True", "zz")
            if method == "centralized":  # one pooled, noiseless model evaluated at every client
                assert child.data.params["noise.depolarizing"] == "0.0"


def test_artifacts_hold_the_results(two_runs, tmp_path, monkeypatch):
    first, _, client, folder, _ = two_runs
    import pandas as pd

    run_id = first["mlflow_parent_run_ids"]["pqfl"]
    csv = client.download_artifacts(run_id, "results.csv", str(tmp_path))
    table = pd.read_csv(csv)
    assert list(table["client"]) == ["amp-3q", "angle-2q-noisy", "iqp-2q-shots"]
    assert table["auroc"].tolist() == pytest.approx([c["auroc"] for c in first["methods"]["pqfl"]["per_client"]])
    children = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}' and tags.`pqfl.client` = 'amp-3q'",
    )
    qasm = open(client.download_artifacts(children[0].info.run_id, "circuit/circuit.qasm", str(tmp_path))).read()
    assert qasm.startswith("OPENQASM 2.0") and "qreg q[3]" in qasm
    drawing = open(client.download_artifacts(children[0].info.run_id, "circuit/circuit.txt", str(tmp_path))).read()
    assert drawing.count("Rot(") == 3
    # The circuit is drawn at the encoding of the federated mean, with the client's trained θ: no data row.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    det = (
        mlflow.pyfunc.load_model(f"models:/{registered_name('tiny', 'pqfl', 'amp-3q')}/1")
        .unwrap_python_model()
        .detector
    )
    fmap = det.feature_map_
    assert qasm == to_openqasm(det.circuit_, fmap.transform(fmap.mean[None, :])[0], det.members_[0].theta)


def test_fast_and_reference_simulators_give_the_same_metrics(two_runs):
    """PennyLane's default.qubit/default.mixed and the fast simulator train to the same metrics."""
    first, *_, reference = two_runs
    for method in ("pqfl", "centralized"):
        fast_clients = first["methods"][method]["per_client"]
        ref_clients = reference["methods"][method]["per_client"]
        for f, r in zip(fast_clients, ref_clients):
            for key in ("auroc", "aupr", "false_error", "missing_error", "f1"):
                assert abs(f[key] - r[key]) <= 1e-6, (method, f["client"], key)


def test_one_class_objective_runs_without_labels(harness, tmp_path):
    """one_class trains on distances from a fixed centre; the labels only score the test split."""
    cfg = write_config(
        tmp_path, federation={**TINY["federation"], "objective": "one_class", "methods": ["pqfl", "local"]}
    )
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        result = pqfl_train(str(cfg))
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)
    for r in result["methods"].values():
        assert all(0.0 <= c["auroc"] <= 1.0 for c in r["per_client"])
    assert result["methods"]["pqfl"]["per_client"] != result["methods"]["local"]["per_client"]


def test_share_by_encoding_keeps_encodings_apart(harness, tmp_path, monkeypatch):
    """With federation.share: encoding a client whose encoding no other client has shares θ
    with nobody, so FedAvg trains it exactly as local training does; the two amplitude
    clients still share theirs, so their FedAvg models are not their local ones."""
    clients = TINY["clients"] + [{"name": "amp-2q", "qubits": 2, "layers": 1, "encoding": "amplitude"}]
    fed = {**TINY["federation"], "share": "encoding", "methods": ["local", "fedavg"]}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = pqfl_train(str(write_config(tmp_path, federation=fed, clients=clients)))
    local = {c["client"]: c for c in result["methods"]["local"]["per_client"]}
    fedavg = {c["client"]: c for c in result["methods"]["fedavg"]["per_client"]}
    for alone in ("angle-2q-noisy", "iqp-2q-shots"):
        for key in ("auroc", "aupr", "false_error", "missing_error"):
            assert fedavg[alone][key] == pytest.approx(local[alone][key], abs=1e-9), (alone, key)
    assert [fedavg[n]["auroc"] for n in ("amp-3q", "amp-2q")] != [local[n]["auroc"] for n in ("amp-3q", "amp-2q")]


def test_restarts_train_and_serve_an_ensemble_per_client(harness, tmp_path, monkeypatch):
    """federation.restarts: 2 trains two federations; each client is scored by the ensemble of
    its two personal models. The flow's validation AUROCs equal the library round loop's
    (benchmarks.tune_odds_val) and differ from one restart's; each registered detector
    serves the ensemble, giving the logged test AUROC from raw features; centralized
    trains two pooled models."""
    fed = {**TINY["federation"], "restarts": 2, "methods": ["pqfl", "centralized"]}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = write_config(tmp_path, federation=fed)
    result = pqfl_train(str(path))
    cfg = load_config(str(path))
    ensemble = validation_aurocs(cfg)[0]
    pqfl = result["methods"]["pqfl"]
    assert pqfl["mean_val_auroc"] == pytest.approx(np.mean(ensemble), abs=1e-12)
    assert ensemble != validation_aurocs(cfg.with_overrides({"federation.restarts": 1}))[0]
    served = 0
    for model, frame, scores in _served(cfg, "pqfl", pqfl):
        detector = model.unwrap_python_model().detector
        assert len(detector.members_) == 2  # the second restart's model travels with the first
        first_only = copy.copy(detector)
        first_only.members_ = detector.members_[:1]
        assert not np.allclose(first_only.decision_function(frame), scores)
        served += 1
    assert served == 2
    assert 0.0 <= result["methods"]["centralized"]["mean_auroc"] <= 1.0


def test_a_shared_encoder_trains_in_the_flow_and_its_registered_detectors_serve_it(harness, tmp_path, monkeypatch):
    """fedenc runs as a method of the flow like any other, and each registered detector
    carries its client's trained encoder: from raw features it gives the logged AUROC."""
    fed = {**TINY["federation"], "methods": ["local", "fedenc"]}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = write_config(tmp_path, federation=fed)
    result = pqfl_train(str(path))
    cfg = load_config(str(path))
    fedenc = result["methods"]["fedenc"]
    assert fedenc["per_client"] != result["methods"]["local"]["per_client"]
    served = 0
    for model, _, _ in _served(cfg, "fedenc", fedenc):
        (member,) = model.unwrap_python_model().detector.members_
        assert member.adjust is not None and np.abs(member.adjust).max() > 0
        served += 1
    assert served == 2


def _served(cfg, method: str, logged: dict):
    """Per shot-free client: its registered model, its test rows as raw features and the
    model's scores on them, after checking they give the AUROC the run logged."""
    fleet = prepare(cfg)
    for setup, data in zip(fleet.clients, fleet.datas):
        if setup.profile.shots:  # a served detector draws its own shots
            continue
        model = mlflow.pyfunc.load_model(f"models:/{registered_name('tiny', method, setup.name)}/1")
        frame = pd.DataFrame(data.X_test, columns=list(feature_columns(cfg.dataset.source, data.X_test.shape[1])))
        auroc = next(c["auroc"] for c in logged["per_client"] if c["client"] == setup.name)
        scores = model.predict(frame)["score"].to_numpy()
        assert roc_auc_score(data.y_test, scores) == pytest.approx(auroc, abs=1e-12)
        yield model, frame, scores


def test_the_data_is_prepared_once_per_config(monkeypatch):
    """The CLI's check and every method of an invocation share one preparation; any change
    of the config prepares again, and only the last two fleets are kept."""
    import tasks.federated as federated
    from tasks.settings import parse_run_config
    from tests.tiny import TINY

    calls = []
    real = federated.prepare
    monkeypatch.setattr(federated, "prepare", lambda cfg: calls.append(cfg.federation.seed) or real(cfg))
    federated._fleet_of.cache_clear()
    cfg = parse_run_config(TINY)
    first = federated.prepared_fleet(cfg)
    assert federated.prepared_fleet(parse_run_config(cfg.model_dump(mode="json", by_alias=True))) is first
    assert calls == [3]
    other = federated.prepared_fleet(cfg.with_overrides({"federation.seed": 4}))
    assert other is not first and calls == [3, 4]
    federated.prepared_fleet(cfg.with_overrides({"federation.seed": 5}))
    assert federated.prepared_fleet(cfg) is not first and calls == [3, 4, 5, 3]  # the oldest was evicted
    federated._fleet_of.cache_clear()  # no fleet prepared under the patched prepare outlives the test


def test_an_attacked_dp_run_names_its_attackers_and_logs_honest_auroc_and_epsilon(harness, tmp_path, monkeypatch):
    """federation.attack and federation.privacy through the flow: the attacker is tagged in
    MLflow, each round logs the honest clients' mean AUROC and the ε spent, and the result
    carries both."""
    fed = {
        **TINY["federation"],
        "methods": ["fedavg"],
        "attack": {"kind": "sign_flip", "fraction": 0.34},
        "privacy": {"noise_multiplier": 1.1, "clip": 0.5},
    }
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = pqfl_train(str(write_config(tmp_path, federation=fed)))
    result = out["methods"]["fedavg"]
    (attacker,) = result["attackers"]
    honest = [c["auroc"] for c in result["per_client"] if not c["attacker"]]
    assert result["honest"]["mean_auroc"] == pytest.approx(np.mean(honest)) and len(honest) == 2
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(out["mlflow_parent_run_ids"]["fedavg"])
    assert run.data.tags["pqfl.attackers"] == attacker and run.data.params["federation.attack.kind"] == "sign_flip"
    history = client.get_metric_history(run.info.run_id, "test/honest_mean_auroc")
    assert [m.step for m in history] == [1, 2] and history[-1].value == pytest.approx(result["honest"]["mean_auroc"])
    eps = client.get_metric_history(run.info.run_id, "privacy/epsilon")
    assert [m.value for m in eps] == pytest.approx([epsilon_spent(1.1, k, 1e-5) for k in (1, 2)])
    assert result["epsilon"] == pytest.approx(eps[-1].value)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert {r.data.tags.get("pqfl.attacker") for r in children if r.info.run_name.endswith(attacker)} == {"true"}
    assert sum(r.data.tags.get("pqfl.attacker") == "true" for r in children) == 1


def test_progress_lines_go_to_their_runs_api_log_and_stay_local_outside_a_run(harness):
    """flows.train routes the library's ``pqfl.progress`` lines to the Prefect API. Inside a
    flow run they land in that run's log; written outside any run (the library's round loop
    called directly in a process that imported the flow), they stay local, without Prefect's
    warning that they have no run to go to."""
    log = logging.getLogger("pqfl.progress")
    marker = f"probe-{uuid.uuid4().hex}"

    @flow(name="pqfl-progress-probe")
    def probe() -> str:
        log.info("%s inside", marker)
        return flow_run.id

    # Prefect's default for a log without a run is to warn (the harness turns that off)
    with temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "warn"}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            log.warning("%s outside", marker)
            run_id = probe()
    APILogWorker.drain_all()
    assert not [w for w in caught if "without a flow run id" in str(w.message)], [str(w.message) for w in caught]
    with get_client(sync_client=True) as api:
        logs = api.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)])))
    assert [entry.message for entry in logs if marker in entry.message] == [f"{marker} inside"]
