"""Adversarial clients: who attacks, what they upload, and what the run reports about them."""

from __future__ import annotations

import numpy as np
import pytest

from pqfl.config import AttackConfig, parse_config
from pqfl.errors import PQFLInputError
from pqfl.federated.attacks import attacker_indices, poison_fleet, poisoned_upload
from pqfl.federated.jobs import aggregate_uploads, train_client
from pqfl.federated.rounds import Federation
from pqfl.federated.snapshot import from_data, to_data
from pqfl.fleet import prepare
from pqfl.results import RoundSummary
from tests.tiny import TINY, recording_map

TRAINED, GLOBAL = np.full((1, 2, 3), 0.5), np.full((1, 2, 3), 0.2)


def test_attackers_are_drawn_from_the_seed_the_same_for_every_method():
    attack = AttackConfig(kind="sign_flip", fraction=0.3)
    first = attacker_indices(10, attack, seed=4)
    assert len(first) == 3 and first == sorted(set(first)) and all(0 <= n < 10 for n in first)
    assert attacker_indices(10, attack, seed=4) == first
    assert any(attacker_indices(10, attack, seed=s) != first for s in range(5, 10))
    assert attacker_indices(10, AttackConfig(), seed=4) == []
    assert AttackConfig(kind="gaussian", fraction=0.125).attackers(4) == 1  # half rounds up


def test_each_attack_uploads_what_its_definition_says():
    rng = np.random.default_rng(0)

    def upload(**kw):
        return poisoned_upload(AttackConfig(fraction=0.25, **kw), TRAINED, GLOBAL, 4, rng)

    np.testing.assert_allclose(upload(kind="sign_flip"), 0.2 - 0.3)
    np.testing.assert_allclose(upload(kind="sign_flip", scale=2.0), 0.2 - 2 * 0.3)
    np.testing.assert_allclose(upload(kind="model_replacement"), 0.2 + 4 * 0.3)  # boosted by the 4 uploaders
    np.testing.assert_allclose(upload(kind="model_replacement", boost=10.0), 0.2 + 10 * 0.3)
    np.testing.assert_array_equal(upload(kind="free_rider"), GLOBAL)
    np.testing.assert_array_equal(upload(kind="label_flip"), TRAINED)
    big = poisoned_upload(
        AttackConfig(kind="gaussian", fraction=0.25, sigma=2.0), np.zeros((40, 50, 3)), np.zeros((40, 50, 3)), 4, rng
    )
    assert abs(big.mean()) < 0.1 and abs(big.std() - 2.0) < 0.1


@pytest.fixture(scope="module")
def tiny():
    cfg = parse_config(TINY).with_overrides({"federation.rounds": 1})
    return cfg, prepare(cfg)


def test_label_flipping_swaps_only_the_attackers_training_labels_and_leaves_the_fleet(tiny):
    _, fleet = tiny
    before = [c.y_train.copy() for c in fleet.clients]
    poisoned = poison_fleet(fleet, [1], "label_flip")
    np.testing.assert_array_equal(poisoned.clients[1].y_train, 1 - before[1])
    np.testing.assert_array_equal(poisoned.datas[1].y_train, 1 - before[1])
    for n in (0, 2):
        assert poisoned.clients[n] is fleet.clients[n]
    np.testing.assert_array_equal(poisoned.clients[1].y_test, fleet.clients[1].y_test)
    for c, y in zip(fleet.clients, before):
        np.testing.assert_array_equal(c.y_train, y)
    assert poison_fleet(fleet, [1], "sign_flip") is fleet
    # the pooled model trains on the attackers' flipped rows among everyone's
    fed = parse_config(TINY).federation.model_copy(update={"attack": AttackConfig(kind="label_flip", fraction=0.34)})
    pooled = Federation(fleet, "centralized", fed).roles.trainers[0]
    flipped = Federation(fleet, "centralized", fed).attackers
    assert len(flipped) == 1
    expected = (
        sum(int(c.y_train.sum()) for c in fleet.clients) + len(before[flipped[0]]) - 2 * int(before[flipped[0]].sum())
    )
    assert int(pooled.y_train.sum()) == expected


@pytest.mark.parametrize("kind", ["sign_flip", "free_rider", "model_replacement"])
def test_the_server_receives_the_attackers_poisoned_block_and_honest_blocks_as_trained(tiny, kind):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"attack": AttackConfig(kind=kind, fraction=0.34)})
    federation = Federation(fleet, "fedavg", fed)
    calls, map_fn = recording_map()
    result = federation.run(map_fn=map_fn)
    (attacker,) = federation.attackers
    assert result.attackers == (fleet.clients[attacker].name,)
    (_, train_jobs, trained), (_, (agg,), _) = [c for c in calls if c[0] in (train_client, aggregate_uploads)]
    for n, (job, out, block) in enumerate(zip(train_jobs, trained, agg.blocks)):
        if n != attacker:
            np.testing.assert_array_equal(block, out.state.theta)
            continue
        w, v = job.fit.start, out.state.theta  # fedavg starts from the global block
        want = {"sign_flip": w - (v - w), "free_rider": w, "model_replacement": w + 3 * (v - w)}[kind]
        np.testing.assert_allclose(block, want)
    honest = [ev for ev in result.evaluations if ev.client not in result.attackers]
    assert result.honest_summary == RoundSummary.of(1, honest) and len(honest) == 2
    report = result.state.last
    assert report.honest_summary == result.honest_summary
    assert report.attacker_summary.mean_auroc == result.evaluations[attacker].auroc
    meta, arrays = to_data(result.state)
    assert from_data(meta, arrays).last.attackers == result.attackers


def test_without_an_attack_the_honest_summary_is_the_summary(tiny):
    cfg, fleet = tiny
    result = Federation(fleet, "pqfl", cfg.federation).run()
    assert result.attackers == () and result.honest_summary == result.summary
    assert result.state.last.attacker_summary is None and result.state.last.honest_summary == result.summary


@pytest.mark.parametrize(
    "federation, field, fix",
    [
        (
            {"attack": {"kind": "sign_flip", "fraction": 0.5}, "aggregator": {"rule": "median"}},
            "federation.aggregator.rule: median tolerates fewer than half attackers",
            "use a fraction below 0.5",
        ),
        ({"privacy": {"noise_multiplier": -1}}, "federation.privacy.noise_multiplier", "use 0"),
        ({"privacy": {"clip": 0}}, "federation.privacy.clip", "use e.g. 1.0"),
        ({"aggregator": {"clip": 0}}, "federation.aggregator.clip", "leave it unset"),
        ({"attack": {"fraction": 0.3}}, "federation.attack.fraction", "set a kind"),
        ({"attack": {"kind": "gaussian", "fraction": 0.1}}, "rounds to no attacker", "add clients"),
        ({"attack": {"kind": "gaussian", "fraction": 0.9}}, "every client an attacker", "lower fraction"),
        ({"aggregator": {"rule": "krum", "byzantine": 1}}, "needs at least 2f + 3 = 5 clients", "add clients"),
        ({"privacy": {}, "aggregator": {"rule": "median"}}, "federation.privacy", "use rule: mean"),
        ({"attack": {"kind": "label_flip", "fraction": 0.3}, "objective": "one_class"}, "attack.kind", "sign_flip"),
        ({"attack": {"kind": "typo"}}, "federation.attack.kind", "label_flip"),
    ],
)
def test_bad_attack_aggregator_and_privacy_settings_fail_at_load_with_field_and_fix(federation, field, fix):
    data = {**TINY, "federation": {**TINY["federation"], **federation}}
    with pytest.raises(PQFLInputError) as err:
        parse_config(data)
    assert field in str(err.value) and fix in str(err.value)


@pytest.mark.parametrize("method", ["fedavg_full", "feddbe", "feddistill", "fedenc"])
def test_block_poisoning_is_refused_for_methods_that_share_more_than_blocks(tiny, method):
    """The poisoning kinds rewrite the uploaded block only; a method that also shares heads,
    means, scores or an encoder would face a half-attack that looks like robustness."""
    cfg, fleet = tiny
    poisoned = cfg.federation.model_copy(update={"attack": AttackConfig(kind="sign_flip", fraction=0.34)})
    with pytest.raises(ValueError, match=f"sign_flip poisons the uploaded blocks, and {method} also shares"):
        Federation(fleet, method, poisoned)
    flipped = cfg.federation.model_copy(update={"attack": AttackConfig(kind="label_flip", fraction=0.34)})
    assert Federation(fleet, method, flipped).attackers  # label flipping attacks any method's training
    Federation(fleet, "fedavg", poisoned)  # blocks alone: the attack is whole
