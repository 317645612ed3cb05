"""``federation.select: best_val``: each client keeps the model of its best validation round,
chosen from validation scores only, carried through checkpoints and resumes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pqfl.config import parse_config
from pqfl.federated.rounds import Federation, run_federation
from pqfl.federated.snapshot import from_data, to_data
from pqfl.fleet import prepare
from tests.tiny import TINY

ROUNDS = 5


@pytest.fixture(scope="module")
def tiny():
    cfg = parse_config(TINY).with_overrides(
        {"federation.rounds": ROUNDS, "federation.select": "best_val", "federation.lr": 0.2}
    )
    return cfg, prepare(cfg)


def _run(fleet, fed, method="pqfl"):
    """The result and, per round, every client's evaluation and evaluated members."""
    federation = Federation(fleet, method, fed)
    rounds = []
    result = federation.run(on_round=lambda s: rounds.append((s.last.evaluations, federation.members(s))))
    return result, rounds


def test_each_client_keeps_the_model_of_its_best_validation_round(tiny):
    cfg, fleet = tiny
    result, rounds = _run(fleet, cfg.federation)
    vals = np.array([[ev.val_auroc for ev in evs] for evs, _ in rounds])  # (rounds, clients)
    best = vals.argmax(axis=0)  # the earliest round on ties
    assert result.selected_rounds == [int(k) + 1 for k in best]
    assert len(set(result.selected_rounds)) > 1 or result.selected_rounds[0] != ROUNDS, (
        "the tiny run should keep some model other than the last round's, or the test shows nothing"
    )
    for n, k in enumerate(best):
        evaluation, members = rounds[k][0][n], rounds[k][1][n]
        assert result.evaluations[n] == evaluation  # test metrics of the kept round, not of the last
        for (st, theta), (want_st, want_theta) in zip(result.members[n], members):
            np.testing.assert_array_equal(theta, want_theta)
            np.testing.assert_array_equal(st.w, want_st.w)
    assert result.summary.mean_auroc == pytest.approx(np.mean([ev.auroc for ev in result.evaluations]))
    assert result.summary.round == ROUNDS and len(result.history) == ROUNDS  # every round stays visible


def test_the_choice_never_reads_test_data(tiny):
    cfg, fleet = tiny
    chosen, _ = _run(fleet, cfg.federation)
    rng = np.random.default_rng(7)
    scrambled = []
    for c in fleet.clients:  # other test rows and labels; training and validation unchanged
        flip = rng.permutation(len(c.y_test))
        scrambled.append(replace(c, X_test=c.X_test[flip][::-1].copy(), y_test=1 - c.y_test))
    other, _ = _run(replace(fleet, clients=scrambled), cfg.federation)
    assert other.selected_rounds == chosen.selected_rounds
    assert [ev.val_auroc for ev in other.evaluations] == [ev.val_auroc for ev in chosen.evaluations]
    assert [ev.auroc for ev in other.evaluations] != [ev.auroc for ev in chosen.evaluations]  # test did change


def test_select_last_keeps_the_final_round(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"select": "last"})
    result, rounds = _run(fleet, fed)
    assert result.selected_rounds == [ROUNDS] * len(fleet.clients) and result.state.best == []
    assert result.evaluations == rounds[-1][0] and result.summary == result.history[-1]


@pytest.mark.parametrize("method", ["pqfl", "centralized"])
def test_a_resume_from_a_checkpointed_state_keeps_the_same_models(tiny, method):
    cfg, fleet = tiny
    seen = []
    whole = run_federation(fleet, method, cfg.federation, on_round=seen.append)
    stored = from_data(*to_data(seen[2]))  # through the checkpoint format
    assert [b.round for b in stored.best] == [b.round for b in seen[2].best]
    resumed = run_federation(fleet, method, cfg.federation, resume=stored)
    assert resumed.selected_rounds == whole.selected_rounds
    assert [ev.metrics() for ev in resumed.evaluations] == [ev.metrics() for ev in whole.evaluations]
    for a, b in zip(resumed.members, whole.members):
        for (_, ta), (_, tb) in zip(a, b):
            np.testing.assert_array_equal(ta, tb)


def test_a_state_kept_under_best_val_is_refused_by_a_federation_that_keeps_the_last(tiny):
    cfg, fleet = tiny
    seen = []
    run_federation(fleet, "local", cfg.federation.model_copy(update={"rounds": 1}), on_round=seen.append)
    last = Federation(fleet, "local", cfg.federation.model_copy(update={"select": "last"}))
    with pytest.raises(ValueError, match="best-validation models"):
        last.check_state(seen[0])
