"""The federation as a library: each strategy's rules, the shared round loop, and what it
does with failing jobs, futures, resumes and a strategy it has never seen."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from pqfl.config import FederationConfig, parse_config
from pqfl.errors import PQFLRunError
from pqfl.federated import jobs
from pqfl.federated.client import ClientState
from pqfl.federated.robust import grouped_robust_average
from pqfl.federated.rounds import BelowQuorum, Federation, run_federation
from pqfl.federated.strategies import (
    APFL,
    PQFL,
    STRATEGIES,
    Centralized,
    Ditto,
    FedAvg,
    FedAvgFT,
    FedProx,
    FedRep,
    FitInstructions,
    Local,
    Roles,
    Strategy,
    strategy_for,
)
from pqfl.fleet import prepare
from tests.tiny import TINY

OWN, GLOBAL = np.full((1, 2, 3), 0.5), np.full((1, 2, 3), -0.25)


def test_each_strategy_says_where_training_starts_what_pulls_it_and_what_is_evaluated():
    cases = {
        Local(): (OWN, None, 0.0, OWN, False),
        FedAvg(): (GLOBAL, None, 0.0, GLOBAL, True),
        FedProx(mu=0.3): (GLOBAL, GLOBAL, 0.3, GLOBAL, True),
        PQFL(lam=0.7): (OWN, GLOBAL, 0.7, OWN, True),
        Centralized(): (OWN, None, 0.0, OWN, False),
        FedAvgFT(): (GLOBAL, None, 0.0, OWN, True),
        Ditto(lam=0.7): (OWN, GLOBAL, 0.7, OWN, True),
        FedRep(): (GLOBAL, None, 0.0, GLOBAL, True),
        APFL(): (OWN, GLOBAL, 0.0, None, True),
    }
    for strategy, (start, anchor, prox, evaluated, uploads) in cases.items():
        fit = strategy.configure_fit(OWN, GLOBAL)
        assert fit.start is start and fit.anchor is anchor and fit.prox == prox, strategy
        assert strategy.uploads is uploads, strategy
        if evaluated is not None:
            assert strategy.evaluated(OWN, GLOBAL) is evaluated, strategy
    # the fits that differ: Ditto and APFL train the global block apart and upload that,
    # FedRep fits the head on the global block, then the block; APFL mixes
    assert Ditto().configure_fit(OWN, GLOBAL).upload.start is GLOBAL
    assert APFL().configure_fit(OWN, GLOBAL).upload.start is GLOBAL and APFL().configure_fit(OWN, GLOBAL).mix
    assert FedRep().configure_fit(OWN, GLOBAL).phases == ("head", "circuit")
    assert PQFL().configure_fit(OWN, GLOBAL).upload is None and PQFL().configure_fit(OWN, GLOBAL).phases == ("all",)
    state = ClientState(theta=OWN, w=np.zeros(2), b=0.0, alpha=0.25)
    np.testing.assert_allclose(APFL().evaluated_state(state, GLOBAL), 0.25 * OWN + 0.75 * GLOBAL)


def test_strategies_by_name_take_their_weights_from_the_federation_settings():
    fed = FederationConfig(**{"lambda": 0.42, "mu": 0.07})
    assert strategy_for("pqfl", fed) == PQFL(lam=0.42)
    assert strategy_for("fedprox", fed) == FedProx(mu=0.07)
    assert strategy_for("ditto", fed) == Ditto(lam=0.42)
    assert set(STRATEGIES) == {
        *("local", "fedavg", "fedprox", "pqfl", "centralized", "fedavg_ft", "ditto", "fedrep", "apfl"),
        *("fedavg_full", "fedavg_full_ft", "feddbe", "feddistill", "fedenc", "local_enc"),
    }
    assert FederationConfig().methods == ["local", "fedavg", "fedprox", "pqfl", "centralized"]
    mine = Local()
    assert strategy_for(mine, fed) is mine
    with pytest.raises(ValueError, match="unknown method 'scaffold'"):
        strategy_for("scaffold", fed)


def test_the_server_step_is_the_masked_average_within_groups():
    previous = np.zeros((2, 2, 3, 3))
    blocks = [np.ones((1, 2, 3)), 3 * np.ones((2, 3, 3)), 5 * np.ones((1, 1, 3))]
    out = FedAvg().aggregate(previous, blocks, [1.0, 1.0, 2.0], [0, 0, 1])
    np.testing.assert_array_equal(out, grouped_robust_average(previous, blocks, [1.0, 1.0, 2.0], [0, 0, 1]))
    assert out[0, 0, 0, 0] == 2.0 and out[0, 1, 2, 0] == 3.0 and out[1, 0, 0, 0] == 5.0 and out[1, 1, 0, 0] == 0.0


def test_roles_refuse_a_trainer_count_that_does_not_fit_the_clients():
    with pytest.raises(ValueError, match="2 trainers .* 3 clients"):
        Roles(clients=[1, 2, 3], trainers=[1, 2], groups=[0, 0])
    assert Roles(clients=[1, 2, 3], trainers=[9], groups=[0], pooled=True).trainer_of(2) == 0


@pytest.fixture(scope="module")
def tiny():
    cfg = parse_config(TINY).with_overrides({"federation.rounds": 2})
    return cfg, prepare(cfg)


def _summary(result):
    return [h.as_dict() for h in result.history], [ev.metrics() for ev in result.evaluations]


def test_map_fn_may_return_futures_and_gives_the_plain_map_result(tiny):
    cfg, fleet = tiny
    plain = run_federation(fleet, "pqfl", cfg.federation)
    with ThreadPoolExecutor(2) as pool:
        threaded = run_federation(fleet, "pqfl", cfg.federation, map_fn=lambda fn, js: [pool.submit(fn, j) for j in js])
    assert _summary(threaded) == _summary(plain)


def test_a_run_resumed_from_a_round_ends_where_the_uninterrupted_run_ends(tiny):
    cfg, fleet = tiny
    seen = []
    whole = run_federation(fleet, "fedprox", cfg.federation, on_round=seen.append)
    assert [s.round for s in seen] == [1, 2] and seen[-1].last.summary == whole.summary
    resumed = run_federation(fleet, "fedprox", cfg.federation, resume=seen[0])
    assert _summary(resumed) == _summary(whole)


def test_a_failing_trainer_is_dropped_and_keeps_its_state_unless_the_quorum_fails(tiny):
    cfg, fleet = tiny
    down = fleet.clients[0].name

    def flaky(fn, items):
        for job in items:
            if fn is jobs.train_client and job.setup.name == down and job.round_index == 2:
                err = ConnectionError("backend down")
                err.retries = 3  # what an orchestrator spent on the job
                yield _Raises(err)
            else:
                yield fn(job)

    states = []
    result = run_federation(fleet, "pqfl", cfg.federation, map_fn=flaky, on_round=states.append)
    report = states[1].last
    assert [d.client for d in report.dropped] == [down] and report.in_round == len(fleet.clients) - 1
    row = report.clients[0]
    assert row.dropped and row.loss is None and row.retries == 3
    np.testing.assert_array_equal(states[1].states[0].theta, states[0].states[0].theta)  # kept, not reset
    assert result.state.dropped == report.dropped

    strict = cfg.federation.model_copy(update={"min_clients": len(fleet.clients)})
    with pytest.raises(BelowQuorum, match=r"round 2: only 2 of 3 clients .*backend down.*min_clients = 3") as err:
        run_federation(fleet, "pqfl", strict, map_fn=flaky)
    assert isinstance(err.value, PQFLRunError) and [d.client for d in err.value.dropped] == [down]


@dataclass
class _Raises:
    """A future whose result is an exception (as a failed Prefect task's is)."""

    error: Exception

    def result(self):
        raise self.error


def test_rounds_without_evaluation_only_train(tiny):
    cfg, fleet = tiny
    trained = run_federation(fleet, "pqfl", cfg.federation)
    quiet = Federation(fleet, "pqfl", cfg.federation).run(evaluate=False)
    assert quiet.history == [] and quiet.evaluations == [] and quiet.state.last.summary is None
    for a, b in zip(quiet.state.states, trained.state.states):
        np.testing.assert_array_equal(a.theta, b.theta)


def test_centralized_trains_one_pooled_model_that_every_client_is_evaluated_with(tiny):
    cfg, fleet = tiny
    federation = Federation(fleet, "centralized", cfg.federation)
    assert len(federation.trainers) == 1 and federation.roles.pooled
    assert federation.trainers[0].n_train == sum(c.n_train for c in fleet.clients)
    result = federation.run()
    assert [c.name for c in result.clients] == [c.name for c in fleet.clients]
    assert all(m[0][0] is result.members[0][0][0] for m in result.members)


@dataclass(frozen=True)
class FedAvgFineTune(FedAvg):
    """A method the loop has never seen: FedAvg whose clients are evaluated with their own
    fine-tuned block (one more local round from the global model)."""

    name: ClassVar[str] = "fedavg-ft"

    def configure_fit(self, own, global_block):
        return FitInstructions(start=global_block)

    def evaluated(self, own, global_block):
        return own


def test_a_new_strategy_needs_no_change_to_the_loop(tiny):
    cfg, fleet = tiny
    result = run_federation(fleet, FedAvgFineTune(), cfg.federation)
    fedavg = run_federation(fleet, "fedavg", cfg.federation)
    # Same training and server model as FedAvg; only the evaluated block differs.
    np.testing.assert_array_equal(result.state.global_theta, fedavg.state.global_theta)
    assert result.strategy == "fedavg-ft" and _summary(result) != _summary(fedavg)
    for ((state, theta),) in result.members:
        assert theta is state.theta


def test_config_methods_come_from_the_registered_strategies():
    with pytest.raises(Exception, match=r"federation.methods: unknown method\(s\) \['scaffold'\]"):
        parse_config({**TINY, "federation": {**TINY["federation"], "methods": ["pqfl", "scaffold"]}})
    assert isinstance(Strategy.from_config(FederationConfig()), Strategy)
