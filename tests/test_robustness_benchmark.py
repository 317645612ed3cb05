"""The robustness benchmark: its verdict on hand-made results, and one tiny suite end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.robustness import RobustnessSuite, grid_table, main, run_suite, verdict
from tests.tiny import TINY


def _frame() -> pd.DataFrame:
    rows = []
    for seed, noise in enumerate((0.0, 0.01, -0.01)):
        for agg, free, hit, val in (("mean", 0.8, 0.6, 0.5), ("median", 0.78, 0.75, 0.7), ("clip", 0.79, 0.7, 0.9)):
            rows.append(dict(seed=seed, method="fedavg", aggregator=agg, attack="none", fraction=0.0,
                             honest_auroc=free + noise, honest_val_auroc=val))  # fmt: skip
            rows.append(dict(seed=seed, method="fedavg", aggregator=agg, attack="sign_flip", fraction=0.25,
                             honest_auroc=hit + 2 * noise, honest_val_auroc=val))  # fmt: skip
    return pd.DataFrame(rows)


def test_verdict_pairs_by_seed_and_picks_the_robust_rule_on_validation():
    (row,) = verdict(_frame(), 0.25).to_dict("records")
    # attack-free under the mean rule: 0.8 (+0, +0.01, −0.01); under attack 0.6 (+0, +0.02, −0.02)
    assert row["attack-free"] == pytest.approx(0.8) and row["mean rule"] == pytest.approx(0.6)
    assert row["loss (mean rule)"] == pytest.approx(0.2)
    lo, hi = (float(v) for v in row["loss 95% CI"].strip("[]").split(","))
    assert lo < 0.2 < hi  # the seeds' differences 0.2, 0.19, 0.21 do not agree exactly
    # clip has the best validation AUROC (0.9), although median has the better test AUROC
    assert row["best robust rule (val)"] == "clip" and row["its AUROC"] == pytest.approx(0.7)
    assert row["gap to attack-free"] == pytest.approx(0.1)


def test_grid_table_puts_the_attack_free_row_first_and_rules_in_suite_order():
    table = grid_table(_frame(), "fedavg")
    assert list(table.columns) == ["attack", "fraction", "mean", "median", "clip"]
    assert table.attack.tolist() == ["none", "sign_flip"]
    assert table.loc[1, "median"] == pytest.approx(0.75)


def _tiny_suite() -> dict:
    base = {k: v for k, v in TINY.items() if k != "federation"}
    base["federation"] = {**TINY["federation"], "rounds": 1, "methods": ["pqfl"]}
    return {
        "name": "tiny-robustness",
        "seeds": [3],
        "methods": ["fedavg"],
        "base": base,
        "fractions": [0.34],
        "attacks": [{"kind": "sign_flip", "scale": 4.0}],
        "aggregators": {"mean": {"rule": "mean"}, "median": {"rule": "median"}},
        "privacy": {"clip": 0.5, "delta": 1e-5, "noise_multipliers": [1.0]},
        "membership": {"methods": ["local"], "noise_multiplier": 1.0},
    }


def test_a_tiny_suite_runs_end_to_end_and_names_its_attackers(tmp_path):
    suite = RobustnessSuite.model_validate(_tiny_suite())
    frames = run_suite(suite, [3], log=lambda _: None)
    attacks = frames["attacks"]
    assert len(attacks) == 2 * 2  # (attack-free + one attack) × two rules
    hit = attacks[attacks.attack == "sign_flip"]
    assert (hit.attackers.str.split(",").map(len) == 1).all() and (
        attacks[attacks.attack == "none"].attackers == ""
    ).all()
    assert np.isfinite(hit.attackers_auroc).all()
    assert (frames["privacy"].epsilon > 0).all()
    mia = frames["membership"]
    assert set(mia.dp) == {"none", "sigma=1"} and mia.epsilon.isna().all()  # local uploads nothing
    # DP of the uploads changes nothing for a local client
    a, b = (mia[mia.dp == k].threshold_auroc.to_numpy() for k in ("none", "sigma=1"))
    np.testing.assert_array_equal(a, b)


def test_the_command_writes_the_report_tables_and_plots_and_adds_a_section_later(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(_tiny_suite()))
    out = tmp_path / "reports" / "rob"
    common = ["--suite", str(path), "--out", str(out), "--images", str(tmp_path / "img"), "--no-mlflow"]
    main(common)
    report = out.with_suffix(".md").read_text()
    assert "## At 34% attackers" in report and "## Membership inference" in report
    assert "## Stronger attacks" not in report  # the suite has none
    assert (tmp_path / "img" / "tiny-robustness.png").stat().st_size > 10_000
    assert (tmp_path / "img" / "tiny-robustness-privacy.png").exists()
    attacks = pd.read_csv(tmp_path / "reports" / "rob_attacks.csv")
    assert len(attacks) == 4
    # a stronger attack added to the suite runs alone; the other sections are the earlier run's
    path.write_text(yaml.safe_dump({**_tiny_suite(), "strengths": {"flip x12": {"kind": "sign_flip", "scale": 12.0}}}))
    main([*common, "--sections", "strength"])
    report = out.with_suffix(".md").read_text()
    assert "## Stronger attacks at 34% attackers" in report and "flip x12" in report
    assert "(attacks, strength, privacy, membership;" in report and "(strength;" in report  # both runs named
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "reports" / "rob_attacks.csv"), attacks)
    assert len(pd.read_csv(tmp_path / "reports" / "rob_strength.csv")) == 2  # one attack × two rules
    with pytest.raises(SystemExit, match="seeds"):
        main([*common, "--sections", "strength", "--seeds", "4"])


def test_the_shipped_grid_loads_every_case_it_will_run():
    """Every attack × rule × fraction of benchmarks/robustness.yaml passes the config's checks
    (Krum's 2f + 3 clients, fractions that name attackers), before anyone waits 40 minutes."""
    from pathlib import Path

    from benchmarks.robustness import _config, headline_fraction

    shipped = Path(__file__).resolve().parent.parent / "benchmarks" / "robustness.yaml"
    suite = RobustnessSuite.model_validate(yaml.safe_load(shipped.read_text()))
    attacks = [(a, f) for a in suite.attacks for f in suite.fractions]
    attacks += [(a, headline_fraction(suite)) for a in suite.strengths.values()]
    for agg in suite.aggregators.values():
        for attack, fraction in attacks:
            cfg = _config(suite, 0, aggregator=agg, attack={**attack, "fraction": fraction})
            assert cfg.federation.attack.attackers(len(cfg.clients)) >= 1
    assert headline_fraction(suite) == 0.25
