"""federation.restarts: R independent federations (own initial θ, heads and random streams);
each client's detector is the ensemble of its R personal models."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.special import expit, logit

from pqfl.config import FederationConfig, parse_config
from pqfl.federated.aggregation import block_of
from pqfl.federated.client import combine_scores, evaluate, evaluate_members, init_state, local_round, replicas
from pqfl.federated.local_update import predict_scores
from pqfl.federated.server import init_global, init_shared, replica_groups
from tests.test_head_fit import _setup
from tests.tiny import TINY

FED = FederationConfig(local_epochs=2, batch_size=16, lr=0.1)


def test_supervised_ensemble_is_the_log_odds_of_the_mean_probability():
    rng = np.random.default_rng(0)
    S = [rng.normal(0.0, 3.0, 64) for _ in range(3)]
    expected = logit(np.mean([expit(s) for s in S], axis=0))  # scipy, in probability space
    np.testing.assert_allclose(combine_scores(S, "supervised"), expected, rtol=1e-9, atol=1e-9)


def test_confident_members_do_not_tie():
    """In probability space both rows round to 1.0 and tie; the log-space form keeps them apart."""
    S = [np.array([40.0, 45.0]), np.array([50.0, 60.0])]
    naive = np.mean([expit(s) for s in S], axis=0)
    assert naive[0] == naive[1]
    combined = combine_scores(S, "supervised")
    assert np.all(np.isfinite(combined)) and combined[1] > combined[0]


def test_one_member_is_returned_as_is_and_equal_members_agree():
    s = np.array([-2.0, 0.5, 3.0])
    assert combine_scores([s], "supervised") is s
    np.testing.assert_allclose(combine_scores([s, s], "supervised"), s, atol=1e-12)
    np.testing.assert_allclose(combine_scores([s, 2 * s], "one_class"), 1.5 * s)


def test_restart_zero_is_the_single_run_and_each_restart_draws_its_own_start():
    groups = [0, 1, 0]
    single, three = init_shared(2, 3, 7, 0.3, groups), init_shared(2, 3, 7, 0.3, groups, restarts=3)
    assert three.shape == (6, 2, 3, 3)
    np.testing.assert_array_equal(three[:2], single)
    np.testing.assert_array_equal(three[0], init_global(2, 3, 7, 0.3))
    np.testing.assert_array_equal(three[2], three[3])  # a restart's groups start from one draw
    assert not np.allclose(three[2], three[0]) and not np.allclose(three[4], three[2])
    assert replica_groups(groups, 3) == [0, 1, 0, 2, 3, 2, 4, 5, 4]  # restarts never share θ


def test_replicas_keep_the_data_and_change_only_the_random_streams():
    setup = _setup()
    virtual = replicas([setup], 3)
    assert virtual[0] is setup and [v.replica for v in virtual] == [0, 1, 2]
    assert all(v.X_train is setup.X_train for v in virtual)
    assert setup.stream_id == (setup.index,)
    assert len({v.stream_id for v in virtual}) == 3
    block = block_of(init_global(1, 2, 3), 1, 2)
    heads = [init_state(v, block, seed=3).w for v in virtual]
    np.testing.assert_array_equal(heads[0], init_state(setup, block, seed=3).w)
    assert not np.allclose(heads[1], heads[0])
    # Same start, own minibatch order: the restarts train to different models.
    trained = [
        local_round(
            v,
            init_state(v, block, 3),
            start_theta=block,
            anchor=None,
            prox=0.0,
            fed=FED,
            simulator="fast",
            round_index=1,
        )[0]
        for v in virtual[:2]
    ]
    assert not np.allclose(trained[0].theta, trained[1].theta)


def test_evaluating_restarts_scores_their_ensemble():
    setup = _setup()
    block = block_of(init_global(1, 2, 5), 1, 2)
    members = []
    for v in replicas([setup], 2):
        state, _ = local_round(
            v,
            init_state(v, block, 5),
            start_theta=block,
            anchor=None,
            prox=0.0,
            fed=FED,
            simulator="fast",
            round_index=1,
        )
        members.append((state, state.theta))
    one = evaluate(setup, *members[0], fed=FED, simulator="fast", round_index=1)
    alone = evaluate_members(setup, members[:1], fed=FED, simulator="fast", round_index=1)
    assert one == alone  # test scores are left out of the comparison (compare=False)
    np.testing.assert_array_equal(one.test_scores, alone.test_scores)
    both = evaluate_members(setup, members, fed=FED, simulator="fast", round_index=1)
    scores = [
        predict_scores(
            setup.spec,
            objective="supervised",
            simulator="fast",
            shots=None,
            params=st.params(theta=th),
            center=None,
            X=setup.X_test,
            seed=FED.seed,
            stream=("test", *replace(setup, replica=r).stream_id, 1),
        )
        for r, (st, th) in enumerate(members)
    ]
    np.testing.assert_allclose(both.test_scores, combine_scores(scores, "supervised"), atol=1e-12)
    assert not np.allclose(both.test_scores, one.test_scores)


def test_config_checks_restarts():
    base = {**TINY, "federation": {**TINY["federation"], "restarts": 0}}
    with pytest.raises(ValueError, match="restarts"):
        parse_config(base)
    device = {"name": "aer-manila", "from_device": "manila", "qubits": 3, "layers": 1, "encoding": "angle"}
    clients = TINY["clients"] + [device]
    ok = {**TINY, "clients": clients}
    parse_config(ok)  # a hardware evaluation with one model is fine
    with pytest.raises(
        ValueError, match=r"federation\.restarts: 2 .*'aer-manila' gets a hardware evaluation \(aer\).*restarts: 1"
    ):
        parse_config({**ok, "federation": {**TINY["federation"], "restarts": 2}})
