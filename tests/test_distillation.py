"""Federated distillation (``feddistill``): clients share logits on reference rows drawn
from the federated Gaussian, never parameters, on cases with known answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pqfl.config import parse_config
from pqfl.data.preprocessing import GlobalStats, SufficientStats
from pqfl.federated.jobs import Trained, TrainJob, _distilled, _reference_scores, train_client
from pqfl.federated.rounds import Federation
from pqfl.federated.strategies import FedDistill, reference_rows
from pqfl.fleet import prepare
from tests.test_full_model_sharing import run_and_resume
from tests.tiny import TINY


@pytest.fixture(scope="module")
def tiny():
    cfg = parse_config(TINY)
    return cfg, prepare(cfg)


def test_reference_rows_follow_the_federated_mean_and_covariance():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3))
    X = rng.normal(size=(4000, 3)) @ A + np.array([1.0, -2.0, 5.0])
    stats = GlobalStats.from_sums([SufficientStats.of(X[:2000]), SufficientStats.of(X[2000:])])
    R = reference_rows(stats, 40_000, seed=1)
    np.testing.assert_allclose(R.mean(axis=0), X.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(np.cov(R.T), np.cov(X.T), rtol=0.05, atol=0.05)
    np.testing.assert_array_equal(reference_rows(stats, 5, seed=1), R[:5])  # seeded
    assert not np.allclose(reference_rows(stats, 5, seed=2), R[:5])


def _scores(fleet, n):
    rng = np.random.default_rng(3)
    return [rng.normal(size=n) for _ in fleet.clients]


def test_feddistill_averages_logits_shares_no_parameters_and_teaches_from_round_two(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    federation = Federation(fleet, "feddistill", fed)
    R = federation.strategy.n_reference
    logits, calls = _scores(fleet, R), []
    own = [np.full((c.spec.layers, c.spec.qubits, 3), float(n)) for n, c in enumerate(fleet.clients)]

    def map_fn(fn, jobs):
        if fn is not train_client:
            return list(map(fn, jobs))
        calls.extend(jobs)
        return [Trained(replace(j.state, theta=own[j.setup.index]), 0.0, upload_scores=logits[j.setup.index])
                for j in jobs]  # fmt: skip

    start = federation.initial_state()
    result = federation.run(map_fn=map_fn, evaluate=False)
    weights = np.array([c.n_train for c in fleet.clients], dtype=float)
    teacher = (weights[:, None] * np.stack(logits)).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(result.state.global_scores[0], teacher, atol=1e-12)
    np.testing.assert_array_equal(result.state.global_theta, start.global_theta)  # no parameter is averaged
    raw = reference_rows(fleet.stats, R, fed.seed)
    n = len(fleet.clients)
    for job in calls:  # each client scores the same rows, in its own input space
        np.testing.assert_array_equal(job.fit.reference, job.setup.feature_map.transform(raw))
        np.testing.assert_array_equal(job.fit.start, job.state.theta)  # its own model, as local training
    assert all(job.fit.teacher is None and job.fit.distill == 0.0 for job in calls[:n])
    for job in calls[n:]:
        np.testing.assert_allclose(job.fit.teacher, teacher, atol=1e-12)
        assert job.fit.distill == FedDistill().kappa
    for ((_, theta),), block in zip(result.members, own):
        np.testing.assert_array_equal(theta, block)  # evaluated with its own model


def test_distillation_pulls_the_reference_logits_towards_the_teacher(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"local_epochs": 20, "lr": 0.1})
    federation = Federation(fleet, "feddistill", fed)
    setup, state = fleet.clients[0], federation.initial_state().states[0]
    fit = federation.strategy.with_teacher(
        federation.strategy.configure_fit(state.theta, state.theta), federation.reference[0], None
    )
    before = _reference_scores(TrainJob(setup, state, fit, fed, "fast", 1), state)
    teacher = np.where(before > np.median(before), -3.0, 3.0)  # the opposite ranking, confidently
    taught = replace(fit, teacher=teacher, distill=20.0)
    extra_X, soft, weight = _distilled(TrainJob(setup, state, taught, fed, "fast", 1), taught)
    np.testing.assert_allclose(soft, 1 / (1 + np.exp(-teacher)))
    assert weight.sum() == pytest.approx(20.0 * fed.batch_size)  # κ times a minibatch
    alone = train_client(TrainJob(setup, state, fit, fed, "fast", 1))
    distilled = train_client(TrainJob(setup, state, taught, fed, "fast", 1))
    np.testing.assert_array_equal(distilled.upload_scores, _reference_scores(TrainJob(setup, state, fit, fed, "fast", 1),
                                                                             distilled.state))  # fmt: skip

    def agreement(scores):
        return np.corrcoef(scores, teacher)[0, 1]

    assert agreement(distilled.upload_scores) > agreement(alone.upload_scores) + 0.3


def test_feddistill_trains_for_real_resumes_and_refuses_one_class_and_dp(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    result, resumed, _ = run_and_resume(fleet, fed, "feddistill")
    S = result.state.global_scores
    assert S.shape == (1, FedDistill().n_reference) and np.isfinite(S).all()
    np.testing.assert_array_equal(resumed.state.global_scores, S)
    with pytest.raises(ValueError, match="feddistill works on the supervised model"):
        Federation(fleet, "feddistill", fed.model_copy(update={"objective": "one_class"}))
    private = parse_config({**TINY, "federation": {**TINY["federation"], "privacy": {"noise_multiplier": 1.0}}})
    with pytest.raises(ValueError, match="feddistill uploads more than one block"):
        Federation(fleet, "feddistill", private.federation)
