"""Hardware evaluation: the qiskit circuit built from a CircuitSpec against the fast simulator,
transpiled device jobs on the real qiskit-aer, the ``execute-circuits`` task (retries,
the IBM runtime path with an injected backend), the token sources, and the whole tiny flow
with an aer device client and an ibm_runtime client — whose token must not leak into the
logs or the MLflow store.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from qiskit_aer import AerSimulator
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

import tasks.circuits as hw_tasks
from flows.train import pqfl_train
from pqfl.config import ClientProfile
from pqfl.quantum.ansatz import entangling_pairs, shape
from pqfl.quantum.devices import load_device
from pqfl.quantum.encodings import z_signs
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.qiskit_backend import aer_device_backend, build_template, parameter_values, prepare_job, run_job
from pqfl.quantum.spec import CircuitSpec
from pqfl.rng import derive_rng
from tasks.retry import FaultPlan, TransientError, retry_options
from tasks.settings import RetryConfig
from tests.tiny import TINY, write_config

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytestmark = pytest.mark.timeout(600)

ENCODINGS = ("amplitude", "angle", "iqp")
Z_TOL = 4.0


def _problem(spec: CircuitSpec, batch: int, seed: int):
    rng = derive_rng(seed, "test-hardware", spec.encoding, spec.qubits)
    return rng.normal(size=(batch, spec.n_features)), rng.uniform(-np.pi, np.pi, shape(spec.layers, spec.qubits))


def _sigma(z, shots):
    return np.sqrt(np.clip(1.0 - np.asarray(z) ** 2, 0.0, None) / shots)


def _device_spec(name: str, **kw) -> tuple[ClientProfile, CircuitSpec]:
    profile = ClientProfile(name="c", from_device=name, **kw)
    return profile, CircuitSpec.from_profile(profile)


# --------------------------------------------------------------------------- the circuit


STATEVECTOR_CASES = list(itertools.product(ENCODINGS, ("ring", "linear", "all_to_all"), (2, 3))) + [
    (e, "ring", 1) for e in ENCODINGS
]


@pytest.mark.parametrize(
    "encoding, pattern, qubits", STATEVECTOR_CASES, ids=["-".join(map(str, c)) for c in STATEVECTOR_CASES]
)
def test_template_matches_fast_simulator_on_aer_statevector(encoding, pattern, qubits):
    """Noiseless ⟨Z_i⟩ of the bound qiskit template (aer statevector) equals fast_expvals to 1e-10."""
    spec = CircuitSpec(qubits, 2, encoding, tuple(entangling_pairs(pattern, qubits)))
    X, theta = _problem(spec, batch=3, seed=STATEVECTOR_CASES.index((encoding, pattern, qubits)))
    template = build_template(spec)
    values = parameter_values(template, template.circuit, spec, X, theta)
    bare = template.circuit.remove_final_measurements(inplace=False)
    bare.save_statevector()
    circuits = [bare.assign_parameters(dict(zip(bare.parameters, row))) for row in values]
    result = AerSimulator(method="statevector").run(circuits).result()
    # qiskit is little-endian: basis index bit i is qubit i, so reverse the columns of z_signs.
    signs = z_signs(qubits)[:, ::-1]
    z_aer = np.stack([np.abs(np.asarray(result.get_statevector(i))) ** 2 @ signs for i in range(len(X))])
    assert np.allclose(z_aer, np.asarray(fast_expvals(spec, X, theta)), atol=1e-10, rtol=0)


def test_reuploading_template_matches_fast_simulator_on_aer_statevector():
    """The qiskit template re-uploads each layer's features as RY gates before that layer."""
    spec = CircuitSpec(3, 3, "angle", tuple(entangling_pairs("ring", 3)), reupload=True)
    X, theta = _problem(spec, batch=3, seed=11)
    template = build_template(spec)
    assert len(template.enc) == 9
    values = parameter_values(template, template.circuit, spec, X, theta)
    bare = template.circuit.remove_final_measurements(inplace=False)
    bare.save_statevector()
    circuits = [bare.assign_parameters(dict(zip(bare.parameters, row))) for row in values]
    result = AerSimulator(method="statevector").run(circuits).result()
    signs = z_signs(3)[:, ::-1]
    z_aer = np.stack([np.abs(np.asarray(result.get_statevector(i))) ** 2 @ signs for i in range(len(X))])
    assert np.allclose(z_aer, np.asarray(fast_expvals(spec, X, theta)), atol=1e-10, rtol=0)


def test_template_of_a_device_profile_uses_the_coupling_map():
    profile, spec = _device_spec("nairobi", encoding="angle", layers=2)
    ops = build_template(spec).circuit.count_ops()
    assert ops["cx"] == spec.layers * len(spec.pairs) == spec.layers * len(profile.coupling)
    assert ops["measure"] == spec.qubits


# --------------------------------------------------------------------------- transpiled jobs on aer


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_transpiled_device_job_on_ideal_aer_estimates_the_exact_values(encoding):
    """A job transpiled to 4 qubits in the middle of a 27-qubit device (routing, layout, the
    measurement map) gives ⟨Z_i⟩ within shot noise of the exact values; reading the wires
    in reverse order would not."""
    profile, spec = _device_spec("toronto", qubits=4, encoding=encoding, layers=2)
    assert profile.layout != list(range(4))  # a non-trivial placement
    X, theta = _problem(spec, batch=6, seed=11)
    shots = 8000
    job = prepare_job(spec, X, theta, load_device("toronto"), profile.layout, seed=1)
    assert job.circuit.num_qubits == load_device("toronto").num_qubits
    z = run_job(AerSimulator(), job, shots, seed=2)
    exact = np.asarray(fast_expvals(CircuitSpec(spec.qubits, spec.layers, encoding, spec.pairs), X, theta))
    s = _sigma(exact, shots)
    assert np.all(np.abs(z - exact) <= Z_TOL * s + 1e-12), (z, exact)
    var = np.clip(1 - exact**2, 1e-12, None) / shots
    assert np.sum((z - exact[:, ::-1]) ** 2 / var) > 20 * exact.size


def test_correlators_from_the_same_shots_estimate_the_exact_values():
    """measure: zz on ideal aer: ⟨Z_i Z_j⟩ estimated from the same shots as ⟨Z_i⟩, within
    shot noise of the fast simulator's exact values."""
    profile, spec = _device_spec("toronto", qubits=4, encoding="angle", layers=2, measure="zz")
    assert spec.correlators and spec.n_outputs == 10
    X, theta = _problem(spec, batch=5, seed=13)
    shots = 8000
    z = run_job(
        AerSimulator(), prepare_job(spec, X, theta, load_device("toronto"), profile.layout, seed=1), shots, seed=2
    )
    exact = np.asarray(
        fast_expvals(CircuitSpec(spec.qubits, spec.layers, "angle", spec.pairs, correlators=True), X, theta)
    )
    assert z.shape == exact.shape == (5, 10)
    assert np.all(np.abs(z - exact) <= Z_TOL * _sigma(exact, shots) + 1e-12), (z, exact)
    assert np.abs(exact[:, 4:]).max() > 0.2  # the correlators are not all ~0


def test_device_noise_on_aer_is_closer_to_the_calibrated_training_model_than_to_no_noise():
    """aer with NoiseModel.from_backend vs pqfl's per-qubit approximation of the same snapshot."""
    profile, spec = _device_spec("manila", encoding="angle", layers=1)
    X, theta = _problem(spec, batch=12, seed=12)
    device = load_device("manila")
    z = run_job(
        aer_device_backend(device, seed=3), prepare_job(spec, X, theta, device, profile.layout, seed=3), 4000, seed=3
    )
    noisy = np.asarray(fast_expvals(spec, X, theta))
    clean = np.asarray(fast_expvals(CircuitSpec(spec.qubits, spec.layers, spec.encoding, spec.pairs), X, theta))
    rms = lambda a: float(np.sqrt(np.mean((z - a) ** 2)))  # noqa: E731
    assert rms(noisy) < rms(clean)


# --------------------------------------------------------------------------- the execute-circuits task


@pytest.fixture(scope="module")
def manila_job():
    profile, spec = _device_spec("manila", qubits=3, encoding="iqp", layers=1)
    X, theta = _problem(spec, batch=6, seed=13)
    return profile, prepare_job(spec, X, theta, load_device("manila"), profile.layout, seed=4)


def test_execute_circuits_on_aer_and_on_an_injected_runtime_backend_agree(harness, manila_job):
    """The same job through qiskit-aer's sampler and through qiskit-ibm-runtime's SamplerV2
    on a backend object (a fake backend standing in for IBM hardware)."""
    _, job = manila_job
    shots = 4000
    z_aer, retries = hw_tasks.execute_circuits(aer_device_backend(load_device("manila"), seed=5), job, shots, 5, "c")
    z_ibm, _ = hw_tasks.execute_circuits(FakeManilaV2(), job, shots, 6, "c")
    assert retries == 0 and z_aer.shape == z_ibm.shape == (6, 3)
    counts = (z_ibm + 1) * shots / 2
    assert np.allclose(counts, np.round(counts), atol=1e-6)  # genuine finite-shot estimates
    s = np.sqrt(2.0) * _sigma((z_aer + z_ibm) / 2, shots)
    assert np.all(np.abs(z_aer - z_ibm) <= Z_TOL * s + 1e-12), (z_aer, z_ibm)


def test_execute_circuits_retries_injected_transient_faults_with_identical_results(harness, manila_job):
    _, job = manila_job
    backend = aer_device_backend(load_device("manila"), seed=7)
    policy = RetryConfig(max_retries=3, backoff_s=0.0, jitter=0.0)
    task = hw_tasks.execute_circuits.with_options(**retry_options(policy))
    clean, _ = task(backend, job, 512, 7, "c")
    # Find a seed whose first attempt draws a fault (the draws are seeded, so this is fixed).
    plan = next(
        p
        for p in (FaultPlan(seed=s, method="pqfl", max_retries=3, transient_rate=0.5) for s in range(100))
        if p.transient_fault("execute-circuits", "c", 0, 1)
    )
    faulty, retries = task(backend, job, 512, 7, "c", plan)
    assert retries >= 1
    assert np.array_equal(faulty, clean)  # the same seeded job: retrying changes nothing
    no_retry = hw_tasks.execute_circuits.with_options(**retry_options(RetryConfig(max_retries=0)))
    always = FaultPlan(seed=0, method="pqfl", max_retries=5, transient_rate=1.0)
    with pytest.raises(TransientError):
        no_retry(backend, job, 512, 7, "c", always)


# --------------------------------------------------------------------------- the token


def test_token_from_environment_then_prefect_secret(harness, monkeypatch):
    from prefect.blocks.system import Secret

    monkeypatch.delenv(hw_tasks.TOKEN_ENV, raising=False)
    with pytest.raises(hw_tasks.MissingTokenError) as err:
        hw_tasks.ibm_token()
    assert hw_tasks.TOKEN_ENV in str(err.value) and hw_tasks.TOKEN_SECRET_BLOCK in str(err.value)
    secret = "from-the-secret-" + derive_rng(1, "secret").bytes(6).hex()
    Secret(value=secret).save(hw_tasks.TOKEN_SECRET_BLOCK, overwrite=True)
    assert hw_tasks.ibm_token() == secret
    monkeypatch.setenv(hw_tasks.TOKEN_ENV, "from-the-environment")
    assert hw_tasks.ibm_token() == "from-the-environment"


# --------------------------------------------------------------------------- the whole flow


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_tiny_flow_evaluates_device_clients_on_hardware_without_leaking_the_token(
    harness, tmp_path, monkeypatch, caplog, capfd
):
    token = "pqfl-planted-token-" + derive_rng(0, "token").bytes(12).hex()
    monkeypatch.setenv(hw_tasks.TOKEN_ENV, token)
    calls = []

    def injected_backend(device, tok):
        calls.append((device, tok))
        return FakeManilaV2()  # served locally by qiskit-ibm-runtime's SamplerV2

    monkeypatch.setattr(hw_tasks, "RUNTIME_BACKEND_FACTORY", injected_backend)
    caplog.set_level(logging.DEBUG)
    cfg = {
        **TINY,
        "dataset": {**TINY["dataset"], "max_samples": 500},
        "federation": {**TINY["federation"], "methods": ["pqfl"]},
        "clients": TINY["clients"][:1]
        + [
            {
                "name": "aer-manila",
                "from_device": "manila",
                "qubits": 3,
                "layers": 1,
                "encoding": "angle",
                "hardware_shots": 256,
            },
            {
                "name": "ibm-client",
                "from_device": "manila",
                "qubits": 2,
                "layers": 1,
                "encoding": "iqp",
                "backend": "ibm_runtime",
                "device": "ibm_manila",
                "hardware_shots": 256,
            },
        ],
    }
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    result = pqfl_train(str(write_config(tmp_path, cfg)))

    # The IBM client really went through the token path and the injected backend.
    assert calls == [("ibm_manila", token)]

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    parent = client.get_run(result["mlflow_parent_run_ids"]["pqfl"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_name = {r.data.tags["pqfl.client"]: r for r in children}
    sim = {c["client"]: c["auroc"] for c in result["methods"]["pqfl"]["per_client"]}
    for name in ("aer-manila", "ibm-client"):
        m = by_name[name].data.metrics
        for key in ("hw/auroc", "hw/aupr", "hw/false_error", "hw/missing_error"):
            assert 0.0 <= m[key] <= 1.0, (name, key)
        assert m["hw/two_qubit_gates"] >= 1
        history = client.get_metric_history(by_name[name].info.run_id, "hw/auroc")
        assert [h.step for h in history] == [TINY["federation"]["rounds"]]
    assert "hw/auroc" not in by_name["amp-3q"].data.metrics  # simulated clients are not run on hardware
    pm = parent.data.metrics
    hw_aurocs = [by_name[n].data.metrics["hw/auroc"] for n in ("aer-manila", "ibm-client")]
    assert pm["hw/mean_auroc"] == pytest.approx(np.mean(hw_aurocs))
    assert pm["hw/worst_auroc"] == pytest.approx(min(hw_aurocs))
    assert pm["hw/sim_device_mean_auroc"] == pytest.approx(np.mean([sim["aer-manila"], sim["ibm-client"]]))
    assert "hardware.csv" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    # The result (what `pqfl run --json` writes) carries the same figures as MLflow.
    hw = json.loads(json.dumps(result["methods"]["pqfl"]["hardware"]))
    assert [r["client"] for r in hw["per_client"]] == ["aer-manila", "ibm-client"]
    for r in hw["per_client"]:
        for key in ("hw_auroc", "hw_aupr", "hw_two_qubit_gates"):
            assert r[key] == pytest.approx(by_name[r["client"]].data.metrics[key.replace("hw_", "hw/", 1)])
        assert r["sim_auroc"] == sim[r["client"]]
    for key in ("hw_mean_auroc", "hw_worst_auroc", "sim_device_mean_auroc"):
        assert hw[key] == pytest.approx(pm[f"hw/{key.removeprefix('hw_')}"])

    # The token is nowhere: not in any file of the MLflow store, not in any log record, not in
    # the process output, not in the Prefect API's logs. The searches are not vacuous: the
    # IBM client's name is found in the store and the log records, and output was captured.
    out, err = capfd.readouterr()
    assert _files_containing(store, b"ibm-client")
    assert not _files_containing(store, token.encode())
    assert "ibm-client" in caplog.text and token not in caplog.text
    assert out + err and token not in out + err

    from prefect.client.orchestration import get_client

    def every_page(read):  # the test harness's server holds other tests' logs too: read them all
        items, offset = [], 0
        while page := read(limit=200, offset=offset):
            items += page
            offset += len(page)
        return items

    with get_client(sync_client=True) as api:
        messages = " ".join(log.message for log in every_page(api.read_logs))
        runs = every_page(api.read_flow_runs)
    # (What reaches the API's log depends on the logging level earlier in-process CLI tests
    # left behind, so the non-vacuous evidence here is the flow runs themselves.)
    assert any(r.name and r.flow_id for r in runs) and token not in messages
    assert token not in repr([r.parameters for r in runs])
