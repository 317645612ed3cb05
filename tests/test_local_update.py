"""pqfl.federated.local_update: the PQFL proximal step v ← v − η(∇F(v) + λ(v − w)),
class balancing, padded minibatches, determinism and that training actually learns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pqfl.model
from pqfl.federated.local_update import class_weights, compiled_step, local_objective, predict_scores, train_local
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.spec import CircuitSpec

SPEC = CircuitSpec(qubits=2, layers=1, encoding="amplitude", pairs=((0, 1),))
N = 16  # rows in the gradient checks (one shape, so the jitted gradient compiles once)

# The supervised objective and its gradient, jitted once for the whole module.
LOSS = local_objective(SPEC, "supervised", "fast", None)
LOSS_JIT = jax.jit(LOSS)
GRAD = jax.jit(jax.grad(LOSS))


def _toy(n: int = 30, seed: int = 0):
    """Separable toy data on 4 amplitudes: normals near |00>, anomalies near |11>."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(np.float64)
    centres = np.where(y[:, None] == 1, np.array([0.0, 0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 0.0]))
    X = centres + 0.2 * rng.normal(size=(n, 4))
    return X, y


def _params(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"theta": rng.normal(0.0, 0.5, (1, 2, 3)), "w": rng.normal(0.0, 0.3, 2), "b": np.asarray(0.05)}


def _train_kwargs(X, y, **over):
    kw = dict(
        objective="supervised",
        simulator="fast",
        shots=None,
        X=X,
        y=y,
        anchor=None,
        lam=0.0,
        epochs=1,
        batch_size=8,
        lr=0.1,
        optimizer="adam",
        center=None,
        seed=3,
        stream=("train", 0, 0),
    )
    kw.update(over)
    return kw


# --------------------------------------------------------------------------- the proximal term


def _objective_args(X, y, lam, anchor):
    return (anchor, jnp.asarray(lam), X, y, class_weights(y), jnp.zeros(2), jax.random.PRNGKey(0))


def test_proximal_gradient_is_data_gradient_plus_lambda_times_difference():
    X, y = _toy(n=N)
    params = {k: jnp.asarray(v) for k, v in _params().items()}
    anchor = jnp.asarray(np.random.default_rng(7).normal(size=(1, 2, 3)))
    loss = LOSS_JIT
    lam = 0.37
    g_lam = GRAD(params, *_objective_args(X, y, lam, anchor))
    g_0 = GRAD(params, *_objective_args(X, y, 0.0, anchor))
    # ∇_θ [F + λ/2‖θ − w‖²] = ∇F + λ(θ − w)
    assert np.allclose(g_lam["theta"], g_0["theta"] + lam * (params["theta"] - anchor), atol=1e-12)
    # Only the shared quantum block is pulled; the local head is not.
    assert np.allclose(g_lam["w"], g_0["w"], atol=1e-14)
    assert np.allclose(g_lam["b"], g_0["b"], atol=1e-14)
    # The data gradient itself is not trivially zero (the test would be vacuous otherwise).
    assert float(jnp.abs(g_0["theta"]).max()) > 1e-4
    # Loss values differ by exactly λ/2‖θ − w‖².
    diff = float(loss(params, *_objective_args(X, y, lam, anchor)) - loss(params, *_objective_args(X, y, 0.0, anchor)))
    assert diff == pytest.approx(0.5 * lam * float(jnp.sum((params["theta"] - anchor) ** 2)), rel=1e-12)


def test_one_sgd_step_is_the_pqfl_update():
    X, y = _toy(n=N)
    params = {k: jnp.asarray(v) for k, v in _params().items()}
    anchor = jnp.asarray(np.random.default_rng(8).normal(size=(1, 2, 3)))
    lr, lam = 0.2, 0.8
    opt, step = compiled_step(SPEC, "supervised", "fast", None, "sgd", lr)
    args = _objective_args(X, y, lam, anchor)
    new, _, loss_value = step(params, opt.init(params), *args)

    grad_f = GRAD(params, *_objective_args(X, y, 0.0, anchor))
    expected_theta = params["theta"] - lr * (grad_f["theta"] + lam * (params["theta"] - anchor))
    assert np.allclose(new["theta"], expected_theta, atol=1e-12)
    assert np.allclose(new["w"], params["w"] - lr * grad_f["w"], atol=1e-12)
    assert np.allclose(new["b"], params["b"] - lr * grad_f["b"], atol=1e-12)
    # The reported loss is the objective at the parameters before the step.
    assert float(loss_value) == pytest.approx(float(LOSS_JIT(params, *args)), rel=1e-12)


@pytest.fixture
def quadratic_simulator(monkeypatch):
    """A stand-in 'simulator' whose outputs are the parameters themselves.

    With the one-class objective and centre c, the data term becomes
    F(v) = ‖v − c‖² = a/2 ‖v − c‖² with a = 2, whatever the rows are — a closed-form quadratic.
    """

    def sim(spec, X, theta):
        flat = theta.reshape(1, -1)
        return jnp.broadcast_to(flat, (X.shape[0], flat.shape[1]))

    monkeypatch.setitem(pqfl.model.SIMULATORS, "quadratic-test", sim)
    return "quadratic-test"


@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0])
def test_pqfl_iterates_on_a_quadratic_follow_the_closed_form(quadratic_simulator, lam):
    a, eta = 2.0, 0.05
    rng = np.random.default_rng(11)
    c = rng.normal(size=6)  # the client's own optimum
    w = rng.normal(size=(1, 2, 3))  # the global model (anchor)
    v0 = rng.normal(size=(1, 2, 3))
    n, batch, epochs = 10, 4, 7  # 3 padded minibatches per epoch, all with the same gradient
    X = rng.normal(size=(n, 4))
    params = {"theta": v0, "w": np.zeros(2), "b": np.asarray(0.0)}
    out, _ = train_local(
        SPEC,
        **_train_kwargs(
            X,
            np.zeros(n),
            objective="one_class",
            simulator=quadratic_simulator,
            anchor=w,
            lam=lam,
            epochs=epochs,
            batch_size=batch,
            lr=eta,
            optimizer="sgd",
            center=c,
        ),
        params=params,
    )
    steps = epochs * int(np.ceil(n / batch))
    # Minimiser of a/2‖v − c‖² + λ/2‖v − w‖² and the linear contraction towards it.
    v_star = (a * c.reshape(w.shape) + lam * w) / (a + lam)
    expected = v_star + (1.0 - eta * (a + lam)) ** steps * (v0 - v_star)
    assert np.allclose(out["theta"], expected, atol=1e-12)


def test_pqfl_fixed_point_interpolates_between_local_and_global(quadratic_simulator):
    rng = np.random.default_rng(12)
    c, w = rng.normal(size=6), rng.normal(size=(1, 2, 3))
    X = rng.normal(size=(8, 4))

    def run(lam, lr):
        out, _ = train_local(
            SPEC,
            **_train_kwargs(
                X,
                np.zeros(8),
                objective="one_class",
                simulator=quadratic_simulator,
                anchor=w,
                lam=lam,
                epochs=400,
                batch_size=8,
                lr=lr,
                optimizer="sgd",
                center=c,
            ),
            params={"theta": np.zeros((1, 2, 3)), "w": np.zeros(2), "b": np.asarray(0.0)},
        )
        return out["theta"]

    # λ = 0: plain local training reaches the client's own optimum c.
    assert np.allclose(run(0.0, 0.1), c.reshape(1, 2, 3), atol=1e-9)
    # λ = 1 (a = 2): the fixed point is (2c + w) / 3.
    assert np.allclose(run(1.0, 0.1), (2 * c.reshape(1, 2, 3) + w) / 3, atol=1e-9)
    # Large λ approaches the global model.
    big = run(1e3, 1e-3)
    assert np.abs(big - w).max() < 1e-2 * np.abs(c.reshape(1, 2, 3) - w).max()


# --------------------------------------------------------------------------- class weights


@pytest.mark.parametrize("n, n_pos", [(10, 1), (30, 10), (7, 3), (100, 50)])
def test_class_weights_balance_the_classes(n, n_pos):
    y = np.zeros(n)
    y[np.random.default_rng(n).choice(n, n_pos, replace=False)] = 1
    wts = class_weights(y)
    assert wts.shape == (n,)
    assert np.all(wts > 0)
    assert wts[y == 1].sum() == pytest.approx(wts[y == 0].sum())
    assert wts.sum() == pytest.approx(n)  # average weight 1: the loss scale is unchanged
    assert len(set(wts[y == 1])) == 1 and len(set(wts[y == 0])) == 1


# --------------------------------------------------------------------------- train_local on a circuit


def _full_loss(params, X, y):
    p = {k: jnp.asarray(v) for k, v in params.items()}
    return float(LOSS_JIT(p, p["theta"], jnp.asarray(0.0), X, y, class_weights(y), jnp.zeros(2), jax.random.PRNGKey(0)))


def test_train_local_is_deterministic_with_a_ragged_last_batch():
    X, y = _toy(n=30)  # batch 8 -> last batch has 6 rows and 2 padding rows
    params = _params()
    kw = _train_kwargs(X, y, epochs=3, batch_size=8)
    p1, l1 = train_local(SPEC, params=params, **kw)
    p2, l2 = train_local(SPEC, params=params, **kw)
    assert l1 == l2
    for k in p1:
        assert np.array_equal(p1[k], p2[k])
    # A different batch stream gives a different trajectory (the seed is actually used).
    p3, _ = train_local(SPEC, params=params, **dict(kw, stream=("train", 1, 0)))
    assert not np.array_equal(p1["theta"], p3["theta"])
    # The caller's arrays are not modified.
    assert np.array_equal(params["theta"], _params()["theta"])


def test_padding_rows_do_not_change_the_step():
    # One epoch with a batch larger than n is one SGD step on all rows; the 8 padding rows
    # (zero weight) must not change it.
    X, y = _toy(n=N)
    params = _params()
    lr = 0.3
    out, _ = train_local(SPEC, params=params, **_train_kwargs(X, y, batch_size=N + 8, optimizer="sgd", lr=lr))
    p = {k: jnp.asarray(v) for k, v in params.items()}
    grad = GRAD(p, p["theta"], jnp.asarray(0.0), X, y, class_weights(y), jnp.zeros(2), jax.random.PRNGKey(0))
    for k in ("theta", "w", "b"):
        assert np.allclose(out[k], np.asarray(p[k]) - lr * np.asarray(grad[k]), atol=1e-12), k


def test_train_local_reduces_the_loss_on_separable_data():
    X, y = _toy(n=30)
    params = _params()
    before = _full_loss(params, X, y)
    _, first_epoch = train_local(SPEC, params=params, **_train_kwargs(X, y, epochs=1))
    trained, last_epoch = train_local(SPEC, params=params, **_train_kwargs(X, y, epochs=40))
    after = _full_loss(trained, X, y)
    assert after < 0.5 * before
    assert last_epoch < 0.5 * first_epoch
    # The trained detector ranks every anomaly above every normal on this separable set.
    scores = predict_scores(
        SPEC,
        objective="supervised",
        simulator="fast",
        shots=None,
        params=trained,
        center=None,
        X=X,
        seed=0,
        stream=("val", 0, 0),
    )
    assert scores[y == 1].min() > scores[y == 0].max()


def test_predict_scores_chunks_match_direct_evaluation():
    # More rows than one evaluation chunk (256), so the last chunk is padded.
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 4))
    params = _params()
    scores = predict_scores(
        SPEC,
        objective="supervised",
        simulator="fast",
        shots=None,
        params=params,
        center=None,
        X=X,
        seed=0,
        stream=("test", 0, 0),
    )
    z = np.asarray(fast_expvals(SPEC, X, params["theta"]))
    assert scores.shape == (300,)
    assert np.allclose(scores, z @ params["w"] + params["b"], atol=1e-12)


def test_without_anchor_lambda_is_ignored(quadratic_simulator):
    """`local` training passes no anchor: a non-zero λ must not pull θ anywhere."""
    rng = np.random.default_rng(13)
    c, X = rng.normal(size=6), rng.normal(size=(8, 4))

    def run(lam):
        out, _ = train_local(
            SPEC,
            **_train_kwargs(
                X,
                np.zeros(8),
                objective="one_class",
                simulator=quadratic_simulator,
                anchor=None,
                lam=lam,
                epochs=5,
                batch_size=8,
                lr=0.1,
                optimizer="sgd",
                center=c,
            ),
            params={"theta": rng.normal(size=(1, 2, 3)) * 0 + 1.0, "w": np.zeros(2), "b": np.asarray(0.0)},
        )
        return out["theta"]

    assert np.array_equal(run(5.0), run(0.0))


# --------------------------------------------------------------------------- the head's L2 penalty


def test_head_l2_adds_half_alpha_w_squared_and_leaves_the_bias_alone():
    X, y = _toy()
    params = {k: jnp.asarray(v) for k, v in _params().items()}
    args = (
        params["theta"],
        jnp.asarray(0.0),
        jnp.asarray(X),
        jnp.asarray(y),
        jnp.asarray(class_weights(y)),
        jnp.zeros(2),
        jax.random.PRNGKey(0),
    )
    base = float(LOSS_JIT(params, *args))
    alpha = 0.7
    penalised = local_objective(SPEC, "supervised", "fast", None, head_l2=alpha)
    assert float(jax.jit(penalised)(params, *args)) == pytest.approx(
        base + 0.5 * alpha * float(jnp.sum(params["w"] ** 2)), rel=1e-12
    )
    g0, g1 = GRAD(params, *args), jax.jit(jax.grad(penalised))(params, *args)
    assert np.allclose(g1["w"] - g0["w"], alpha * params["w"]) and float(g1["b"]) == pytest.approx(float(g0["b"]))
    assert np.allclose(g1["theta"], g0["theta"])


def test_head_l2_shrinks_the_trained_head():
    """Trained longer, a larger penalty leaves a smaller head."""
    X, y = _toy(60)
    norms = []
    for alpha in (0.0, 0.1, 1.0):
        out, _ = train_local(SPEC, params=_params(), **_train_kwargs(X, y, epochs=40, head_l2=alpha))
        norms.append(float(np.linalg.norm(out["w"])))
    assert norms[0] > norms[1] > norms[2]


def test_head_l2_is_ignored_by_one_class():
    X, y = _toy()
    kw = _train_kwargs(X, y, objective="one_class", center=np.ones(2), epochs=2)
    a, _ = train_local(SPEC, params=_params(), **kw)
    b, _ = train_local(SPEC, params=_params(), **dict(kw, head_l2=5.0))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_correlator_head_reads_every_output_and_trains():
    """A measure: zz client's head has q(q+1)/2 weights, and training fits a label that is a
    correlation of two wires (XOR of the two features' signs), which no head over the
    product-state ⟨Z_i⟩ alone can rank."""
    spec = CircuitSpec(qubits=2, layers=1, encoding="angle", pairs=(), correlators=True)
    rng = np.random.default_rng(5)
    X = rng.uniform(-2.5, 2.5, size=(64, 2))
    y = (np.sign(X[:, 0]) != np.sign(X[:, 1])).astype(float)
    params = {"theta": np.zeros((1, 2, 3)), "w": rng.normal(0.0, 0.1, spec.n_outputs), "b": np.asarray(0.0)}
    assert params["w"].shape == (3,)
    kwargs = _train_kwargs(X, y, epochs=60)
    trained, _ = train_local(spec, params=params, **kwargs)
    scores = predict_scores(
        spec,
        objective="supervised",
        simulator="fast",
        shots=None,
        params=trained,
        center=None,
        X=X,
        seed=0,
        stream=("val", 0, 0),
    )
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, scores) > 0.95
    plain = CircuitSpec(qubits=2, layers=1, encoding="angle", pairs=())
    p0 = {"theta": np.zeros((1, 2, 3)), "w": rng.normal(0.0, 0.1, 2), "b": np.asarray(0.0)}
    trained0, _ = train_local(plain, params=p0, **kwargs)
    scores0 = predict_scores(
        plain,
        objective="supervised",
        simulator="fast",
        shots=None,
        params=trained0,
        center=None,
        X=X,
        seed=0,
        stream=("val", 0, 0),
    )
    assert roc_auc_score(y, scores0) < 0.8


# --------------------------------------------------------------------------- the step loop


def _one_call_per_step(spec, params, *, X, y, epochs, batch_size, lr, shots, seed, stream, **_):
    """The loop train_local runs, written plainly: every step through the PersistentFunction's
    own call, a fresh key split every step, each loss read as it comes."""
    from pqfl.rng import derive_rng, derive_seed

    opt, step = compiled_step(spec, "supervised", "fast", shots, "adam", float(lr))
    params = {k: jnp.asarray(v) for k, v in params.items()}
    anchor, opt_state = params["theta"], opt.init(params)  # no anchor given: λ = 0, θ₀ stands in
    rng, key = derive_rng(seed, *stream, "batches"), jax.random.PRNGKey(derive_seed(seed, *stream, "shots"))
    weights, losses = class_weights(y), []
    for _ in range(epochs):
        order, epoch = rng.permutation(len(y)), []
        for start in range(0, len(y), batch_size):
            rows = order[start : start + batch_size]
            pad = batch_size - len(rows)
            X_b = np.concatenate([X[rows], np.repeat(X[rows[:1]], pad, axis=0)])
            y_b, w_b = (np.concatenate([v[rows], np.zeros(pad)]) for v in (y, weights))
            key, sub = jax.random.split(key)
            args = (anchor, jnp.asarray(0.0), X_b, y_b, w_b, jnp.zeros(spec.n_outputs), sub)
            params, opt_state, loss = step(params, opt_state, *args)
            epoch.append(float(loss))
        losses.append(np.mean(epoch))
    return {k: np.asarray(v) for k, v in params.items()}, losses[-1]


@pytest.mark.parametrize("shots", [None, 50])
def test_the_step_loop_gives_what_one_call_per_step_gives(shots):
    """train_local calls the compiled step on flat leaves, skips the key split when the
    expectations are exact (nothing reads the key) and reads the losses after each epoch;
    none of it may change a number: parameters and loss equal, bit for bit, those of a loop
    that calls the step plainly, with and without shot noise (where the keys matter)."""
    X, y = _toy(n=21, seed=5)
    params = _params(2)
    kwargs = _train_kwargs(X, y, epochs=3, batch_size=8, shots=shots)  # 3 batches an epoch, the last padded
    fast, fast_loss = train_local(SPEC, params=params, **kwargs)
    plain, plain_loss = _one_call_per_step(SPEC, params, **kwargs)
    assert fast_loss == plain_loss
    for k in plain:
        np.testing.assert_array_equal(fast[k], plain[k])
    assert not np.array_equal(fast["theta"], params["theta"])  # it trained
