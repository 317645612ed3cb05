"""Every client's personalized detector is a registered MLflow pyfunc model that scores raw
features exactly as the training flow did, in process and behind ``mlflow models serve``."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from flows.detector_model import feature_columns, log_detectors, registered_name
from pqfl.detector import QuantumDetector, serve_stream
from pqfl.federated.aggregation import block_of
from pqfl.federated.client import evaluate, init_state, local_round
from pqfl.federated.local_update import predict_scores
from pqfl.federated.server import init_global
from pqfl.fleet import prepare
from pqfl.metrics import client_metrics
from tasks.settings import load_run_config as load_config
from tests.mlflow_store import tiny_store
from tests.servers import VENV_BIN, free_port, running, server_env

pytestmark = pytest.mark.timeout(900)

METHODS = ["local", "fedavg", "fedprox", "pqfl", "centralized"]
CLIENTS = ["amp-3q", "angle-2q-noisy", "iqp-2q-shots"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_server):
    """The tiny config trained by the real flow into a fresh MLflow store; its prepared data.
    MLFLOW_TRACKING_URI points at that store while this module runs (models:/ URIs resolve there)."""
    store = tiny_store(tmp_path_factory, prefect_server)
    cfg = load_config(str(store["config"]))
    fleet = prepare(cfg)
    setups, datas = fleet.clients, fleet.datas
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store["uri"]
    try:
        yield {**store, "client": MlflowClient(store["uri"]), "cfg": cfg, "setups": setups, "datas": datas}
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)


def _client_run(client: MlflowClient, parent_id: str, name: str):
    exp_id = client.get_run(parent_id).info.experiment_id
    (run,) = client.search_runs(
        [exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and tags.`pqfl.client` = '{name}'"
    )
    return run


def _final(client: MlflowClient, run_id: str, key: str) -> float:
    return max(client.get_metric_history(run_id, key), key=lambda m: m.step).value


def _raw_test_frame(trained, index: int) -> pd.DataFrame:
    X = trained["datas"][index].X_test
    return pd.DataFrame(X, columns=list(feature_columns(trained["cfg"].dataset.source, X.shape[1])))


def test_every_method_and_client_has_a_registered_version_in_its_client_run(trained):
    client, result = trained["client"], trained["result"]
    digits_pixels = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    for method in METHODS:
        for name in CLIENTS:
            registered = registered_name("tiny", method, name)
            assert registered == f"tiny-{method}-{name}"
            (version,) = client.search_model_versions(f"name = '{registered}'")
            assert str(version.version) == "1"
            child = _client_run(client, result["mlflow_parent_run_ids"][method], name)
            assert version.run_id == child.info.run_id
            assert version.tags["pqfl.method"] == method and version.tags["pqfl.client"] == name
            assert float(version.tags["threshold"]) == pytest.approx(
                _final(client, child.info.run_id, "val/threshold"), rel=1e-5
            )
            # The version comes from the one logged model of the client run.
            (logged,) = [o.model_id for o in client.get_run(child.info.run_id).outputs.model_outputs]
            assert version.source == f"models:/{logged}"
            # ... and it belongs to the run's experiment (its Models tab), not to MLflow's Default one.
            model = client.get_logged_model(logged)
            assert model.experiment_id == child.info.experiment_id and model.name == f"{method}-{name}"
            # ... and names its registered version (the Models tab's "Registered models" column).
            assert [v["name"] for v in json.loads(model.tags["mlflow.modelVersions"])] == [registered]
            info = mlflow.models.get_model_info(f"models:/{registered}/1")
            assert info.signature.inputs.input_names() == digits_pixels
            assert info.signature.outputs.input_names() == ["score", "flag"]
    experiment = client.get_run(result["mlflow_parent_run_ids"]["pqfl"]).info.experiment_id
    models = client.search_logged_models(experiment_ids=[experiment])
    assert len(models) == len(METHODS) * len(CLIENTS)
    assert client.search_logged_models(experiment_ids=["0"]) == []


def test_registered_detector_reproduces_the_flow_metrics_from_raw_features(trained):
    """Scored from raw test rows, each detector gives the AUROC, false and missing error the
    flow logged for that client, at the threshold chosen on validation."""
    client, result = trained["client"], trained["result"]
    for method in METHODS:
        for index, name in enumerate(CLIENTS):
            model = mlflow.pyfunc.load_model(f"models:/{registered_name('tiny', method, name)}/1")
            frame = _raw_test_frame(trained, index)
            out = model.predict(frame)
            assert list(out.columns) == ["score", "flag"] and len(out) == len(frame)
            scores = out["score"].to_numpy()
            run_id = _client_run(client, result["mlflow_parent_run_ids"][method], name).info.run_id
            threshold = _final(client, run_id, "val/threshold")
            np.testing.assert_array_equal(out["flag"].to_numpy(), (scores >= threshold).astype(int))
            y = trained["datas"][index].y_test
            logged_auroc = _final(client, run_id, "test/auroc")
            if trained["setups"][index].profile.shots and method != "centralized":
                # Finite shots: the served detector draws its own (seeded) shots, so only close.
                assert roc_auc_score(y, scores) == pytest.approx(logged_auroc, abs=0.15)
                np.testing.assert_array_equal(
                    model.predict(frame)["score"].to_numpy(), scores
                )  # same request, same answer
                continue
            metrics = client_metrics(y, scores, threshold)
            assert metrics["auroc"] == pytest.approx(logged_auroc, abs=1e-12), (method, name)
            assert metrics["false_error"] == pytest.approx(_final(client, run_id, "test/false_error"), abs=1e-12)
            assert metrics["missing_error"] == pytest.approx(_final(client, run_id, "test/missing_error"), abs=1e-12)


def test_pyfunc_scores_equal_the_in_process_detector(trained, tmp_path):
    """A detector trained in process, logged and registered, then loaded by models:/ URI,
    returns pqfl's own scores for the same rows — every client, shots included."""
    cfg, setups = trained["cfg"], trained["setups"]
    fed = cfg.federation
    G = init_global(cfg.max_layers, cfg.max_qubits, fed.seed, fed.init_scale)
    states, finals = [], []
    for s in setups:
        state = init_state(s, block_of(G, s.spec.layers, s.spec.qubits), fed.seed)
        state, _ = local_round(
            s, state, start_theta=state.theta, anchor=None, prox=0.0, fed=fed, simulator=cfg.simulator, round_index=1
        )
        states.append(state)
        finals.append(evaluate(s, state, state.theta, fed=fed, simulator=cfg.simulator, round_index=1))
    client = trained["client"]
    exp_id = client.create_experiment("in-process", artifact_location=(trained["folder"] / "inproc").as_uri())
    run_ids = {s.name: client.create_run(exp_id, run_name=s.name).info.run_id for s in setups}
    detectors = {
        s.name: QuantumDetector.from_federation(s, [(st, st.theta)], f.threshold, fed, cfg.dataset, cfg.simulator)
        for s, st, f in zip(setups, states, finals)
    }
    uris = log_detectors(
        client,
        experiment="in-process",
        method="local",
        source=cfg.dataset.source,
        run_ids=run_ids,
        detectors=detectors,
        step=1,
    )
    assert uris == {s.name: f"models:/in-process-local-{s.name}/1" for s in setups}
    for index, (setup, state, final) in enumerate(zip(setups, states, finals)):
        served = mlflow.pyfunc.load_model(uris[setup.name]).predict(_raw_test_frame(trained, index))
        expected = predict_scores(
            setup.spec,
            objective=fed.objective,
            simulator=cfg.simulator,
            shots=setup.profile.shots,
            params=state.params(),
            center=state.center,
            X=setup.X_test,
            seed=fed.seed,
            stream=serve_stream(setup.index),
        )
        np.testing.assert_allclose(served["score"].to_numpy(), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(served["flag"].to_numpy(), (expected >= final.threshold).astype(int))
        if not setup.profile.shots:  # exact expectation values: the evaluation's own test scores
            np.testing.assert_allclose(served["score"].to_numpy(), final.test_scores, rtol=1e-12, atol=1e-12)


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_mlflow_models_serve_answers_with_the_same_scores(trained, tmp_path):
    """``mlflow models serve`` on 127.0.0.1 scores a dataframe_split request like the pyfunc in process."""
    name = registered_name("tiny", "pqfl", "angle-2q-noisy")  # noisy circuit: the density-matrix path
    uri = f"models:/{name}/1"
    frame = _raw_test_frame(trained, CLIENTS.index("angle-2q-noisy"))
    expected = mlflow.pyfunc.load_model(uri).predict(frame)
    port = free_port()
    cmd = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    started = time.monotonic()
    with running(
        cmd, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", server_env(MLFLOW_TRACKING_URI=trained["uri"])
    ):
        print(f"mlflow models serve ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        status, body = _post(
            f"http://127.0.0.1:{port}/invocations", {"dataframe_split": frame.to_dict(orient="split", index=False)}
        )
        assert status == 200, body
        served = pd.DataFrame(body["predictions"])
        np.testing.assert_allclose(served["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(served["flag"].to_numpy(), expected["flag"].to_numpy())
        # Records (one dict per row) are accepted as well, with the columns in any order.
        records = frame.iloc[:3, ::-1].to_dict(orient="records")
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": records})
        assert status == 200, body
        np.testing.assert_allclose(
            [p["score"] for p in body["predictions"]], expected["score"].to_numpy()[:3], rtol=1e-12
        )
        # A request without all raw features is refused with a message naming the column.
        status, body = _post(
            f"http://127.0.0.1:{port}/invocations",
            {"dataframe_split": frame.drop(columns=["pixel_3_4"]).to_dict(orient="split", index=False)},
        )
        assert status == 400 and "pixel_3_4" in body.get("message", ""), (status, body)


def test_tracking_log_models_off_logs_and_registers_nothing(trained, tmp_path):
    """Sweeps can switch detector logging off with ``tracking.log_models: false``."""
    from flows.tracking import MethodRun

    cfg = trained["cfg"].with_overrides({"tracking.log_models": False})
    setups = trained["setups"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'off.db'}")
    exp_id = client.create_experiment("off", artifact_location=(tmp_path / "artifacts").as_uri())
    run_ids = {s.name: client.create_run(exp_id).info.run_id for s in setups}
    run = MethodRun(client, client.create_run(exp_id).info.run_id, run_ids)
    states = [init_state(s, np.zeros((s.spec.layers, s.spec.qubits, 3)), 0) for s in setups]
    detectors = {
        s.name: QuantumDetector.from_federation(s, [(st, st.theta)], 0.0, cfg.federation, cfg.dataset)
        for s, st in zip(setups, states)
    }
    assert run.log_models(cfg, "pqfl", detectors) == {}
    assert client.search_registered_models() == []
    assert all(not client.get_run(i).outputs.model_outputs for i in run_ids.values())
