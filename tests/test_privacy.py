"""Client-level differential privacy: the clipped noisy mean, and the ε the accountant reports."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from pqfl.config import PrivacyConfig, parse_config
from pqfl.data.preprocessing import GlobalStats, SufficientStats
from pqfl.federated.aggregation import masked_average
from pqfl.federated.jobs import aggregate_uploads, train_client
from pqfl.federated.robust import clip_update
from pqfl.federated.rounds import Federation
from pqfl.fleet import build_fleet, prepare
from pqfl.privacy.dp import clipped_noisy_mean, epsilon_spent, local_noise
from pqfl.privacy.statistics import rows_from_sums
from pqfl.rng import derive_rng
from tests.tiny import TINY, recording_map


def test_epsilon_matches_the_accountant_librarys_documented_gaussian_example():
    # dp_accounting's rdp_privacy_accountant_test: noise multiplier 4.530877117 is chosen to
    # give exactly (1, 1e-6)-DP for one unsampled Gaussian step, over orders 1.000 … 99.999.
    orders = [0.001 * i for i in range(1000, 100000)]
    assert epsilon_spent(4.530877117, rounds=1, delta=1e-6, orders=orders) == pytest.approx(1.0, abs=1e-6)


def test_epsilon_grows_with_rounds_shrinks_with_noise_and_sampling():
    eps = [epsilon_spent(1.0, k, 1e-5) for k in (1, 2, 5, 10)]
    assert eps == sorted(eps) and eps[0] < eps[-1]
    assert epsilon_spent(2.0, 10, 1e-5) < eps[-1]
    assert epsilon_spent(1.0, 10, 1e-5, sample_rate=0.2) < eps[-1]
    assert epsilon_spent(0.0, 3, 1e-5) == math.inf and epsilon_spent(1.0, 0, 1e-5) == 0.0


def test_clipped_noisy_mean_on_a_hand_computed_masked_case():
    previous = np.zeros((2, 2, 3))
    a = np.ones((2, 2, 3))  # norm √12 → every entry 1/√12 after clipping to 1
    b = np.zeros((1, 1, 3))
    b[0, 0] = [3.0, 4.0, 0.0]  # norm 5 → (0.6, 0.8, 0)
    out = clipped_noisy_mean(previous, [a, b], clip=1.0, noise_std=0.0, rng=np.random.default_rng(0))
    s = 1 / math.sqrt(12)
    np.testing.assert_allclose(out[0, 0], [(s + 0.6) / 2, (s + 0.8) / 2, s / 2])
    np.testing.assert_allclose(out[1], s)
    np.testing.assert_allclose(out[0, 1], s)
    # noise N(0, σ²) on the sum, divided by how many blocks hold each entry
    noisy = clipped_noisy_mean(previous, [a, b], clip=1.0, noise_std=0.7, rng=np.random.default_rng(5))
    draw = np.random.default_rng(5).normal(0.0, 0.7, size=previous.shape)
    count = np.ones_like(previous)
    count[0, 0] = 2
    np.testing.assert_allclose(noisy - out, draw / count)
    # an entry nobody holds keeps its previous value, noise or not
    held_nowhere = clipped_noisy_mean(np.full((2, 2, 3), 9.0), [b + 9], 1.0, 0.7, np.random.default_rng(1))
    np.testing.assert_array_equal(held_nowhere[1], 9.0)


def test_local_noise_clips_the_update_and_adds_the_clients_own_draw():
    block, upload = np.zeros((1, 1, 3)), np.array([[[0.0, 6.0, 8.0]]])
    out = local_noise(upload, block, clip=2.0, noise_std=0.5, rng=np.random.default_rng(3))
    np.testing.assert_allclose(out, [[[0.0, 1.2, 1.6]]] + np.random.default_rng(3).normal(0, 0.5, (1, 1, 3)))


@pytest.fixture(scope="module")
def tiny():
    cfg = parse_config(TINY).with_overrides({"federation.rounds": 3})
    return cfg, prepare(cfg)


def test_a_dp_run_reports_the_accountants_epsilon_every_round(tiny):
    cfg, fleet = tiny
    dp = PrivacyConfig(noise_multiplier=1.3, clip=0.5, delta=1e-5)
    fed = cfg.federation.model_copy(update={"privacy": dp})
    eps = []
    Federation(fleet, "pqfl", fed).run(on_round=lambda s: eps.append(s.last.epsilon))
    assert eps == [epsilon_spent(1.3, k, 1e-5) for k in (1, 2, 3)] and eps == sorted(eps)
    local = []
    Federation(fleet, "local", fed).run(on_round=lambda s: local.append(s.last.epsilon))
    assert local == [None] * 3  # nothing leaves a local client
    twice = Federation(fleet, "pqfl", fed.model_copy(update={"restarts": 2}))
    assert twice.epsilon(3) == epsilon_spent(1.3, 6, 1e-5)  # each restart releases the rows again


def test_without_noise_and_a_loose_clip_the_dp_mean_is_the_unweighted_masked_mean(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 1, "privacy": PrivacyConfig(noise_multiplier=0.0, clip=1e6)})
    calls, map_fn = recording_map()
    result = Federation(fleet, "fedavg", fed).run(map_fn=map_fn)
    (_, (job,), _) = next(c for c in calls if c[0] is aggregate_uploads)
    want = masked_average(job.previous[0], job.blocks, [1.0] * len(job.blocks))
    np.testing.assert_allclose(result.state.global_theta[0], want, atol=1e-12)
    assert result.state.last.epsilon == math.inf


def test_local_noise_is_added_by_honest_clients_before_upload(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(
        update={"rounds": 1, "privacy": PrivacyConfig(noise_multiplier=2.0, clip=0.1, noise="local")}
    )
    calls, map_fn = recording_map()
    Federation(fleet, "fedavg", fed).run(map_fn=map_fn)
    (_, jobs, trained) = next(c for c in calls if c[0] is train_client)
    (_, (agg,), _) = next(c for c in calls if c[0] is aggregate_uploads)
    for job, out, block in zip(jobs, trained, agg.blocks):
        rng = derive_rng(fed.seed, "dp-local", *job.setup.stream_id, 1)
        np.testing.assert_array_equal(block, local_noise(out.state.theta, job.fit.start, 0.1, 0.2, rng))
        update = block - job.fit.start - clip_update(out.state.theta - job.fit.start, 0.1)
        assert 0.05 < update.std() < 0.5  # the N(0, (2 · 0.1)²) draw, not the trained update


def test_the_sums_a_client_sends_reveal_its_mean_and_one_or_two_rows_exactly():
    rng = np.random.default_rng(7)
    one, two, many = rng.normal(size=(1, 5)), rng.normal(size=(2, 5)), rng.normal(size=(4, 5))
    np.testing.assert_allclose(rows_from_sums(SufficientStats.of(one)), one)
    got = rows_from_sums(SufficientStats.of(two))
    if not np.allclose(got[0], two[0]):  # the order of two rows is not in the sums
        got = got[::-1]
    np.testing.assert_allclose(got, two, atol=1e-10)
    assert rows_from_sums(SufficientStats.of(many)) is None
    stats = SufficientStats.of(many)
    np.testing.assert_allclose(stats.total / stats.n, many.mean(axis=0))  # the mean always leaks


def test_a_fisher_client_with_one_labelled_anomaly_sends_that_row(tiny, monkeypatch):
    cfg, fleet = tiny
    datas = list(fleet.datas)
    y = np.zeros_like(datas[0].y_train)
    y[3] = 1  # client 0 holds one labelled anomaly
    datas[0] = replace(datas[0], y_train=y)
    sent = []
    real = GlobalStats.from_sums.__func__

    def spy(cls, stats, anomalies=None, ridge=1e-3):
        sent.append(anomalies)
        return real(cls, stats, anomalies, ridge)

    monkeypatch.setattr(GlobalStats, "from_sums", classmethod(spy))
    profiles = [c.profile.model_copy(update={"projection": "fisher"}) for c in fleet.clients]
    build_fleet(datas, profiles, fleet.dataset)
    (anomalies,) = [a for a in sent if a is not None]
    np.testing.assert_array_equal(rows_from_sums(anomalies[0])[0], datas[0].X_train[3])
