"""The classical control of issue 19: the federated schemes run with a linear model instead
of a circuit, under the circuits' training budget.

A client's model is logistic regression on its standardised features (the federated mean
and scale, as ``pqfl.baselines``' ``client`` scope), trained like the circuits: Adam
(optax) at the same rate, minibatches of the same size with class-balanced row weights,
the same local epochs per round and rounds, and each client keeping its best validation
round. A linear model has no circuit/head split, so every shared scheme shares all of it:

| method | trains | evaluated with |
|---|---|---|
| ``linear-local`` | each client alone | its own model |
| ``linear-fedavg`` | FedAvg of the whole model (weighted by training rows) | the new global model |
| ``linear-fedavg_ft`` | as ``linear-fedavg`` | the global model after its local epochs |
| ``linear-pooled`` | one model on every client's rows | that model |

If federating helps the linear model where it does not help the circuits, the circuits
(what they share, how) are the problem; if it helps neither, the rows offer nothing to share.

    .venv/bin/python -m benchmarks.linear_control [--seeds 0,...,9] [--rounds 20] [--epochs 10]

runs the schemes on the gap ladder's data-scarce fleet (``benchmarks.gap_decomposition``;
the rows are the same on every rung) and writes ``benchmarks/reports/linear_control.{csv,md}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import optax
import pandas as pd
from sklearn.metrics import roc_auc_score

from pqfl.data.partition import ClientData
from pqfl.data.preprocessing import GlobalStats
from pqfl.federated.local_update import class_weights
from pqfl.metrics import choose_threshold, client_metrics, summarize
from pqfl.rng import derive_rng

SCHEMES = ("local", "fedavg", "fedavg_ft", "pooled")


def logistic_gradient(params: np.ndarray, X: np.ndarray, y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Gradient of the weighted mean log-loss of logits X·w + b, params = [b, w]."""
    logits = X @ params[1:] + params[0]
    residual = weight * (1.0 / (1.0 + np.exp(-logits)) - y) / weight.sum()
    return np.concatenate([[residual.sum()], X.T @ residual])


def fit_linear(params, X, y, *, epochs: int, batch: int, lr: float, rng: np.random.Generator) -> np.ndarray:
    """``epochs`` passes of Adam minibatch steps from ``params`` on class-balanced rows."""
    opt = optax.adam(lr)
    state, weight = opt.init(params), class_weights(y)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            rows = order[start : start + batch]
            updates, state = opt.update(logistic_gradient(params, X[rows], y[rows], weight[rows]), state, params)
            params = np.asarray(optax.apply_updates(params, updates))
    return params


def _scores(params, X):
    return X @ params[1:] + params[0]


def run_linear(
    datas: list[ClientData],
    stats: GlobalStats,
    scheme: str,
    *,
    rounds: int,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
) -> dict:
    """One scheme on the clients' splits: the mean-client metrics of each client's best
    validation round (``summarize``), as the quantum methods report them."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    views = [tuple((X - stats.mean) / stats.scale for X in (d.X_train, d.X_val, d.X_test)) for d in datas]
    n_train = np.array([len(d.y_train) for d in datas], dtype=float)
    start = derive_rng(seed, "linear", "init").normal(0.0, 0.1, 1 + views[0][0].shape[1])
    own = [start.copy() for _ in datas]
    shared = start.copy()
    best = [(-np.inf, None)] * len(datas)
    pooled_X = np.concatenate([v[0] for v in views])
    pooled_y = np.concatenate([d.y_train for d in datas])
    for k in range(1, rounds + 1):
        if scheme == "pooled":
            shared = fit_linear(shared, pooled_X, pooled_y, epochs=epochs, batch=batch, lr=lr,
                                rng=derive_rng(seed, "linear", "pooled", k))  # fmt: skip
            evaluated = [shared] * len(datas)
        else:
            origin = [shared] * len(datas) if scheme != "local" else own
            own = [
                fit_linear(
                    origin[n].copy(),
                    views[n][0],
                    d.y_train,
                    epochs=epochs,
                    batch=batch,
                    lr=lr,
                    rng=derive_rng(seed, "linear", n, k),
                )  # fmt: skip
                for n, d in enumerate(datas)
            ]
            if scheme != "local":
                shared = np.average(np.stack(own), axis=0, weights=n_train)
            evaluated = [shared] * len(datas) if scheme == "fedavg" else own
        for n, (d, (_, X_val, X_test)) in enumerate(zip(datas, views)):
            val = _scores(evaluated[n], X_val)
            auroc = roc_auc_score(d.y_val, val)
            if auroc > best[n][0]:
                test = _scores(evaluated[n], X_test)
                row = {"val_auroc": auroc, **client_metrics(d.y_test, test, choose_threshold(d.y_val, val))}
                best[n] = (auroc, row)
    return {"method": f"linear-{scheme}", **summarize([row for _, row in best])}


def main(argv: list[str] | None = None) -> None:
    from benchmarks.gap_decomposition import _closed, _paired, config
    from pqfl.baselines import run_baselines
    from pqfl.config import parse_config
    from pqfl.data.preprocessing import GlobalStats, SufficientStats
    from pqfl.fleet import load_and_partition

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=",".join(map(str, range(10))))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out", default="benchmarks/reports/linear_control")
    args = ap.parse_args(argv)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = parse_config(config("identical", seed, args.rounds, args.epochs, args.batch, 0.01))
        datas = load_and_partition(cfg)
        stats = GlobalStats.from_sums([SufficientStats.of(d.X_train) for d in datas])
        budget = dict(rounds=args.rounds, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=seed)
        results = [run_linear(datas, stats, s, **budget) for s in SCHEMES]
        results += run_baselines(datas, stats, "supervised", seed, ["logreg"])
        rows += [{"seed": seed, "method": r["method"], "mean_auroc": r["mean_auroc"]} for r in results]
        print(f"seed {seed}: " + ", ".join(f"{r['method']} {r['mean_auroc']:.3f}" for r in results), flush=True)
    frame = pd.DataFrame(rows)
    wide = frame.pivot(index="seed", columns="method", values="mean_auroc")
    gap = wide["linear-pooled"] - wide["linear-local"]
    lines = [
        "| method | mean AUROC (± sd) | − linear-local [95 % CI] | − linear-fedavg [95 % CI] | gap closed [95 % CI] |",
        "|---|---|---|---|---|",
    ]
    for m in wide.columns:
        vs_local = "" if m == "linear-local" else _paired(wide, m, "linear-local")
        vs_avg = "" if m == "linear-fedavg" else _paired(wide, m, "linear-fedavg")
        closed = _closed(wide[m] - wide["linear-local"], gap) if m in ("linear-fedavg", "linear-fedavg_ft") else ""
        lines.append(f"| {m} | {wide[m].mean():.3f} ± {wide[m].std(ddof=1):.3f} | {vs_local} | {vs_avg} | {closed} |")
    out = Path(args.out)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
