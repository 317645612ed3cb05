"""Retries and client failures: transient/permanent classification, Prefect retry options,
seeded fault injection (tasks/retry.py), and the training flow under faults: identical
metrics with retried faults, a dropped client, and a run below quorum."""

from __future__ import annotations

import os
import time

import pytest
from mlflow.tracking import MlflowClient
from prefect import flow, task
from prefect.runtime import task_run

from flows.checkpoint import read_checkpoint
from flows.train import pqfl_train
from pqfl.errors import PQFLInputError, PQFLRunError
from tasks.retry import (
    FAULT_RATE_ENV,
    FaultPlan,
    PermanentError,
    TransientError,
    is_transient,
    retry_options,
    with_fault_env,
)
from tasks.settings import RetryConfig
from tasks.settings import parse_run_config as parse_config
from tests.tiny import TINY, write_config

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytestmark = pytest.mark.timeout(300)


def _named(name: str, *bases) -> type:
    return type(name, bases or (Exception,), {})


def test_classification():
    assert is_transient(TransientError("x"))
    assert is_transient(TimeoutError("x"))
    assert is_transient(ConnectionResetError("x"))  # a ConnectionError
    # qiskit-style names, matched through the MRO without importing qiskit
    job_error = _named("JobError")
    assert is_transient(_named("RuntimeJobFailureError", job_error)("x"))
    assert is_transient(_named("IBMBackendApiError")("x"))
    assert not is_transient(PermanentError("x"))
    assert not is_transient(PQFLInputError("bad config"))
    assert not is_transient(_named("CircuitError")("x"))
    assert not is_transient(_named("TranspilerError")("x"))
    # a backend error that is also the caller's ValueError is permanent
    assert not is_transient(_named("IBMBackendValueError", _named("IBMBackendError"), ValueError)("x"))
    assert not is_transient(ValueError("x")) and not is_transient(KeyError("x"))
    assert not is_transient(FileNotFoundError("x"))  # an OSError, but not a passing one


def test_retry_options_follow_the_policy():
    opts = retry_options(RetryConfig(max_retries=4, backoff_s=0.5, jitter=0.3))
    assert opts["retries"] == 4
    assert opts["retry_jitter_factor"] == 0.3
    # exponential backoff as Prefect computes it for the task: base · 2^n
    t = task(lambda: None).with_options(**opts)
    assert t.retry_delay_seconds == [0.5 * 2**n for n in range(4)]
    assert t.retries == 4 and t.retry_condition_fn is opts["retry_condition_fn"]


def test_fault_draws_are_seeded_and_spare_the_last_attempt():
    plan = FaultPlan(seed=5, method="pqfl", max_retries=3, transient_rate=0.3)
    draws = [plan.transient_fault("train", f"c{c}", r, a) for c in range(8) for r in range(1, 11) for a in (1, 2, 3)]
    again = [plan.transient_fault("train", f"c{c}", r, a) for c in range(8) for r in range(1, 11) for a in (1, 2, 3)]
    assert draws == again
    rate = sum(draws) / len(draws)
    assert 0.2 < rate < 0.4, rate  # 240 Bernoulli(0.3) draws
    other_seed = FaultPlan(seed=6, method="pqfl", max_retries=3, transient_rate=0.3)
    assert draws != [
        other_seed.transient_fault("train", f"c{c}", r, a) for c in range(8) for r in range(1, 11) for a in (1, 2, 3)
    ]
    always = FaultPlan(seed=5, method="pqfl", max_retries=3, transient_rate=1.0)
    assert [always.transient_fault("train", "c", 1, a) for a in (1, 2, 3, 4)] == [True, True, True, False]
    no_retries = FaultPlan(seed=5, method="pqfl", max_retries=0, transient_rate=1.0)
    assert not no_retries.transient_fault("train", "c", 1, 1)


def test_outage_and_permanent_faults_hit_only_their_client_and_rounds():
    plan = FaultPlan(seed=0, method="pqfl", max_retries=2, outage={"a": (2,)}, permanent={"b": (1, 3)})
    with pytest.raises(TransientError):
        plan.check("train", "a", 2, 3)  # an outage outlasts every retry
    plan.check("train", "a", 1, 1)
    plan.check("evaluate", "a", 2, 1)
    with pytest.raises(PermanentError):
        plan.check("train", "b", 3, 1)
    plan.check("train", "b", 2, 1)


def test_fault_config_validation_and_env(monkeypatch):
    base = {k: v for k, v in TINY.items()}
    cfg = parse_config({**base, "faults": {"transient_rate": 0.25, "outage": {"amp-3q": [2]}}})
    assert FaultPlan.from_config(cfg, "pqfl").outage == {"amp-3q": (2,)}
    with pytest.raises(PQFLInputError, match="faults.outage: unknown client 'nobody'"):
        parse_config({**base, "faults": {"outage": {"nobody": [1]}}})
    with pytest.raises(PQFLInputError, match="faults.transient_rate"):
        parse_config({**base, "faults": {"transient_rate": 1.5}})
    monkeypatch.setenv(FAULT_RATE_ENV, "0.4")
    assert with_fault_env(cfg).faults.transient_rate == 0.4
    monkeypatch.setenv(FAULT_RATE_ENV, "lots")
    with pytest.raises(PQFLInputError, match=FAULT_RATE_ENV):
        with_fault_env(cfg)
    monkeypatch.delenv(FAULT_RATE_ENV)
    assert with_fault_env(cfg) is cfg


@task
def flaky(plan: FaultPlan, client: str) -> tuple[str, int]:
    plan.check("train", client, 1, task_run.run_count)
    return client, task_run.run_count


def test_prefect_retries_transient_and_fails_fast_on_permanent(harness):
    """Through Prefect's own retry machinery: transient faults are retried with backoff
    until they pass, a permanent one fails on its first attempt."""
    policy = RetryConfig(max_retries=3, backoff_s=0.05, jitter=0.2)
    plan = FaultPlan(seed=1, method="m", max_retries=3, transient_rate=1.0, permanent={"bad": (1,)})
    retried = flaky.with_options(**retry_options(policy))

    @flow
    def run():
        ok = retried.submit(plan, "good")
        bad = retried.submit(plan, "bad")
        started = time.perf_counter()
        value = ok.result()
        waited = time.perf_counter() - started
        try:
            bad.result()
            outcome = None
        except PermanentError as err:
            outcome = err
        return value, waited, outcome

    (client, attempts), waited, err = run()
    # rate 1.0: every attempt but the last allowed one fails
    assert (client, attempts) == ("good", policy.max_retries + 1)
    # three backoff waits of about 0.05, 0.1, 0.2 s (jitter keeps each below 1.2x)
    assert waited >= 0.5 * sum(policy.backoff_s * 2**n for n in range(policy.max_retries))
    assert isinstance(err, PermanentError) and "attempt 1" in str(err)


# --- the training flow under faults (real Prefect server, real MLflow store) ----------------

FAST_RETRIES = {"max_retries": 3, "backoff_s": 0.01, "jitter": 0.5}
FED = {**TINY["federation"], "methods": ["pqfl"], "rounds": 3}


@pytest.fixture(scope="module")
def store(harness, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield folder, MlflowClient(tracking_uri=uri)
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI")
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def _run(folder, name: str, federation: dict | None = None, **sections):
    (folder / name).mkdir()
    return pqfl_train(str(write_config(folder / name, federation=federation or FED, retries=FAST_RETRIES, **sections)))


@pytest.fixture(scope="module")
def clean(store):
    return _run(store[0], "clean")


def _expected_retries(plan: FaultPlan, job: str, client: str, round_index: int) -> int:
    attempt = 1
    while plan.transient_fault(job, client, round_index, attempt):
        attempt += 1
    return attempt - 1


def test_thirty_percent_transient_faults_change_no_metric(store, clean, monkeypatch):
    folder, client = store
    monkeypatch.setenv(FAULT_RATE_ENV, "0.3")
    faulty = _run(folder, "faulty")
    res, ref = faulty["methods"]["pqfl"], clean["methods"]["pqfl"]
    assert {k: v for k, v in res.items() if k not in ("wall_s", "retries_total", "timings")} == {
        k: v for k, v in ref.items() if k not in ("wall_s", "retries_total", "timings")
    }
    plan = FaultPlan(seed=FED["seed"], method="pqfl", max_retries=FAST_RETRIES["max_retries"], transient_rate=0.3)
    names = [c["name"] for c in TINY["clients"]]
    per_round = {
        k: {n: sum(_expected_retries(plan, job, n, k) for job in ("train", "evaluate")) for n in names}
        for k in range(1, FED["rounds"] + 1)
    }
    total = sum(sum(r.values()) for r in per_round.values())
    assert total > 0 and res["retries_total"] == total and ref["retries_total"] == 0
    run_id = faulty["mlflow_parent_run_ids"]["pqfl"]
    run = client.get_run(run_id)
    assert run.data.params["faults.transient_rate"] == "0.3"  # the environment override is recorded
    assert run.data.metrics["fl/retries_total"] == total
    assert {m.step: m.value for m in client.get_metric_history(run_id, "fl/retries")} == {
        k: sum(r.values()) for k, r in per_round.items()
    }
    for child in client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"):
        name = child.data.tags["pqfl.client"]
        logged = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "fl/retries")}
        assert logged == {k: per_round[k][name] for k in per_round}, name


def test_a_client_down_for_a_round_is_dropped_and_keeps_its_state(store, clean):
    folder, client = store
    # min_clients 2: still met in round 2; centralized (one pooled trainer) must not read it as a quorum
    federation = {**FED, "methods": ["pqfl", "centralized"], "min_clients": 2}
    res = _run(folder, "outage", federation, faults={"outage": {"amp-3q": [2]}})
    assert res["methods"]["centralized"]["clients_dropped"] == 0
    run_id = res["mlflow_parent_run_ids"]["pqfl"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["pqfl.dropped"] == "r2:amp-3q"
    assert {m.step: m.value for m in client.get_metric_history(run_id, "fl/clients_dropped")} == {1: 0, 2: 1, 3: 0}
    assert {m.step: m.value for m in client.get_metric_history(run_id, "fl/clients_in_round")} == {1: 3, 2: 2, 3: 3}
    # the down client spent all its retries in round 2
    assert res["methods"]["pqfl"]["retries_total"] == FAST_RETRIES["max_retries"]
    (child,) = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}' and tags.`pqfl.client` = 'amp-3q'"
    )
    history = lambda key: {m.step: m.value for m in client.get_metric_history(child.info.run_id, key)}  # noqa: E731
    assert history("fl/dropped") == {1: 0, 2: 1, 3: 0}
    assert sorted(history("train/loss")) == [1, 3]  # no training in round 2
    # Kept, not reset: in round 2 it is evaluated with its round-1 model (exact simulation,
    # no shots), so its scores repeat; in round 3 it trains again from there.
    assert history("test/auroc")[2] == history("test/auroc")[1] and history("val/auroc")[2] == history("val/auroc")[1]
    clean_hist = clean["methods"]["pqfl"]["history"]
    assert res["methods"]["pqfl"]["history"][0] == clean_hist[0]
    assert res["methods"]["pqfl"]["history"][1] != clean_hist[1]


def test_below_quorum_the_flow_fails_and_keeps_the_last_checkpoint(store):
    folder, client = store
    faults = {"outage": {"amp-3q": [2]}, "permanent": {"iqp-2q-shots": [2]}}
    with pytest.raises(PQFLRunError, match=r"round 2: only 1 of 3 clients .* federation.min_clients = 2") as err:
        _run(folder, "quorum", faults=faults, federation={**FED, "min_clients": 2})
    exp = client.get_experiment_by_name(TINY["name"])
    (run,) = client.search_runs([exp.experiment_id], "tags.`pqfl.role` = 'parent' and attributes.status = 'FAILED'")
    assert "min_clients" in run.data.tags["pqfl.failure"] and run.info.run_id in str(err.value)
    assert set(run.data.tags["pqfl.dropped"].split("; ")) == {"r2:amp-3q", "r2:iqp-2q-shots"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/mean_auroc")] == [1]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert {c.info.status for c in children} == {"FAILED"}
    ckpt = read_checkpoint(run.data.tags["pqfl.checkpoint"])
    assert ckpt.round == 1 and not ckpt.finished and [h.round for h in ckpt.history] == [1]
