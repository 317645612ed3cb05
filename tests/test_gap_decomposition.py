"""The gap-decomposition ladder adds one kind of heterogeneity per rung on the same rows,
and its report compares methods paired by seed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.gap_decomposition import METHODS, RUNGS, config, report, run
from pqfl.config import parse_config

HARDWARE = ("encoding", "qubits", "layers", "entangling", "noise", "shots")


def _kinds(rung: str) -> list[tuple]:
    cfg = parse_config(config(rung, 0, 2, 1, 16, 0.01))
    return [tuple(str(getattr(c, k)) for k in HARDWARE) for c in cfg.clients]


def test_each_rung_adds_one_kind_of_heterogeneity_on_the_same_data():
    cfgs = {r: parse_config(config(r, 3, 2, 1, 16, 0.01)) for r in RUNGS}
    first = cfgs["identical"]
    for cfg in cfgs.values():
        assert len(cfg.clients) == 8
        assert (cfg.dataset, cfg.partition, cfg.federation.seed) == (first.dataset, first.partition, 3)
    assert len(set(_kinds("identical"))) == 1
    differs = {
        r: {HARDWARE[i] for a, b in zip(_kinds(r), _kinds("identical")) for i in range(len(HARDWARE)) if a[i] != b[i]}
        for r in RUNGS
    }
    assert differs["encodings"] == {"encoding"}
    assert differs["qubits"] == {"encoding", "qubits", "layers"}
    assert differs["noise"] == differs["qubits"] | {"noise", "shots"}
    assert differs["today"] == differs["noise"] | {"entangling"}
    assert first.federation.select == "best_val"


def test_a_small_run_reports_every_method_paired_by_seed():
    frame = run(["identical"], [0, 1], rounds=1, epochs=1, batch=16, lam=0.01)
    quantum = frame[frame.rung == "identical"]
    assert set(quantum.method) == {*METHODS, "local+refit", "fedavg+refit", "fedavg+same-init", "pqfl+same-init"}
    assert quantum.groupby("method").seed.nunique().eq(2).all()
    linear = {f"linear-{s}" for s in ("local", "fedavg", "fedavg_ft", "pooled")}
    assert set(frame[frame.rung == "classical"].method) == {"logreg-client", "logreg-pooled", *linear}
    table = report(frame)
    wide = quantum.pivot(index="seed", columns="method", values="mean_auroc")
    assert f"| identical | pqfl | {wide['pqfl'].mean():.3f}" in table
    diff = (wide["pqfl"] - wide["local"]).mean()
    assert f"{diff:+.3f} [" in table.split("| identical | pqfl |")[1].splitlines()[0]
    assert isinstance(frame, pd.DataFrame) and frame.mean_auroc.between(0, 1).all()


def test_methods_can_carry_their_own_sharing_groups():
    methods = ("local", "fedavg", "centralized", "fedavg_full", "fedavg_full@encoding")
    frame = run(["encodings"], [0], rounds=1, epochs=1, batch=16, lam=0.01, methods=methods, diagnostics=False)
    quantum = frame[frame.rung == "encodings"]
    assert set(quantum.method) == set(methods)
    wide = quantum.pivot(index="seed", columns="method", values="mean_auroc")
    assert "| encodings | fedavg_full@encoding |" in report(frame)
    # sharing only within an encoding is a different federation from sharing across the fleet
    assert not np.allclose(wide["fedavg_full@encoding"], wide["fedavg_full"])


def test_adding_methods_trains_only_the_missing_rows(monkeypatch):
    import benchmarks.gap_decomposition as gap

    kw = dict(rounds=1, epochs=1, batch=16, lam=0.01, diagnostics=False)
    first = run(["identical"], [0], methods=("local", "fedavg", "centralized"), **kw)
    trained, original = [], gap.run_federation

    def recording(fleet, name, fed, **options):
        trained.append(name)
        return original(fleet, name, fed, **options)

    monkeypatch.setattr(gap, "run_federation", recording)
    frame = run(["identical"], [0], methods=("local", "fedavg", "centralized", "fedenc"), done=first, **kw)
    assert trained == ["fedenc"]
    assert len(frame) == len(first) + 1  # one new row: the classical control is not refitted either
    pd.testing.assert_frame_equal(frame.iloc[: len(first)].reset_index(drop=True), first)
    assert set(frame[frame.rung == "identical"].method) == {"local", "fedavg", "centralized", "fedenc"}
    assert "| identical | fedenc |" in report(frame)


def test_the_report_pairs_a_method_with_its_control():
    rows = [
        {"rung": "today", "method": m, "seed": seed, "mean_auroc": value, "mean_selected_round": 1.0}
        for seed in range(4)
        for m, value in (("local", 0.5), ("fedavg", 0.4), ("centralized", 0.9), ("fedenc", 0.6 + 0.01 * seed),
                         ("local_enc", 0.6 - 0.01 * seed))
    ]  # fmt: skip
    table = report(pd.DataFrame(rows))
    diff = np.mean([0.02 * seed for seed in range(4)])
    assert f"| today | fedenc − local_enc | {diff:+.3f} [" in table
    assert "fedenc − local_enc" not in report(pd.DataFrame([r for r in rows if r["method"] != "local_enc"]))
