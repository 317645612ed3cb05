"""A shared classical encoder with personal circuits (``fedenc``) and its control
(``local_enc``), on cases with known answers.

The encoder maps the standardised row z to z + A z / d upstream of each client's fixed
feature map. Folded into the map (``FeatureMap.transform(X, adjust)``) it must equal the
map applied to the encoded raw rows, the JAX path that trains A must compute the same
inputs, and the server must average the A's as it averages blocks.
"""

from __future__ import annotations

from dataclasses import replace

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from pqfl.config import parse_config
from pqfl.data.preprocessing import GlobalStats, SufficientStats, encoder_adjust, feature_map
from pqfl.detector import QuantumDetector
from pqfl.federated.client import circuit_inputs, model_params
from pqfl.federated.jobs import Trained, aggregate_uploads, train_client
from pqfl.federated.rounds import Federation
from pqfl.fleet import prepare
from pqfl.model import encoded_inputs
from pqfl.persistence import load_detector, save_detector
from tests.test_full_model_sharing import run_and_resume
from tests.tiny import TINY

# (encoding, out_dim, keep_norm, keep_residual, angle_scale) on 6 raw features
MAPS = [
    ("amplitude", 8, True, False, "whiten"),  # anchor + 7 of 6 features: no PCA, padded
    ("amplitude", 4, True, False, "whiten"),  # anchor + 3 PCA scores
    ("amplitude", 4, False, False, "whiten"),
    ("amplitude", 4, True, True, "whiten"),  # anchor + 2 PCA scores + residual norm
    ("angle", 3, False, False, "whiten"),
    ("angle", 3, False, False, "common"),
    ("angle", 3, False, True, "whiten"),  # 2 scores + residual norm
    ("iqp", 4, False, False, "whiten"),
]


@pytest.fixture(scope="module")
def tiny():
    cfg = parse_config(TINY)
    return cfg, prepare(cfg)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(80, 6)) @ rng.normal(size=(6, 6)) + rng.normal(size=6)
    stats = GlobalStats.from_sums([SufficientStats.of(X[:40]), SufficientStats.of(X[40:])])
    return X, stats, rng.normal(size=(6, 6))


@pytest.mark.parametrize("kind", MAPS)
def test_a_folded_encoder_is_the_feature_map_of_the_encoded_rows(kind):
    X, stats, A = _data()
    fmap = feature_map(stats, *kind)
    Z = fmap.standardised(X)
    # The linear part reproduces every column of the pre-squash input it claims.
    L = fmap.linear_part()
    linear = np.abs(L).sum(axis=0) > 0
    np.testing.assert_allclose((Z @ L)[:, linear], fmap.pre_squash(X)[:, linear], atol=1e-12)
    assert fmap.squash(fmap.pre_squash(X)).tolist() == fmap.transform(X).tolist()
    adjust = encoder_adjust(A, L)
    folded = fmap.transform(X, adjust)
    assert not np.allclose(folded, fmap.transform(X))
    if not fmap.residual:  # every non-constant input is linear in z: the map of z + Az/d itself
        encoded = fmap.mean + (Z + Z @ A.T / len(A)) * fmap.scale
        np.testing.assert_allclose(folded, fmap.transform(encoded), atol=1e-12)
    else:  # the residual norm (and the anchor) stay what they were for the row as it came
        np.testing.assert_array_equal(adjust[:, ~linear], 0.0)
        if fmap.encoding != "amplitude":  # angles are squashed one by one
            np.testing.assert_array_equal(folded[:, ~linear], fmap.transform(X)[:, ~linear])


def test_the_trained_path_and_the_detector_compute_the_same_circuit_inputs(tiny):
    cfg, fleet = tiny
    federation = Federation(fleet, "fedenc", cfg.federation)
    A = np.random.default_rng(1).normal(size=federation._encoder_shape)
    for setup, plain in zip(federation.clients, fleet.clients):
        assert setup.X_train.shape[1] == setup.spec.n_features + len(setup.feature_map.mean)
        state = replace(federation.initial_state().states[setup.index], enc=np.zeros_like(A))
        # A = 0 is the identity: the client's own inputs, as every other method sees them.
        identity = encoded_inputs(setup.spec.encoding, model_params(setup, state), jnp.asarray(setup.X_test))
        np.testing.assert_allclose(identity, plain.X_test, atol=1e-12)
        state = replace(state, enc=A)
        trained = np.asarray(encoded_inputs(setup.spec.encoding, model_params(setup, state), jnp.asarray(setup.X_test)))
        raw = fleet.datas[setup.index].X_test
        folded = setup.feature_map.transform(raw, encoder_adjust(A, setup.encoder_map))
        np.testing.assert_allclose(trained, folded, atol=1e-12)
        np.testing.assert_allclose(circuit_inputs(setup, state, setup.X_test), folded, atol=1e-12)
        assert not np.allclose(folded, plain.X_test)


def _encoder_steps(targets, calls):
    """A map_fn whose local training sets client n's encoder to ``targets[n]`` (recording the jobs)."""

    def map_fn(fn, jobs):
        if fn is not train_client:
            return list(map(fn, jobs))
        out = []
        for job in jobs:
            calls.append(job)
            state = replace(job.state, enc=targets[job.setup.index])
            out.append(Trained(state, 0.0, upload_encoder=state.enc.ravel()))
        return out

    return map_fn


def test_fedenc_averages_encoders_and_starts_every_round_from_the_average(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    rng = np.random.default_rng(4)
    federation = Federation(fleet, "fedenc", fed)
    targets = [rng.normal(size=federation._encoder_shape) for _ in fleet.clients]
    calls = []
    result = federation.run(map_fn=_encoder_steps(targets, calls), evaluate=False)
    n = np.array([c.n_train for c in fleet.clients], dtype=float)
    by_hand = sum(w * t for w, t in zip(n, targets)) / n.sum()
    np.testing.assert_allclose(result.state.global_encoder[0].reshape(by_hand.shape), by_hand, atol=1e-12)
    k = len(fleet.clients)
    for job in calls[:k]:  # round 1: every client from the identity
        np.testing.assert_array_equal(job.fit.encoder, 0.0)
    for job in calls[k:]:  # round 2: from round 1's average, not from its own
        np.testing.assert_allclose(job.fit.encoder.reshape(by_hand.shape), by_hand, atol=1e-12)
    for client, ((state, _),) in zip(result.clients, result.members):  # evaluated with its own
        np.testing.assert_array_equal(state.enc, targets[client.index])


def test_local_enc_keeps_its_own_encoder_and_uploads_nothing(tiny):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2})
    federation = Federation(fleet, "local_enc", fed)
    targets = [np.full(federation._encoder_shape, float(i + 1)) for i in range(len(fleet.clients))]
    calls, served = [], []

    def map_fn(fn, jobs):
        served.extend([fn] * (fn is aggregate_uploads))
        return _encoder_steps(targets, calls)(fn, jobs)

    federation.run(map_fn=map_fn, evaluate=False)
    assert not served
    k = len(fleet.clients)
    for job in calls[k:]:
        np.testing.assert_array_equal(job.fit.encoder, targets[job.setup.index].ravel())


def test_fedenc_trains_for_real_serves_its_encoder_and_resumes(tiny, tmp_path):
    cfg, fleet = tiny
    fed = cfg.federation.model_copy(update={"rounds": 2, "methods": ["fedenc"]})
    result, resumed, first = run_and_resume(fleet, fed, "fedenc")
    E = result.state.global_encoder
    assert E.shape == (1, 64 * 64) and np.abs(E).max() > 0  # the gradient reached A
    assert not np.allclose(E, first.global_encoder)
    np.testing.assert_array_equal(resumed.state.global_encoder, E)
    for setup, members, ev, k in zip(result.clients, result.members, result.evaluations, result.selected_rounds):
        # The evaluation's shot stream, so the shot-sampling client's scores can match too.
        stream = ("test", *setup.stream_id, k)
        det = QuantumDetector.from_federation(setup, members, ev.threshold, fed, cfg.dataset, stream=stream)
        raw = fleet.datas[setup.index].X_test
        np.testing.assert_allclose(det.decision_function(raw), ev.test_scores, atol=1e-9)
        loaded = load_detector(save_detector(det, tmp_path / setup.name))
        named = pd.DataFrame(raw, columns=loaded.feature_names_in_)  # a loaded detector knows its columns
        np.testing.assert_allclose(loaded.decision_function(named), det.decision_function(raw), atol=1e-12)
    broken = replace(first, states=[replace(s, enc=s.enc[:2]) for s in first.states])
    with pytest.raises(ValueError, match="has an encoder of shape"):
        Federation(fleet, "fedenc", fed).run(resume=broken)
    local, _, _ = run_and_resume(fleet, fed, "local_enc")
    assert any(np.abs(st.enc).max() > 0 for ((st, _),) in local.members)


def test_fedenc_refuses_one_class_refitted_heads_and_dp(tiny):
    cfg, fleet = tiny
    fed = cfg.federation
    with pytest.raises(ValueError, match="fedenc works on the supervised model"):
        Federation(fleet, "fedenc", fed.model_copy(update={"objective": "one_class"}))
    with pytest.raises(ValueError, match="use head_fit: sgd"):
        Federation(fleet, "fedenc", fed.model_copy(update={"head_fit": "logreg"}))
    private = parse_config({**TINY, "federation": {**TINY["federation"], "privacy": {"noise_multiplier": 1.0}}})
    with pytest.raises(ValueError, match="fedenc uploads more than one block"):
        Federation(fleet, "fedenc", private.federation)


def test_encoder_similarity_compares_the_clients_encoders():
    from benchmarks.encoder_similarity import cosines, report, run

    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert cosines([a, 2 * a, -a, np.array([[0.0, 1.0], [0.0, 0.0]])]) == [1.0, -1.0, 0.0, -1.0, 0.0, 0.0]
    frame = run(["identical"], [0], rounds=1, epochs=1)
    assert list(frame.method) == ["local_enc", "fedenc"]
    assert frame.mean_cosine.between(-1, 1).all() and (frame.min_cosine <= frame.mean_cosine).all()
    assert (frame.rms_entry > 0).all()  # both trained their encoders
    assert f"| identical | fedenc | {frame.mean_auroc.iloc[1]:.3f} |" in report(frame)
