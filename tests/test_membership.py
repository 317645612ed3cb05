"""Membership inference (pqfl.privacy.membership): the attack AUROC itself, the per-row
losses it ranks, that both attacks find a detector that memorised its rows, and the
per-client report of a federation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.special import expit

from pqfl.config import parse_config
from pqfl.federated.client import combine_scores, init_state, local_round
from pqfl.federated.local_update import predict_scores
from pqfl.federated.rounds import Federation
from pqfl.federated.server import init_global
from pqfl.fleet import prepare
from pqfl.privacy.membership import loss_threshold_attack, membership_report, row_losses, shadow_attack
from tests.tiny import TINY

# A client with enough parameters (4 qubits x 3 layers, re-uploading) to memorise a handful of rows.
WIDE = {"name": "angle-4q-3l", "qubits": 4, "layers": 3, "entangling": "ring", "encoding": "angle", "reupload": True}


@pytest.fixture(scope="module")
def tiny():
    cfg = parse_config(TINY).with_overrides({"federation.rounds": 2})
    return cfg, prepare(cfg)


def test_the_threshold_attack_is_the_auroc_of_minus_the_loss():
    low, high = np.array([0.1, 0.2, 0.3]), np.array([0.7, 0.8, 0.9, 1.0])
    assert loss_threshold_attack(low, high) == 1.0  # members fit better: fully exposed
    assert loss_threshold_attack(high, low) == 0.0
    assert loss_threshold_attack(low, low.copy()) == 0.5  # same losses: a coin
    assert loss_threshold_attack(np.array([0.1, 0.9]), np.array([0.5])) == 0.5
    assert np.isnan(loss_threshold_attack(low, np.array([])))


def _scores(setup, state, X, objective="supervised"):
    return predict_scores(
        setup.spec,
        objective=objective,
        simulator="fast",
        shots=setup.profile.shots,
        params=state.params(),
        center=state.center,
        X=X,
        seed=0,
        stream=("any",),
    )


def test_row_losses_are_the_per_row_cross_entropy_of_the_detectors_logit(tiny):
    _, fleet = tiny
    setup = fleet.clients[0]  # exact simulation: its scores do not depend on the shot stream
    assert setup.profile.shots is None
    a = init_state(setup, init_global(setup.spec.layers, setup.spec.qubits, 1, 0.8), 1)
    b = init_state(setup, init_global(setup.spec.layers, setup.spec.qubits, 2, 0.8), 2)
    X, y = setup.X_val, setup.y_val
    kw = dict(objective="supervised", simulator="fast", seed=0, X=X, y=y, stream=("m",))

    def bce(s):
        p = expit(s)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))

    s = _scores(setup, a, X)
    np.testing.assert_allclose(row_losses(setup, [(a, a.theta)], **kw), bce(s), rtol=1e-9)
    both = combine_scores([s, _scores(setup, b, X)], "supervised")  # a two-restart detector
    np.testing.assert_allclose(row_losses(setup, [(a, a.theta), (b, b.theta)], **kw), bce(both), rtol=1e-9)
    assert not np.allclose(bce(both), bce(s))

    one_class = replace(a, center=np.ones(setup.spec.n_outputs))
    distances = _scores(setup, one_class, X, "one_class")
    losses = row_losses(setup, [(one_class, one_class.theta)], **{**kw, "objective": "one_class"})
    np.testing.assert_allclose(losses, distances)


@pytest.fixture(scope="module")
def memoriser():
    """A wide client trained for many epochs on 8 of its rows (4 normal, 4 anomalies), and
    its untrained start. Measured with these settings over seeds 0-5: threshold AUROC 1.0
    trained vs 0.42-0.62 untrained; shadow AUROC 0.88-0.99 trained vs 0.59-0.69 untrained
    (above 0.5 because the 8 rows are half anomalies, the non-members a quarter, and the
    supervised attack reads the label)."""
    cfg = parse_config({**TINY, "clients": [TINY["clients"][0], WIDE, TINY["clients"][2]]})
    setup = prepare(cfg).clients[1]
    rng = np.random.default_rng(0)
    rows = np.r_[[rng.choice(np.flatnonzero(setup.y_train == c), 4, replace=False) for c in (0, 1)]].ravel()
    few = replace(setup, X_train=setup.X_train[rows], y_train=setup.y_train[rows])
    fed = cfg.federation.model_copy(update={"local_epochs": 100, "batch_size": 8, "lr": 0.1, "seed": 0})
    start = init_state(few, init_global(few.spec.layers, few.spec.qubits, 0, 0.3), 0)
    trained, _ = local_round(
        few, start, start_theta=start.theta, anchor=None, prox=0.0, fed=fed, simulator="fast", round_index=1
    )
    return few, fed, start, trained


def test_the_threshold_attack_exposes_a_detector_that_memorised_its_rows(memoriser):
    few, _, start, trained = memoriser
    X_out, y_out = np.r_[few.X_val, few.X_test], np.r_[few.y_val, few.y_test]
    kw = dict(objective="supervised", simulator="fast", seed=0)

    def attack(state):
        inside = row_losses(few, [(state, state.theta)], X=few.X_train, y=few.y_train, stream=("in",), **kw)
        outside = row_losses(few, [(state, state.theta)], X=X_out, y=y_out, stream=("out",), **kw)
        return loss_threshold_attack(inside, outside)

    untrained, memorised = attack(start), attack(trained)
    assert memorised > 0.9 and memorised > untrained + 0.25, (untrained, memorised)


def test_the_shadow_attack_learns_what_membership_looks_like_and_is_seeded(memoriser):
    few, fed, start, trained = memoriser
    memorised = shadow_attack(few, [(trained, trained.theta)], fed, rounds=1, seed=0)
    untrained = shadow_attack(few, [(start, start.theta)], fed, rounds=1, seed=0)
    assert 0.0 <= untrained <= 1.0 and memorised > 0.8 and memorised > untrained + 0.15, (untrained, memorised)
    assert shadow_attack(few, [(trained, trained.theta)], fed, rounds=1, seed=0) == memorised


def test_the_report_has_one_row_per_client_and_attacks_the_global_model_of_uploading_methods(tiny):
    cfg, fleet = tiny
    own = {"client", "method", "threshold_auroc", "shadow_auroc", "n_members", "n_nonmembers"}
    shared = {"global_threshold_auroc", "global_shadow_auroc"}
    reports = {}
    for method in ("pqfl", "fedavg", "local"):
        federation = Federation(fleet, method, cfg.federation)
        reports[method] = membership_report(federation.run(), cfg.federation, global_model=federation)
    for method, rows in reports.items():
        assert [r["client"] for r in rows] == [c.name for c in fleet.clients]
        for row, setup in zip(rows, fleet.clients):
            assert set(row) == (own if method == "local" else own | shared) and row["method"] == method
            assert all(0.0 <= v <= 1.0 for k, v in row.items() if k.endswith("auroc")), row
            halves = [int(np.sum(setup.y_test == c)) for c in (0, 1)]
            assert row["n_members"] == setup.n_train and row["n_nonmembers"] == sum(n - n // 2 for n in halves)
    # FedAvg is evaluated with the global block: attacking either is attacking the same model.
    for row in reports["fedavg"]:
        assert row["global_threshold_auroc"] == row["threshold_auroc"]
        assert row["global_shadow_auroc"] == row["shadow_auroc"]
    # PQFL's personal models are not the global one.
    assert any(r["global_threshold_auroc"] != r["threshold_auroc"] for r in reports["pqfl"])


def test_without_shadows_every_test_row_is_a_non_member(tiny):
    cfg, fleet = tiny
    result = Federation(fleet, "local", cfg.federation).run()
    rows = membership_report(result, cfg.federation, shadow=False)
    assert [r["n_nonmembers"] for r in rows] == [len(c.y_test) for c in fleet.clients]
    assert all("shadow_auroc" not in r and 0.0 <= r["threshold_auroc"] <= 1.0 for r in rows)
