"""Record of the probe behind federation.restarts (run before the option existed; kept so
restarts_fresh_init_{a,b}.log can be re-made):

    .venv/bin/python benchmarks/tuning/probe_restarts_fresh.py cardio,optdigits,letter 100,...,111 3

For each supervised ODDS dataset and tuning seed it trains PQFL (the suite's settings)
from R fresh initialisations (init seeds seed + 1000·o, o = 1..R; o = 0 is the suite's own,
on which its settings were chosen) and prints per-client validation AUROC of: "single"
(o = 1), "single_r1" (o = 2), "ens2" / "ens{R}" (mean sigmoid of the first 2 / all R) and
"ensl{R}" (mean logit). Validation only; the suite's reporting seeds are not used.
"""
import sys, json, numpy as np
from collections import defaultdict
from sklearn.metrics import roc_auc_score
import pqfl.federated.server as srv
import pqfl.federated.client as cl
from flows.benchmark import expand_cases, load_suite
from pqfl.config import parse_config
from pqfl.experiment import prepare
from pqfl.federated.aggregation import block_of, grouped_average, share_groups
from pqfl.federated.local_update import predict_scores
from pqfl.federated.methods import RULES, prox_weight
datasets, seeds, R = sys.argv[1].split(","), [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3])
suite = load_suite("benchmarks/suites/odds.yaml")
def run(cfg, setups, off):
    fed, sim = cfg.federation, cfg.simulator
    groups = share_groups([s.profile.encoding for s in setups], fed.share)
    G = srv.init_shared(cfg.max_layers, cfg.max_qubits, fed.seed + 1000 * off, fed.init_scale, groups)
    states = [cl.init_state(s, block_of(G[g], s.spec.layers, s.spec.qubits), fed.seed + 1000 * off) for s, g in zip(setups, groups)]
    prox = prox_weight("pqfl", fed.lam, fed.mu)
    for k in range(1, fed.rounds + 1):
        blocks = [block_of(G[g], s.spec.layers, s.spec.qubits) for s, g in zip(setups, groups)]
        for i, s in enumerate(setups):
            states[i], _ = cl.local_round(s, states[i], start_theta=states[i].theta, anchor=blocks[i], prox=prox, fed=fed, simulator=sim, round_index=k)
        G = grouped_average(G, [st.theta for st in states], [s.n_train for s in setups], groups)
    return [predict_scores(s.spec, objective=fed.objective, simulator=sim, shots=s.profile.shots, params=st.params(), center=None,
                           X=s.X_val, seed=fed.seed, stream=("val", s.index, fed.rounds)) for s, st in zip(setups, states)]
seen, table = set(), defaultdict(list)
for case in expand_cases(suite, "/work/shared/data/odds"):
    if case.objective != "supervised" or case.dataset not in datasets or case.dataset in seen: continue
    seen.add(case.dataset)
    for seed in seeds:
        cfg = parse_config(case.config).with_overrides({"federation.seed": seed})
        setups, _, _ = prepare(cfg)
        outs = [run(cfg, setups, off) for off in range(1, R + 1)]
        sig = lambda z: 1 / (1 + np.exp(-np.clip(z, -50, 50)))
        res = {}
        res["single"] = [roc_auc_score(s.y_val, outs[0][i]) for i, s in enumerate(setups)]
        res["single_r1"] = [roc_auc_score(s.y_val, outs[1][i]) for i, s in enumerate(setups)]
        res[f"ens{R}"] = [roc_auc_score(s.y_val, np.mean([sig(o[i]) for o in outs], axis=0)) for i, s in enumerate(setups)]
        res[f"ensl{R}"] = [roc_auc_score(s.y_val, np.mean([o[i] for o in outs], axis=0)) for i, s in enumerate(setups)]
        res["ens2"] = [roc_auc_score(s.y_val, np.mean([sig(o[i]) for o in outs[:2]], axis=0)) for i, s in enumerate(setups)]
        for n, v in res.items():
            table[(case.dataset, n)].append(float(np.mean(v)))
            print(json.dumps({"dataset": case.dataset, "seed": seed, "v": n, "val": round(float(np.mean(v)), 4), "pc": [round(x, 3) for x in v]}), flush=True)
for (d, n), v in table.items():
    print(f"| {d} | {n} | {np.mean(v):.4f} |")
