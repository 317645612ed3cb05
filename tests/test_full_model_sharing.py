"""FedAvg of the whole model (``fedavg_full``, ``fedavg_full_ft``) and FedDBE: heads (and
FedDBE's mean outputs) are uploaded and averaged like the blocks, on cases with known answers.

Local training is replaced by the exact minimiser of ½‖θ − c_n‖² + ½‖h − d_n‖², with h
client n's packed head [b, w]; the real round loop and server do the rest. The global
block is then the size-weighted mean of the c_n and the global head that of the d_n, each
over the clients holding the entry (heads of different lengths overlap in their first
entries, as blocks of different shapes do).
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqfl.config import parse_config
from pqfl.federated.jobs import Trained, train_client
from pqfl.federated.local_update import local_objective
from pqfl.federated.rounds import Federation
from pqfl.federated.snapshot import from_data, to_data
from pqfl.federated.strategies import pack_head, unpack_head
from pqfl.fleet import prepare
from pqfl.model import model_outputs
from tests.tiny import TINY


@pytest.fixture(scope="module")
def tiny():
    cfg = parse_config(TINY)
    return cfg, prepare(cfg)


def _optima(fleet):
    rng = np.random.default_rng(5)
    blocks = [rng.normal(size=(c.spec.layers, c.spec.qubits, 3)) for c in fleet.clients]
    heads = [rng.normal(size=1 + c.spec.n_outputs) for c in fleet.clients]
    return blocks, heads


def _quadratic(blocks, heads, calls, means=None):
    """A map_fn whose local training jumps to the client's optimum (c_n, d_n) and, with
    ``means``, reports m_n as its mean output."""

    def map_fn(fn, jobs):
        if fn is not train_client:
            return list(map(fn, jobs))
        out = []
        for job in jobs:
            calls.append(job)
            n = job.setup.index
            w, b = unpack_head(heads[n], job.setup.spec.n_outputs)
            mean = None if means is None else means[n]
            out.append(
                Trained(replace(job.state, theta=blocks[n], w=w, b=b), 0.0, upload_head=heads[n], upload_mean=mean)
            )
        return out

    return map_fn


def _weighted_mean(fleet, values, initial):
    """Per entry, Σ n_i v_i / Σ n_i over the clients whose value holds it, by hand."""
    out = np.array(initial)
    for idx in np.ndindex(*out.shape):
        held = [(c.n_train, v[idx]) for c, v in zip(fleet.clients, values) if all(i < s for i, s in zip(idx, v.shape))]
        if held:
            out[idx] = sum(n * v for n, v in held) / sum(n for n, _ in held)
    return out


def run_and_resume(fleet, fed, method: str):
    """A real 2-round run of ``method`` and the same run resumed from its round-1 snapshot."""
    states = []
    result = Federation(fleet, method, fed).run(on_round=states.append)
    resumed = Federation(fleet, method, fed).run(resume=from_data(*to_data(states[0])))
    assert resumed.summary == result.summary
    return result, resumed, states[0]


def test_pack_head_puts_the_bias_first_and_unpacks_any_prefix():
    packed = pack_head(np.array([0.5, -1.0, 2.0]), 0.25)
    np.testing.assert_array_equal(packed, [0.25, 0.5, -1.0, 2.0])
    w, b = unpack_head(packed, 2)
    np.testing.assert_array_equal(w, [0.5, -1.0])
    assert b == 0.25


def test_fedavg_full_averages_heads_and_blocks_and_evaluates_the_global_model(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    blocks, heads = _optima(fleet)
    calls = []
    federation = Federation(fleet, "fedavg_full", fed)
    start = federation.initial_state()
    result = federation.run(map_fn=_quadratic(blocks, heads, calls), evaluate=False)
    w_star = _weighted_mean(fleet, blocks, start.global_theta[0])
    h_star = _weighted_mean(fleet, heads, start.global_head[0])
    np.testing.assert_allclose(result.state.global_theta[0], w_star, atol=1e-12)
    np.testing.assert_allclose(result.state.global_head[0], h_star, atol=1e-12)
    for client, ((state, theta),) in zip(result.clients, result.members):
        q = client.spec.n_outputs
        np.testing.assert_allclose(theta, w_star[: client.spec.layers, : client.spec.qubits], atol=1e-12)
        np.testing.assert_allclose(pack_head(state.w, state.b), h_star[: 1 + q], atol=1e-12)
    n = len(fleet.clients)
    for job in calls[:n]:  # round 1 starts every client from one initial head
        np.testing.assert_array_equal(job.fit.head, start.global_head[0])
        np.testing.assert_array_equal(pack_head(job.state.w, job.state.b), start.global_head[0][: len(job.state.w) + 1])
    for job in calls[n:]:  # round 2 from round 1's average
        np.testing.assert_allclose(job.fit.head, h_star, atol=1e-12)
    # plain FedAvg keeps heads personal: its clients are evaluated with their own d_n
    plain = Federation(fleet, "fedavg", fed).run(map_fn=_quadratic(blocks, heads, []), evaluate=False)
    assert plain.state.global_head is None
    for ((state, _),), d in zip(plain.members, heads):
        np.testing.assert_allclose(pack_head(state.w, state.b), d)


def test_fedavg_full_ft_trains_as_fedavg_full_and_evaluates_the_fine_tuned_model(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 1})
    blocks, heads = _optima(fleet)
    ft = Federation(fleet, "fedavg_full_ft", fed).run(map_fn=_quadratic(blocks, heads, []), evaluate=False)
    full = Federation(fleet, "fedavg_full", fed).run(map_fn=_quadratic(blocks, heads, []), evaluate=False)
    np.testing.assert_array_equal(ft.state.global_theta, full.state.global_theta)
    np.testing.assert_array_equal(ft.state.global_head, full.state.global_head)
    for ((state, theta),), c, d in zip(ft.members, blocks, heads):
        np.testing.assert_array_equal(theta, c)
        np.testing.assert_array_equal(pack_head(state.w, state.b), d)


def test_fedavg_full_trains_for_real_and_resumes_from_a_snapshot(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    result, resumed, first = run_and_resume(fleet, fed, "fedavg_full")
    H = result.state.global_head
    assert H.shape == (1, 1 + max(c.spec.n_outputs for c in fleet.clients))
    assert not np.allclose(H, first.global_head)  # round 2 moved the shared head
    np.testing.assert_array_equal(resumed.state.global_head, H)
    broken = replace(first, global_head=H[:, :2])
    with pytest.raises(ValueError, match="server heads have shape"):
        Federation(fleet, "fedavg_full", fed).run(resume=broken)


def test_fedavg_full_refuses_dp_because_heads_are_a_second_release(tiny):
    cfg, fleet = tiny
    fed = parse_config({**TINY, "federation": {**TINY["federation"], "privacy": {"noise_multiplier": 1.0}}}).federation
    with pytest.raises(ValueError, match="fedavg_full uploads more than one block per round"):
        Federation(fleet, "fedavg_full", fed)


def test_feddbe_averages_means_pulls_towards_them_from_round_two_and_keeps_its_intercept(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    blocks, heads = _optima(fleet)
    means = [np.random.default_rng(9).normal(size=c.spec.n_outputs) for c in fleet.clients]
    calls = []
    federation = Federation(fleet, "feddbe", fed)
    start = federation.initial_state()
    result = federation.run(map_fn=_quadratic(blocks, heads, calls, means), evaluate=False)
    m_star = _weighted_mean(fleet, means, np.zeros(start.global_head.shape[1] - 1))
    np.testing.assert_allclose(result.state.global_mean[0], m_star, atol=1e-12)
    n = len(fleet.clients)
    for job in calls[:n]:  # round 1: no server mean yet, so no pull; every client reports its mean
        assert job.fit.mean_reg == 0.0 and job.fit.mean_target is None and job.fit.report_mean
    h_star = _weighted_mean(fleet, heads, start.global_head[0])
    for job, d in zip(calls[n:], heads):  # round 2: pulled towards the fleet's mean, own intercept kept
        q = job.setup.spec.n_outputs
        assert job.fit.mean_reg == federation.strategy.kappa == 1.0
        np.testing.assert_allclose(job.fit.mean_target, m_star[:q], atol=1e-12)
        assert job.fit.head[0] == d[0]  # its intercept after round 1 is its own d_n's
        np.testing.assert_allclose(job.fit.head[1:], h_star[1:], atol=1e-12)
    w_star = _weighted_mean(fleet, blocks, start.global_theta[0])
    for client, ((state, theta),), d in zip(result.clients, result.members, heads):
        q = client.spec.n_outputs
        np.testing.assert_allclose(theta, w_star[: client.spec.layers, : client.spec.qubits], atol=1e-12)
        np.testing.assert_allclose(state.w, h_star[1 : 1 + q], atol=1e-12)  # the global w ...
        assert state.b == d[0]  # ... with its own intercept


def test_mean_regularisation_adds_kappa_times_the_half_squared_gap_of_the_real_rows_mean(tiny):
    _, fleet = tiny
    setup = fleet.clients[0]
    spec, rng = setup.spec, np.random.default_rng(4)
    params = {"theta": jnp.asarray(rng.normal(0, 0.5, (spec.layers, spec.qubits, 3))),
              "w": jnp.asarray(rng.normal(size=spec.n_outputs)), "b": jnp.asarray(0.2)}  # fmt: skip
    X, y = setup.X_train[:8], setup.y_train[:8].astype(float)
    weight = np.r_[np.ones(6), 0.0, 0.0]  # the last two rows are padding
    target, key = rng.normal(size=spec.n_outputs), jax.random.PRNGKey(0)
    args = (params["theta"], 0.0, X, y, weight, target, key)
    plain = float(local_objective(spec, "supervised", "fast", None)(params, *args))
    kappa = 0.7
    regular = float(local_objective(spec, "supervised", "fast", None, mean_reg=kappa)(params, *args))
    z = np.asarray(model_outputs(spec, "fast", None, params["theta"], X, key))
    by_hand = kappa * np.mean(0.5 * (z[:6].mean(axis=0) - target) ** 2)
    assert regular - plain == pytest.approx(by_hand, rel=1e-10)


def test_feddbe_trains_for_real_resumes_and_refuses_one_class(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    result, resumed, _ = run_and_resume(fleet, fed, "feddbe")
    M = result.state.global_mean
    assert M.shape == (1, max(c.spec.n_outputs for c in fleet.clients)) and np.all(np.abs(M) <= 1)
    np.testing.assert_array_equal(resumed.state.global_mean, M)
    with pytest.raises(ValueError, match="feddbe works on the supervised model"):
        Federation(fleet, "feddbe", fed.model_copy(update={"objective": "one_class"}))
