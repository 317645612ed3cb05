"""Ditto, FedRep, APFL and FedAvg with fine-tuning, on cases with known answers.

Ditto and FedRep run through the real round loop and server, with each client's local
training replaced by the exact minimiser of a quadratic objective F_n(θ) = ½‖θ − c_n‖²
over its block (plus the proximal term the strategy asks for). The global optimum is then
the size-weighted mean of the c_n over the clients holding each entry, and Ditto's
personal optimum is (c_n + λ w*) / (1 + λ), both in closed form. APFL's mixing weight is
checked by its gradient against a finite difference of the real circuit objective.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqfl.config import parse_config
from pqfl.federated.client import ClientState
from pqfl.federated.jobs import Trained, TrainJob, train_client
from pqfl.federated.local_update import local_objective
from pqfl.federated.rounds import Federation
from pqfl.federated.snapshot import from_data, to_data
from pqfl.fleet import prepare
from tests.tiny import TINY


@pytest.fixture(scope="module")
def tiny():
    cfg = parse_config(TINY)
    return cfg, prepare(cfg)


def _optima(fleet) -> list[np.ndarray]:
    """Client n's optimum c_n: a distinct value per entry of its block."""
    rng = np.random.default_rng(11)
    return [rng.normal(size=(c.spec.layers, c.spec.qubits, 3)) for c in fleet.clients]


def _quadratic(optima, calls):
    """A map_fn whose local training is the exact minimiser of ½‖θ − c_n‖² + (prox/2)‖θ − anchor‖²;
    a ``head`` phase leaves θ alone. Everything else (the server) runs for real."""

    def solve(c, fit, theta):
        for phase in fit.phases:
            if phase != "head":
                theta = c if fit.anchor is None else (c + fit.prox * fit.anchor) / (1 + fit.prox)
        return theta

    def map_fn(fn, jobs):
        if fn is not train_client:
            return list(map(fn, jobs))
        out = []
        for job in jobs:
            c = optima[job.setup.index]
            calls.append(job)
            theta = solve(c, job.fit, job.fit.start)
            upload = None if job.fit.upload is None else solve(c, job.fit.upload, job.fit.upload.start)
            out.append(Trained(replace(job.state, theta=theta), 0.0, upload=upload))
        return out

    return map_fn


def _weighted_mean(fleet, optima, initial) -> np.ndarray:
    """Per entry, Σ n_i c_i / Σ n_i over the clients whose block holds it (by hand); an
    entry nobody holds keeps its ``initial`` value."""
    out = np.array(initial)
    for idx in np.ndindex(*out.shape):
        held = [
            (c.n_train, opt[idx]) for c, opt in zip(fleet.clients, optima) if all(i < s for i, s in zip(idx, opt.shape))
        ]
        if held:
            out[idx] = sum(n * v for n, v in held) / sum(n for n, _ in held)
    return out


def test_ditto_reaches_the_closed_form_global_and_personal_optima(tiny):
    cfg, fleet = tiny
    lam = 0.5
    fed = cfg.federation.model_copy(update={"lam": lam, "rounds": 3})
    optima, calls = _optima(fleet), []
    federation = Federation(fleet, "ditto", fed)
    result = federation.run(map_fn=_quadratic(optima, calls), evaluate=False)
    w_star = _weighted_mean(fleet, optima, federation.initial_state().global_theta[0])
    np.testing.assert_allclose(result.state.global_theta[0], w_star, atol=1e-12)  # FedAvg's optimum, round 1 on
    for n, ((state, theta),) in enumerate(result.members):
        block = w_star[: theta.shape[0], : theta.shape[1]]
        np.testing.assert_allclose(theta, (optima[n] + lam * block) / (1 + lam), atol=1e-12)
        assert theta is state.theta  # evaluated with the personal model
    # PQFL uploads the personal block instead: its server model is not yet FedAvg's after 3 rounds
    pqfl = Federation(fleet, "pqfl", fed).run(map_fn=_quadratic(optima, []), evaluate=False)
    assert not np.allclose(pqfl.state.global_theta[0], w_star)


def test_fedrep_shares_the_circuit_fits_the_head_first_and_evaluates_the_global_block(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    optima, calls = _optima(fleet), []
    federation = Federation(fleet, "fedrep", fed)
    result = federation.run(map_fn=_quadratic(optima, calls), evaluate=False)
    w_star = _weighted_mean(fleet, optima, federation.initial_state().global_theta[0])
    np.testing.assert_allclose(result.state.global_theta[0], w_star, atol=1e-12)
    for n, ((state, theta),) in enumerate(result.members):
        np.testing.assert_allclose(theta, w_star[: theta.shape[0], : theta.shape[1]], atol=1e-12)  # the global block
        np.testing.assert_allclose(state.theta, optima[n])  # what it trained and uploaded
    round2 = calls[len(fleet.clients) :]
    for job in round2:  # each round starts from the global block, head phase first
        np.testing.assert_allclose(job.fit.start, w_star[: job.fit.start.shape[0], : job.fit.start.shape[1]])
        assert job.fit.phases == ("head", "circuit")


def test_fedrep_phases_freeze_what_they_do_not_train(tiny):
    cfg, fleet = tiny
    setup = fleet.clients[0]
    federation = Federation(fleet, "fedrep", cfg.federation.model_copy(update={"rounds": 1}))
    state = federation.initial_state().states[0]
    head_only = replace(federation.strategy.configure_fit(state.theta, state.theta), phases=("head",))
    circuit_only = replace(head_only, phases=("circuit",))
    a = train_client(TrainJob(setup, state, head_only, federation.federation, "fast", 1)).state
    np.testing.assert_array_equal(a.theta, state.theta)
    assert not np.allclose(a.w, state.w)
    b = train_client(TrainJob(setup, state, circuit_only, federation.federation, "fast", 1)).state
    np.testing.assert_array_equal(b.w, state.w)
    assert b.b == state.b
    assert not np.allclose(b.theta, state.theta)


def test_apfl_mixing_weight_gradient_matches_a_finite_difference(tiny):
    cfg, fleet = tiny
    setup = fleet.clients[0]
    rng = np.random.default_rng(2)
    theta = jnp.asarray(rng.normal(0, 0.5, (setup.spec.layers, setup.spec.qubits, 3)))
    anchor = jnp.asarray(rng.normal(0, 0.5, theta.shape))
    loss = local_objective(setup.spec, "supervised", "fast", None, mix=True)
    X, y = setup.X_train[:16], setup.y_train[:16].astype(float)
    args = (anchor, 0.0, X, y, np.ones(len(y)), np.zeros(setup.spec.n_outputs), jax.random.PRNGKey(0))
    w = rng.normal(0, 0.3, setup.spec.n_outputs)

    def at(alpha):
        return float(loss({"theta": theta, "w": w, "b": 0.1, "alpha": alpha}, *args))

    grad = float(jax.grad(lambda a: loss({"theta": theta, "w": w, "b": 0.1, "alpha": a}, *args))(0.3))
    h = 1e-5
    assert grad == pytest.approx((at(0.3 + h) - at(0.3 - h)) / (2 * h), rel=1e-5, abs=1e-9)
    assert at(1.0) == pytest.approx(float(local_objective(setup.spec, "supervised", "fast", None)(
        {"theta": theta, "w": w, "b": 0.1}, *args)))  # α = 1 is the personal model alone  # fmt: skip


def test_apfl_learns_its_mixing_weight_uploads_the_global_fit_and_resumes_it(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    states = []
    result = Federation(fleet, "apfl", fed).run(on_round=states.append)
    alphas = [m[0][0].alpha for m in result.members]
    assert all(0.0 <= a <= 1.0 for a in alphas) and any(a != 0.5 for a in alphas)
    for ((state, theta),), client in zip(result.members, result.clients):
        G = result.state.global_theta[0][: client.spec.layers, : client.spec.qubits]
        np.testing.assert_allclose(theta, state.alpha * state.theta + (1 - state.alpha) * G)
    resumed = Federation(fleet, "apfl", fed).run(resume=from_data(*to_data(states[0])))
    assert [m[0][0].alpha for m in resumed.members] == alphas
    assert resumed.summary == result.summary


def test_fedavg_ft_trains_as_fedavg_and_evaluates_the_fine_tuned_block(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 1})
    ft, avg = Federation(fleet, "fedavg_ft", fed).run(), Federation(fleet, "fedavg", fed).run()
    np.testing.assert_array_equal(ft.state.global_theta, avg.state.global_theta)
    for ((state, theta),) in ft.members:
        assert theta is state.theta
    assert isinstance(ft.members[0][0][0], ClientState)
