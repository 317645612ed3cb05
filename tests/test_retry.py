"""Retry classification, Prefect retry options and seeded fault injection (tasks/retry.py)."""

from __future__ import annotations

import os
import time

import pytest
from prefect import flow, task
from prefect.runtime import task_run
from prefect.testing.utilities import prefect_test_harness

from pqfl.config import RetryConfig, parse_config
from pqfl.errors import PQFLInputError
from tasks.retry import (
    FAULT_RATE_ENV,
    FaultPlan,
    PermanentError,
    TransientError,
    is_transient,
    retries_used,
    retry_options,
    with_fault_env,
)
from tests.tiny import TINY

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
    assert retries_used(TransientError(), RetryConfig(max_retries=4)) == 4
    assert retries_used(PermanentError(), RetryConfig(max_retries=4)) == 0


def test_fault_draws_are_seeded_and_spare_the_last_attempt():
    plan = FaultPlan(seed=5, method="pqfl", max_retries=3, transient_rate=0.3)
    draws = [plan.transient_fault("train", f"c{c}", r, a) for c in range(8) for r in range(1, 11) for a in (1, 2, 3)]
    again = [plan.transient_fault("train", f"c{c}", r, a) for c in range(8) for r in range(1, 11) for a in (1, 2, 3)]
    assert draws == again
    rate = sum(draws) / len(draws)
    assert 0.2 < rate < 0.4, rate  # 240 Bernoulli(0.3) draws
    other_seed = FaultPlan(seed=6, method="pqfl", max_retries=3, transient_rate=0.3)
    assert draws != [other_seed.transient_fault("train", f"c{c}", r, a) for c in range(8) for r in range(1, 11) for a in (1, 2, 3)]
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


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=60):
        yield


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
