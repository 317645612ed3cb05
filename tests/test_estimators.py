"""The public estimator API: ``pqfl.QuantumDetector`` follows the scikit-learn / PyOD
contract, ``pqfl.FederatedDetector`` trains a federation in process, and a fitted detector
survives saving and loading exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

import pqfl
from pqfl.config import parse_config
from pqfl.fleet import build_fleet, prepare
from pqfl.metrics import choose_threshold
from pqfl.persistence import load_detector, save_detector
from pqfl.privacy.dp import epsilon_spent
from tests.tiny import TINY

ROOT = Path(__file__).resolve().parent.parent


def _digits(normal: int = 0, n_normal: int = 80, n_anomalies: int = 16, seed: int = 0):
    X, digit = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    rows = np.r_[
        rng.choice(np.flatnonzero(digit == normal), n_normal, replace=False),
        rng.choice(np.flatnonzero(digit != normal), n_anomalies, replace=False),
    ]
    return X[rows], (digit[rows] != normal).astype(int)


def test_clone_and_params_follow_scikit_learn():
    det = pqfl.QuantumDetector(qubits=4)
    copy = clone(det)
    assert copy is not det and copy.get_params() == det.get_params()
    params = {"qubits": 3, "encoding": "angle", "noise": {"depolarizing": 0.01}, "epochs": 5}
    assert det.set_params(**params) is det and {k: det.get_params()[k] for k in params} == params
    with pytest.raises(NotFittedError):
        pqfl.QuantumDetector(qubits=4).predict(np.zeros((2, 16)))
    for check in (
        check_parameters_default_constructible,
        check_no_attributes_set_in_init,
        check_get_params_invariance,
        check_set_params,
    ):
        check("QuantumDetector", pqfl.QuantumDetector())
    for cls in (pqfl.FederatedDetector,):
        check_parameters_default_constructible(cls.__name__, cls())
        check_no_attributes_set_in_init(cls.__name__, cls())


@pytest.fixture(scope="module")
def fitted():
    X, y = _digits()
    det = pqfl.QuantumDetector(qubits=4, layers=2, epochs=15, lr=0.1, batch_size=32, restarts=2, random_state=1)
    return det.fit(X, y), X, y


def test_fit_scores_and_flags_like_a_pyod_detector(fitted):
    det, X, y = fitted
    scores = det.decision_function(X)
    assert scores.shape == (len(X),) and roc_auc_score(y, scores) > 0.9
    # threshold_ flags the contamination fraction of the training rows
    assert det.predict(X).mean() == pytest.approx(det.contamination, abs=1.5 / len(X))
    np.testing.assert_array_equal(det.predict(X), (scores >= det.threshold_).astype(int))
    assert det.n_features_in_ == X.shape[1] and len(det.members_) == 2
    # the same parameters and seed give the same detector
    again = clone(det).fit(X, y)
    np.testing.assert_array_equal(again.decision_function(X), scores)
    with pytest.raises(ValueError, match="4 features"):
        det.decision_function(X[:, :4])


def test_scores_do_not_depend_on_the_rows_memory_layout():
    """A DataFrame's values are column-major; the feature map's projection onto three
    components rounds differently on column-major rows unless the detector copies them to
    row-major first, and then the same rows would get different scores."""
    X, y = _digits()
    det = pqfl.QuantumDetector(qubits=3, epochs=3, random_state=0)
    scores = clone(det).fit(X, y).decision_function(X)
    fitted = clone(det).fit(np.asfortranarray(X), y)
    for rows in (X, np.asfortranarray(X), pd.DataFrame(X)):
        np.testing.assert_array_equal(fitted.decision_function(rows), scores)


def test_fit_refuses_bad_input_with_the_fix():
    X, y = _digits()
    with pytest.raises(ValueError, match="pass y, or use objective='one_class'"):
        pqfl.QuantumDetector().fit(X)
    with pytest.raises(ValueError, match="both normal"):
        pqfl.QuantumDetector().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="0 .normal. or 1"):
        pqfl.QuantumDetector().fit(X, np.full(len(X), 2))
    with pytest.raises(ValueError, match="qubits"):
        pqfl.QuantumDetector(qubits=0).fit(X, y)
    with pytest.raises(ValueError, match="encoding"):
        pqfl.QuantumDetector(encoding="basis").fit(X, y)


def test_one_class_trains_without_labels():
    X, y = _digits(n_anomalies=8)
    det = pqfl.QuantumDetector(qubits=3, encoding="angle", objective="one_class", epochs=5, random_state=0).fit(X)
    assert np.all(det.decision_function(X) >= 0) and det.members_[0].center is not None


def test_save_and_load_give_the_same_detector(fitted, tmp_path):
    det, X, _ = fitted
    save_detector(det, tmp_path)
    loaded = load_detector(tmp_path)
    assert loaded.get_params() == det.get_params() and loaded.threshold_ == det.threshold_
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    np.testing.assert_array_equal(loaded.decision_function(frame), det.decision_function(X))
    assert json.loads((tmp_path / "detector.json").read_text())["restarts"] == 2
    assert not np.load(tmp_path / "detector.npz", allow_pickle=False).files == []


def test_a_detector_saved_in_the_first_format_still_loads(tmp_path):
    """Registered models logged before the detector had parameters of its own store a client profile."""
    X, y = _digits()
    det = pqfl.QuantumDetector(qubits=3, encoding="iqp", shots=128, epochs=3).fit(X, y)
    save_detector(det, tmp_path, client="c")
    meta = json.loads((tmp_path / "detector.json").read_text())
    meta["profile"] = det.profile("c").model_dump(mode="json")
    del meta["params"], meta["format"]
    (tmp_path / "detector.json").write_text(json.dumps(meta))
    old = load_detector(tmp_path)
    np.testing.assert_array_equal(
        old.decision_function(pd.DataFrame(X, columns=meta["columns"])), det.decision_function(X)
    )


@pytest.fixture(scope="module")
def tiny_federation():
    """The tiny config's clients, their training rows as plain arrays, and a federation fitted on them."""
    cfg = parse_config(TINY)
    fleet = prepare(cfg)
    train = {d.name: (d.X_train, d.y_train) for d in fleet.datas}
    val = {d.name: (d.X_val, d.y_val) for d in fleet.datas}
    profiles = {c.name: c.model_dump(exclude={"name"}) for c in cfg.clients}
    fed = cfg.federation
    est = pqfl.FederatedDetector(
        method="pqfl",
        rounds=fed.rounds,
        local_epochs=fed.local_epochs,
        lr=fed.lr,
        batch_size=fed.batch_size,
        lam=fed.lam,
        random_state=fed.seed,
    )
    return cfg, fleet, est.fit(train, profiles, validation=val), train, val


def test_the_federated_estimator_is_the_library_federation(tiny_federation):
    """Fitted on the rows of the pipeline's partition, each client's detector scores its
    validation rows as the federation's evaluation does, and its threshold is the one
    chosen on them."""
    cfg, fleet, est, _, val = tiny_federation
    result = pqfl.run_federation(fleet, "pqfl", cfg.federation)
    assert list(est.detectors_) == [c.name for c in fleet.clients]
    for client, (state, theta), ev in zip(fleet.clients, (m[0] for m in result.members), result.evaluations):
        det = est.detectors_[client.name]
        assert isinstance(det, pqfl.QuantumDetector)
        np.testing.assert_array_equal(det.members_[0].theta, theta)
        np.testing.assert_array_equal(det.members_[0].w, state.w)
        scores = det.decision_function(val[client.name][0])
        assert det.threshold_ == choose_threshold(val[client.name][1], scores)
        if not client.profile.shots:  # exact expectation values: the evaluation's own scores
            assert roc_auc_score(client.y_val, scores) == pytest.approx(ev.val_auroc, abs=1e-12)


def test_the_federated_estimator_evaluates_and_refuses_mismatched_clients(tiny_federation):
    cfg, fleet, est, train, val = tiny_federation
    results = est.evaluate(val)
    assert set(results) == set(train) and all(isinstance(r, pqfl.ClientEvaluation) for r in results.values())
    assert est.score(val) == pytest.approx(np.mean([r.auroc for r in results.values()]))
    profiles = {c.name: c.model_dump(exclude={"name"}) for c in cfg.clients}
    with pytest.raises(ValueError, match=r"profiles: .*missing \['amp-3q'\]"):
        pqfl.FederatedDetector().fit(train, {k: v for k, v in profiles.items() if k != "amp-3q"})
    with pytest.raises(ValueError, match="unknown client 'nobody'"):
        est.decision_function({"nobody": train["amp-3q"][0]})
    with pytest.raises(NotFittedError):
        pqfl.FederatedDetector().predict(train)


def test_the_federated_estimator_takes_a_robust_rule_dp_and_attackers(tiny_federation):
    """The estimator's aggregator, privacy and attack are the federation's: the same blocks
    as run_federation under that config, ε from the accountant, the attackers named."""
    cfg, fleet, _, train, val = tiny_federation
    profiles = {c.name: c.model_dump(exclude={"name"}) for c in cfg.clients}
    settings = {
        "aggregator": {"rule": "median"},
        "attack": {"kind": "gaussian", "fraction": 0.34},
    }
    est = pqfl.FederatedDetector(method="fedavg", rounds=1, lr=0.1, batch_size=32, random_state=cfg.federation.seed)
    est.set_params(**settings).fit(train, profiles, validation=val)
    fed = est.federation()
    assert fed.aggregator.rule == "median" and fed.attack.kind == "gaussian" and est.epsilon_ is None
    result = pqfl.run_federation(build_fleet(fleet.datas, cfg.clients, fleet.dataset), "fedavg", fed)
    assert est.attackers_ == list(result.attackers) and len(est.attackers_) == 1
    for client, members in zip(fleet.clients, result.members):
        np.testing.assert_array_equal(est.detectors_[client.name].members_[0].theta, members[0][1])
    dp = pqfl.FederatedDetector(method="pqfl", rounds=2, privacy={"noise_multiplier": 2.0, "clip": 0.5})
    assert dp.fit(train, profiles).epsilon_ == pytest.approx(epsilon_spent(2.0, 2, 1e-5))
    with pytest.raises(ValueError, match="privacy.clip: must be greater than 0"):
        pqfl.FederatedDetector(privacy={"clip": 0}).fit(train, profiles)


def test_import_pqfl_stays_light():
    code = "import pqfl, sys; loaded = {m.split('.')[0] for m in sys.modules}; print(sorted({'prefect', 'mlflow', 'jax', 'qiskit'} & loaded))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_documented_three_client_example_runs():
    """docs/examples/three_clients.py: numpy, scikit-learn's digits and pqfl only. (It turns
    on the persistent cache; test_compile_cache.py checks that a later process loads what
    an earlier one stored, through the same public ``pqfl.enable_persistent_cache``.)"""
    script = ROOT / "docs" / "examples" / "three_clients.py"
    imports = {
        line.split()[1].split(".")[0]
        for line in script.read_text().splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports == {"numpy", "sklearn", "pqfl"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["amplitude-6q", "angle-4q", "iqp-5q"]
    assert all(0.5 < float(line.split()[-1]) <= 1.0 for line in lines)
