"""A client's local optimisation: minibatch steps on F_n plus an optional proximal term.

Local objective: F_n(v) + (λ/2)‖v_θ − w_k‖² (only the shared quantum block is pulled
towards the global model; the head is local). λ = 0 gives plain local training / FedAvg.
Steps are compiled once per (circuit, objective, optimiser, batch size); the last batch
is padded with zero-weight rows instead of triggering a recompile.
"""

from __future__ import annotations

import inspect
import threading
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pqfl.compile_cache import PersistentFunction
from pqfl.model import model_outputs, model_scores, scores_from_expvals
from pqfl.quantum.spec import CircuitSpec
from pqfl.rng import derive_rng, derive_seed

OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    return OPTIMIZERS[name](lr)


def local_objective(spec, objective, simulator, shots, head_l2: float = 0.0, mix: bool = False, mean_reg: float = 0.0):
    """Loss(params, anchor, lam, X, y, weight, center, key) for one (padded) minibatch.

    ``mean_reg`` κ (FedDBE's mean regularisation, supervised only): adds κ · mean_i ½(z̄_i −
    center_i)², z̄ the minibatch's mean circuit output over its real rows and ``center`` the
    server's mean of the clients' outputs (a supervised model has no one-class centre, so
    the argument carries it). A compile-time constant, left out at 0.

    ``mix`` (APFL): the circuit runs α·θ + (1 − α)·anchor, the personal block mixed with
    the global one by the trained weight ``params["alpha"]``; there is no proximal term.

    ``head_l2`` (supervised only): (α/2)‖w‖² on the classical head (not its bias), as
    logistic regression regularises its coefficients; it bounds the logits a client with
    one or two labelled anomalies can fit them with. It is a compile-time constant and the
    term is left out at 0, so runs without it trace exactly the graph they always did
    (training amplifies even roundoff-level changes; see benchmarks/reports/odds.md).
    """
    penalise_head = objective == "supervised" and head_l2 > 0

    def loss(params, anchor, lam, X, y, weight, center, key):
        if mix:
            alpha = params["alpha"]
            params = {**params, "theta": alpha * params["theta"] + (1.0 - alpha) * anchor}
            lam = 0.0
        if mean_reg:
            z = model_outputs(spec, simulator, shots, params["theta"], X, key)
            scores = scores_from_expvals(objective, params, center, z)
        else:
            scores = model_scores(spec, objective, simulator, shots, params, center, X, key)
        # one_class: the score is the distance itself; supervised: the score is the logit.
        per_row = scores if objective == "one_class" else optax.sigmoid_binary_cross_entropy(scores, y)
        data_term = jnp.sum(weight * per_row) / jnp.maximum(jnp.sum(weight), 1e-12)
        total = data_term + 0.5 * lam * jnp.sum((params["theta"] - anchor) ** 2)
        if mean_reg:
            real = (weight > 0).astype(z.dtype)
            z_bar = real @ z / jnp.maximum(jnp.sum(real), 1.0)
            total = total + mean_reg * jnp.mean(0.5 * (z_bar - center) ** 2)
        return total + 0.5 * head_l2 * jnp.sum(params["w"] ** 2) if penalise_head else total

    return loss


def _locked_cache(fn):
    """lru_cache whose misses are serialised, so threads share one compiled function. The
    key is the arguments with their defaults filled in, so a call that spells a default and
    one that leaves it out share an entry."""
    cached = lru_cache(maxsize=None)(fn)
    lock = threading.Lock()
    signature = inspect.signature(fn)

    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with lock:
            return cached(*bound.args)

    wrapper.cache_clear = cached.cache_clear
    return wrapper


@_locked_cache
def compiled_step(
    spec: CircuitSpec,
    objective: str,
    simulator: str,
    shots,
    optimizer: str,
    lr: float,
    head_l2: float = 0.0,
    scheduled: bool = False,
    trainable: str = "all",
    mix: bool = False,
    mean_reg: float = 0.0,
):
    """A jitted (params, opt_state, ...) → (params, opt_state, loss) step, cached per structure.

    ``scheduled``: the learning rate lives in the optimiser state (``optax.inject_hyperparams``)
    instead of the compiled graph, so one compile serves every round's rate. Constant-rate
    runs keep the graph they always had (training amplifies roundoff-level changes).
    ``trainable``: which parameters move (:data:`TRAINABLE`); the others are frozen by
    optax's ``set_to_zero``. ``mix``: the APFL objective (``local_objective``); its mixing
    weight α is kept in [0, 1] after every step, as APFL projects it.
    """
    if scheduled:
        opt = optax.inject_hyperparams(OPTIMIZERS[optimizer])(learning_rate=lr)
    else:
        opt = make_optimizer(optimizer, lr)
    if trainable != "all":
        moving = TRAINABLE[trainable]
        opt = optax.multi_transform(
            {"train": opt, "freeze": optax.set_to_zero()},
            lambda params: {k: "train" if k in moving else "freeze" for k in params},
        )
    value_and_grad = jax.value_and_grad(local_objective(spec, objective, simulator, shots, head_l2, mix, mean_reg))

    def step(params, opt_state, anchor, lam, X, y, weight, center, key):
        loss, grads = value_and_grad(params, anchor, lam, X, y, weight, center, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if mix:
            params = {**params, "alpha": jnp.clip(params["alpha"], 0.0, 1.0)}
        return params, opt_state, loss

    static = (spec, objective, simulator, shots, optimizer, lr, head_l2, scheduled)
    if trainable != "all" or mix:  # runs without either keep the cache keys they always had
        static = (*static, trainable, mix)
    if mean_reg:
        static = (*static, "mean_reg", mean_reg)
    return opt, PersistentFunction(step, "step", static, out_like=lambda params, opt_state, *_: (params, opt_state, 0))


#: The parameters a phase of local training moves: everything, the classical head only (the
#: circuit frozen, FedRep's first phase), or the circuit only (the head frozen) — plus
#: APFL's mixing weight α whenever the head moves.
TRAINABLE = {"all": ("theta", "w", "b", "alpha"), "head": ("w", "b", "alpha"), "circuit": ("theta",)}


def class_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights that balance the two classes (n / (2 n_class))."""
    n, n_pos = len(y), max(int(y.sum()), 1)
    n_neg = max(n - n_pos, 1)
    return np.where(y == 1, n / (2 * n_pos), n / (2 * n_neg)).astype(np.float64)


def train_local(
    spec: CircuitSpec,
    *,
    objective: str,
    simulator: str,
    shots: int | None,
    params: dict,
    X: np.ndarray,
    y: np.ndarray,
    anchor: np.ndarray | None,
    lam: float,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    center: np.ndarray | None,
    seed: int,
    stream: tuple,
    head_l2: float = 0.0,
    lr_scale: float | None = None,
    trainable: str = "all",
    mix: bool = False,
    mean_reg: float = 0.0,
    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, float]:
    """Run ``epochs`` of minibatch steps at ``lr`` (× ``lr_scale`` when a schedule sets one),
    moving only the ``trainable`` parameters (``compiled_step``); with ``mix`` the APFL
    objective, with ``params["alpha"]`` trained; with ``mean_reg`` FedDBE's mean regularisation
    towards ``center``. ``extra`` (X, y, weight): rows appended to every minibatch, such as
    distillation's reference rows with soft labels (supervised: the binary cross-entropy
    takes labels in [0, 1]). Returns new params and the last epoch's mean loss."""
    scheduled = lr_scale is not None
    opt, step = compiled_step(
        spec,
        objective,
        simulator,
        shots,
        optimizer,
        float(lr),
        float(head_l2),
        scheduled,
        trainable,
        mix,
        float(mean_reg),
    )
    params = {k: jnp.asarray(v) for k, v in params.items()}
    # Without an anchor there is nothing to be pulled towards: λ is ignored.
    lam = jnp.asarray(lam if anchor is not None else 0.0, dtype=jnp.float64)
    anchor = jnp.asarray(anchor if anchor is not None else params["theta"])
    center = jnp.asarray(center if center is not None else np.zeros(spec.n_outputs))
    weights = class_weights(y) if objective == "supervised" else np.ones(len(y))
    opt_state = opt.init(params)
    if scheduled:
        opt_state.hyperparams["learning_rate"] = jnp.asarray(lr * lr_scale, dtype=jnp.float64)
    rng = derive_rng(seed, *stream, "batches")
    key = jax.random.PRNGKey(derive_seed(seed, *stream, "shots"))
    n, b = len(y), batch_size
    losses, call = [], None
    for _ in range(epochs):
        order = rng.permutation(n)
        epoch_losses = []
        for start in range(0, n, b):
            rows = order[start : start + b]
            pad = b - len(rows)
            Xb = np.concatenate([X[rows], np.repeat(X[rows[:1]], pad, axis=0)]) if pad else X[rows]
            yb = np.concatenate([y[rows], np.zeros(pad)]) if pad else y[rows]
            wb = np.concatenate([weights[rows], np.zeros(pad)]) if pad else weights[rows]
            if extra is not None:
                Xb, yb, wb = (np.concatenate([a, e]) for a, e in zip((Xb, yb, wb), extra))
            yb = yb.astype(np.float64)
            if shots:  # exact expectations never read the key: no split (a dispatch) per step
                key, sub = jax.random.split(key)
            else:
                sub = key
            if call is None:  # the first step prepares the compiled step; the rest call it on leaves
                params, opt_state, loss = step(params, opt_state, anchor, lam, Xb, yb, wb, center, sub)
                call = step.leaf_call(params, opt_state, anchor, lam, Xb, yb, wb, center, sub)
                carry, carry_tree = jax.tree.flatten((params, opt_state))
            else:
                *carry, loss = call(*carry, anchor, lam, Xb, yb, wb, center, sub)
            epoch_losses.append(loss)  # read after the epoch, so steps are dispatched without waiting
        losses.append(float(np.mean([float(loss) for loss in epoch_losses])))
    if call is not None:
        params, opt_state = jax.tree.unflatten(carry_tree, carry)
    return {k: np.asarray(v) for k, v in params.items()}, losses[-1]


EVAL_CHUNK = 256


@_locked_cache
def compiled_scores(spec: CircuitSpec, objective: str, simulator: str, shots):
    def scores(params, center, X, key):
        return model_scores(spec, objective, simulator, shots, params, center, X, key)

    return PersistentFunction(scores, "scores", (spec, objective, simulator, shots), out_like=lambda *_: 0)


def predict_scores(spec, *, objective, simulator, shots, params, center, X, seed: int, stream: tuple) -> np.ndarray:
    """Scores for any number of rows, in fixed-size padded chunks (one compile per circuit)."""
    fn = compiled_scores(spec, objective, simulator, shots)
    params = {k: jnp.asarray(v) for k, v in params.items()}
    center = jnp.asarray(center if center is not None else np.zeros(spec.n_outputs))
    return _chunked(lambda chunk, key: fn(params, center, chunk, key), X, seed, stream)


@_locked_cache
def compiled_outputs(spec: CircuitSpec, simulator: str, shots):
    def outputs(theta, X, key):
        return model_outputs(spec, simulator, shots, theta, X, key)

    return PersistentFunction(outputs, "outputs", (spec, simulator, shots), out_like=lambda *_: 0)


def predict_outputs(spec, *, simulator, shots, theta, X, seed: int, stream: tuple) -> np.ndarray:
    """What the head reads (⟨Z_i⟩, then ⟨Z_i Z_j⟩ with correlators) for any number of rows,
    shape (rows, n_outputs), chunked as ``predict_scores``."""
    fn = compiled_outputs(spec, simulator, shots)
    theta = jnp.asarray(theta)
    return _chunked(lambda chunk, key: fn(theta, chunk, key), X, seed, stream)


def _chunked(fn, X, seed: int, stream: tuple) -> np.ndarray:
    key = jax.random.PRNGKey(derive_seed(seed, *stream, "eval-shots"))
    out = []
    for start in range(0, len(X), EVAL_CHUNK):
        chunk = X[start : start + EVAL_CHUNK]
        pad = EVAL_CHUNK - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)])
        key, sub = jax.random.split(key)
        out.append(np.asarray(fn(chunk, sub))[: EVAL_CHUNK - pad])
    return np.concatenate(out)
