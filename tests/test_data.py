"""pqfl.data: sources, the non-IID partition and federated preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.io
from sklearn.decomposition import PCA

from pqfl.config import PartitionConfig, parse_config
from pqfl.data.partition import _cap, partition, shortage
from pqfl.data.preprocessing import GlobalStats, SufficientStats, feature_map
from pqfl.data.sources import Dataset, load_source
from pqfl.errors import PQFLInputError
from pqfl.fleet import load_and_partition

NAMES = ["a", "b", "c", "d"]
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_source("sklearn:digits")


@pytest.fixture(scope="module")
def tagged(digits) -> Dataset:
    """Digits with a trailing row-index column, so every output row can be traced back."""
    return Dataset(np.c_[digits.X, np.arange(len(digits.y))], digits.y, False, "digits-tagged")


def _rows(client, split):
    return getattr(client, f"X_{split}")[:, -1].astype(int)


def _labels(client, split):
    return getattr(client, f"y_{split}")


# --------------------------------------------------------------------------- partition


def test_partition_is_deterministic(tagged):
    cfg = PartitionConfig()
    first = partition(tagged, NAMES, cfg, [0], seed=4)
    again = partition(tagged, NAMES, cfg, [0], seed=4)
    other = partition(tagged, NAMES, cfg, [0], seed=5)
    for c1, c2 in zip(first, again):
        assert c1.name == c2.name and c1.normal_classes == c2.normal_classes
        for split in SPLITS:
            assert np.array_equal(getattr(c1, f"X_{split}"), getattr(c2, f"X_{split}"))
            assert np.array_equal(_labels(c1, split), _labels(c2, split))
    assert any(not np.array_equal(_rows(c1, "train"), _rows(c3, "train")) for c1, c3 in zip(first, other))


@pytest.mark.parametrize("mode", ["context", "global"])
def test_every_client_split_has_both_classes_and_rows_are_private(tagged, mode):
    cfg = PartitionConfig(normal=mode, alpha=1.0)
    clients = partition(tagged, NAMES, cfg, [0, 1], seed=0)
    assert [c.name for c in clients] == NAMES
    seen: set[int] = set()
    for c in clients:
        client_rows = []
        for split in SPLITS:
            y = _labels(c, split)
            assert set(np.unique(y).tolist()) == {0, 1}, (c.name, split)
            assert len(y) == len(getattr(c, f"X_{split}"))
            client_rows.extend(_rows(c, split).tolist())
        # No row twice within a client (train/val/test disjoint) nor across clients.
        assert len(client_rows) == len(set(client_rows))
        assert not seen & set(client_rows)
        seen |= set(client_rows)
        n = len(client_rows)
        assert abs(len(c.y_test) - cfg.test * n) <= 1
        assert abs(len(c.y_val) - cfg.val * n) <= 1.5
        assert c.n_train == len(c.y_train)
        # At least min_anomalies anomalies and normals per client.
        all_y = np.concatenate([_labels(c, s) for s in SPLITS])
        assert all_y.sum() >= cfg.min_anomalies and (1 - all_y).sum() >= cfg.min_anomalies
    # Features are carried over unchanged from the source.
    c = clients[0]
    assert np.array_equal(c.X_train, tagged.X[_rows(c, "train")])


def test_max_train_rows_caps_only_the_training_rows_keeping_both_labels(tagged):
    full = partition(tagged, NAMES, PartitionConfig(), [0], seed=2)
    capped = partition(tagged, NAMES, PartitionConfig(max_train_rows=16), [0], seed=2)
    assert partition(tagged, NAMES, PartitionConfig(max_train_rows=16), [0], seed=2)[0].y_train.tolist() == (
        capped[0].y_train.tolist()
    )
    for f, c in zip(full, capped):
        assert len(c.y_train) == min(16, len(f.y_train)) and 0 < c.y_train.sum() < len(c.y_train)
        assert set(_rows(c, "train")) <= set(_rows(f, "train"))  # a subset of the same split
        for split in ("val", "test"):  # the other splits are untouched
            assert np.array_equal(_rows(c, split), _rows(f, split))
        share, capped_share = f.y_train.mean(), c.y_train.mean()
        assert abs(capped_share - share) <= 1 / 16 + 1e-12  # stratified: the anomaly share kept
    with pytest.raises(ValueError):
        PartitionConfig(max_train_rows=1)


def test_a_cap_one_row_below_a_split_drops_that_row_from_the_commonest_label():
    X = np.arange(34, dtype=float)[:, None]
    y = np.r_[np.zeros(27), np.ones(7)]
    kept, y_kept = _cap(X, y, 33, seed=4)  # one row to drop, two labels: scikit-learn cannot stratify it
    assert len(kept) == 33 and y_kept.sum() == 7  # every anomaly kept
    assert set(kept[:, 0]) < set(X[:, 0]) and np.array_equal(_cap(X, y, 33, seed=4)[0], kept)
    assert len(_cap(X, y, 32, seed=4)[0]) == 32  # two rows: the stratified split, as before


def test_context_mode_normal_classes_are_local(tagged):
    cfg = PartitionConfig(normal="context", normal_classes_per_client=2)
    clients = partition(tagged, NAMES, cfg, [0], seed=0)
    for c in clients:
        assert len(c.normal_classes) == 2
        rows = np.concatenate([_rows(c, s) for s in SPLITS])
        y = np.concatenate([_labels(c, s) for s in SPLITS])
        classes = tagged.y[rows]
        # Label = 1 exactly for rows whose class is not one of this client's normal classes.
        assert np.array_equal(y, (~np.isin(classes, c.normal_classes)).astype(int))
        # Normal classes are the client's most frequent ones: anomalies are only subsampled,
        # so every normal class still outnumbers every anomaly class.
        counts = {k: int(np.sum(classes == k)) for k in np.unique(classes)}
        min_normal = min(counts[k] for k in c.normal_classes)
        assert all(v <= min_normal for k, v in counts.items() if k not in c.normal_classes)
        # Anomalies are a minority.
        assert 0 < y.mean() < 0.5
    normal_sets = [tuple(c.normal_classes) for c in clients]
    assert len(set(normal_sets)) > 1
    # Some class is normal at one client and shows up as an anomaly at another.
    crossed = False
    for c in clients:
        for other in clients:
            if other is c:
                continue
            rows = np.concatenate([_rows(other, s) for s in SPLITS])
            y = np.concatenate([_labels(other, s) for s in SPLITS])
            anomalous_classes = set(tagged.y[rows[y == 1]].tolist())
            crossed |= bool(anomalous_classes & set(c.normal_classes))
    assert crossed


def test_global_mode_uses_the_configured_normal_classes(tagged):
    cfg = PartitionConfig(normal="global", alpha=2.0)
    clients = partition(tagged, NAMES, cfg, [3, 8], seed=1)
    for c in clients:
        assert c.normal_classes == [3, 8]
        for split in SPLITS:
            classes = tagged.y[_rows(c, split)]
            assert np.array_equal(_labels(c, split), (~np.isin(classes, [3, 8])).astype(int))


def test_anomaly_labelled_source_keeps_its_labels():
    rng = np.random.default_rng(0)
    n = 600
    y = (rng.random(n) < 0.15).astype(np.int64)
    X = np.c_[rng.normal(size=(n, 5)), np.arange(n)]
    ds = Dataset(X, y, True, "odds-like")
    total = 0
    for c in partition(ds, ["x", "y", "z"], PartitionConfig(normal="global", alpha=5.0), [0], seed=2):
        assert c.normal_classes == [0]
        for split in SPLITS:
            rows = _rows(c, split)
            assert np.array_equal(_labels(c, split), y[rows])
            total += len(rows)
    assert total == n  # labelled anomalies are not subsampled: every row is used


def test_impossible_partition_raises_input_error(tagged):
    with pytest.raises(PQFLInputError) as info:
        partition(tagged, NAMES, PartitionConfig(min_anomalies=10_000), [0], seed=0, attempts=3)
    msg = str(info.value)
    assert "partition" in msg and "min_anomalies" in msg


def test_partition_redraws_until_every_client_has_its_anomalies():
    """Few anomalies over four clients (like ODDS wbc): some seeds need many draws. A seed
    that succeeds keeps its partition whatever the attempt budget, and the default budget
    reaches seeds that 25 draws could not."""
    rng = np.random.default_rng(0)
    y = np.zeros(400, dtype=np.int64)
    y[rng.choice(400, 20, replace=False)] = 1
    ds = Dataset(rng.normal(size=(400, 3)), y, True, "few-anomalies")
    cfg = PartitionConfig(alpha=1.0, quantity_skew=0.5, min_anomalies=3)

    def draw(seed, attempts=None):
        try:
            return partition(ds, NAMES, cfg, [0], seed=seed, **({} if attempts is None else {"attempts": attempts}))
        except PQFLInputError:
            return None

    rescued = 0
    for seed in range(40):
        short, default = draw(seed, attempts=25), draw(seed)
        assert default is not None, seed
        assert all(c.y_train.sum() + c.y_val.sum() + c.y_test.sum() >= 3 for c in default)
        if short is None:
            rescued += 1
        else:
            assert all(
                np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
                for a, b in zip(short, default)
            )
    assert rescued > 0


def test_unknown_global_normal_class_raises_input_error(tagged):
    with pytest.raises(PQFLInputError, match="normal_classes"):
        partition(tagged, NAMES, PartitionConfig(normal="global"), [42], seed=0)


# --------------------------------------------------------------------------- sources


def test_sklearn_sources(digits):
    from sklearn.datasets import load_breast_cancer, load_digits

    ref = load_digits()
    assert digits.X.shape == ref.data.shape and not digits.anomaly_labels
    assert np.array_equal(digits.y, ref.target)
    bc = load_source("sklearn:breast_cancer")
    assert bc.anomaly_labels
    assert np.array_equal(bc.y, (load_breast_cancer().target == 0).astype(int))
    with pytest.raises(PQFLInputError, match="sklearn:digits"):
        load_source("sklearn:iris_typo")
    with pytest.raises(PQFLInputError, match="unknown source"):
        load_source("http://example.com/x.csv")


def test_csv_loader(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"f1": rng.normal(size=20), "kind": np.arange(20) % 3, "f2": rng.normal(size=20)})
    path = tmp_path / "toy.csv"
    frame.to_csv(path, index=False)
    ds = load_source(f"csv:{path}#label=kind")
    assert ds.X.shape == (20, 2)
    assert np.allclose(ds.X, frame[["f1", "f2"]].to_numpy())
    assert np.array_equal(ds.y, frame["kind"].to_numpy())
    assert not ds.anomaly_labels  # three classes: a class column
    assert ds.name == "toy"

    frame["kind"] = (np.arange(20) % 4 == 0).astype(float)  # 0.0 / 1.0 floats: anomaly flags
    frame.to_csv(path, index=False)
    ds = load_source(f"csv:{path}#label=kind")
    assert ds.anomaly_labels and ds.y.dtype.kind == "i"
    assert np.array_equal(ds.y, (np.arange(20) % 4 == 0).astype(int))


def test_csv_errors(tmp_path):
    path = tmp_path / "toy.csv"
    pd.DataFrame({"f1": [1.0, 2.0, 3.0], "label": [0, 1, 0]}).to_csv(path, index=False)
    with pytest.raises(PQFLInputError, match="no column 'target'"):
        load_source(f"csv:{path}#label=target")
    with pytest.raises(PQFLInputError, match="label=COLUMN"):
        load_source(f"csv:{path}")
    with pytest.raises(PQFLInputError, match="not found"):
        load_source(f"csv:{tmp_path / 'missing.csv'}#label=label")
    pd.DataFrame({"f1": [1.0, np.nan, 3.0], "label": [0, 1, 0]}).to_csv(path, index=False)
    with pytest.raises(PQFLInputError, match="NaN"):
        load_source(f"csv:{path}#label=label")
    pd.DataFrame({"f1": ["x", "y", "z"], "label": [0, 1, 0]}).to_csv(path, index=False)
    with pytest.raises(PQFLInputError, match="non-numeric"):
        load_source(f"csv:{path}#label=label")
    pd.DataFrame({"f1": [1.0, 2.0, 3.0], "label": [0.5, 1, 0]}).to_csv(path, index=False)
    with pytest.raises(PQFLInputError, match="integers"):
        load_source(f"csv:{path}#label=label")


def test_odds_loader(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 4))
    y = (np.arange(30) % 5 == 0).astype(float).reshape(-1, 1)  # ODDS stores y as a column
    path = tmp_path / "tiny.mat"
    scipy.io.savemat(path, {"X": X, "y": y})
    ds = load_source(f"odds:{path}")
    assert ds.anomaly_labels and ds.name == "tiny"
    assert np.array_equal(ds.X, X)
    assert ds.y.shape == (30,) and np.array_equal(ds.y, y.ravel().astype(int))


def test_odds_errors(tmp_path):
    with pytest.raises(PQFLInputError, match="not found"):
        load_source(f"odds:{tmp_path / 'missing.mat'}")

    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x00\x01this is not a MATLAB file at all\xff" * 20)
    with pytest.raises(PQFLInputError, match="not a readable MATLAB"):
        load_source(f"odds:{junk}")

    rng = np.random.default_rng(3)
    X = rng.normal(size=(10, 3))
    nan_path = tmp_path / "nan.mat"
    X_nan = X.copy()
    X_nan[4, 1] = np.nan
    scipy.io.savemat(nan_path, {"X": X_nan, "y": np.zeros((10, 1))})
    with pytest.raises(PQFLInputError, match="1 rows have NaN"):
        load_source(f"odds:{nan_path}")

    bad_labels = tmp_path / "labels.mat"
    scipy.io.savemat(bad_labels, {"X": X, "y": np.arange(10).reshape(-1, 1) % 3})
    with pytest.raises(PQFLInputError, match="0 \\(normal\\) or 1 \\(anomaly\\)"):
        load_source(f"odds:{bad_labels}")

    no_y = tmp_path / "noy.mat"
    scipy.io.savemat(no_y, {"X": X})
    with pytest.raises(PQFLInputError, match="'X' and 'y'"):
        load_source(f"odds:{no_y}")

    mismatch = tmp_path / "mismatch.mat"
    scipy.io.savemat(mismatch, {"X": X, "y": np.zeros((7, 1))})
    with pytest.raises(PQFLInputError, match="one label per row"):
        load_source(f"odds:{mismatch}")


# --------------------------------------------------------------------------- preprocessing


def _correlated(n: int, d: int, seed: int) -> np.ndarray:
    """Rows with distinct variances and correlations (a well-separated PCA spectrum)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.linspace(3.0, 0.3, d)[None, :]
    return rng.normal(size=(n, d)) @ mix.T * rng.uniform(0.5, 20.0, d) + rng.normal(0, 5, d)


def test_global_stats_from_client_sums_equal_pooled_statistics():
    X = _correlated(400, 6, seed=0)
    chunks = [X[:50], X[50:170], X[170:171], X[171:]]
    stats = GlobalStats.from_sums([SufficientStats.of(c) for c in chunks])
    assert np.allclose(stats.mean, X.mean(axis=0))
    assert np.allclose(stats.scale, X.std(axis=0))

    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    pca = PCA().fit(Z)
    k = 3
    for i in range(k):
        # Same principal directions up to sign.
        assert abs(float(stats.eigvecs[:, i] @ pca.components_[i])) == pytest.approx(1.0, abs=1e-8)
    # Same subspace: the projector onto the top-k directions agrees.
    P_ours = stats.eigvecs[:, :k] @ stats.eigvecs[:, :k].T
    P_sk = pca.components_[:k].T @ pca.components_[:k]
    assert np.allclose(P_ours, P_sk, atol=1e-8)
    # Eigenvalues are the (population) variances along those directions, descending.
    assert np.allclose(stats.eigvals, np.var(Z @ stats.eigvecs, axis=0), atol=1e-8)
    assert np.all(np.diff(stats.eigvals) <= 1e-12)
    # The basis is orthonormal.
    assert np.allclose(stats.eigvecs.T @ stats.eigvecs, np.eye(6), atol=1e-10)


def test_global_stats_is_independent_of_chunking_and_sign_fixed():
    X = _correlated(300, 5, seed=1)
    one = GlobalStats.from_sums([SufficientStats.of(X)])
    many = GlobalStats.from_sums([SufficientStats.of(c) for c in np.array_split(X, 7)])
    assert np.allclose(one.eigvecs, many.eigvecs, atol=1e-8)
    assert np.allclose(one.mean, many.mean) and np.allclose(one.scale, many.scale)
    # Each eigenvector's largest-magnitude entry is positive (deterministic signs).
    idx = np.abs(one.eigvecs).argmax(axis=0)
    assert np.all(one.eigvecs[idx, np.arange(5)] > 0)


def test_constant_feature_gets_unit_scale():
    X = _correlated(100, 4, seed=2)
    X[:, 2] = 7.0
    stats = GlobalStats.from_sums([SufficientStats.of(X[:40]), SufficientStats.of(X[40:])])
    assert stats.scale[2] == 1.0
    assert stats.mean[2] == pytest.approx(7.0)
    assert np.all(np.isfinite(stats.eigvecs))


@pytest.mark.parametrize("qubits", [2, 3])
def test_amplitude_feature_map_with_pca_gives_unit_rows(qubits):
    X = _correlated(200, 10, seed=3)  # 10 features > 2**2 and > 2**3 -> PCA down
    stats = GlobalStats.from_sums([SufficientStats.of(X[:120]), SufficientStats.of(X[120:])])
    fmap = feature_map(stats, "amplitude", 2**qubits)
    out = fmap.transform(X)
    assert out.shape == (200, 2**qubits)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    # Rows are the normalised PCA scores of the standardised data (up to each component's sign).
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    scores = PCA(n_components=2**qubits).fit(Z).transform(Z)
    expected = scores / np.linalg.norm(scores, axis=1, keepdims=True)
    signs = np.sign(np.sum(out * expected, axis=0))
    assert np.allclose(out, expected * signs, atol=1e-8)


def test_amplitude_feature_map_pads_small_inputs():
    X = _correlated(50, 3, seed=4)  # 3 features < 2**2: standardise, zero-pad, normalise
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    out = feature_map(stats, "amplitude", 4).transform(X)
    assert out.shape == (50, 4)
    assert np.allclose(out[:, 3], 0.0)
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    assert np.allclose(out[:, :3], Z / np.linalg.norm(Z, axis=1, keepdims=True))
    # The mean row itself has no direction: it maps to a valid (unit-norm) state, not NaN.
    centre = feature_map(stats, "amplitude", 4).transform(X.mean(axis=0, keepdims=True))
    assert np.all(np.isfinite(centre)) and np.linalg.norm(centre) == pytest.approx(1.0)


@pytest.mark.parametrize("encoding", ["angle", "iqp"])
def test_angle_feature_map_is_bounded(encoding):
    X = _correlated(300, 8, seed=5)
    X[0] *= 50.0  # an outlier far outside the bulk
    stats = GlobalStats.from_sums([SufficientStats.of(X[:100]), SufficientStats.of(X[100:])])
    fmap = feature_map(stats, encoding, 3)
    out = fmap.transform(X)
    assert out.shape == (300, 3)
    assert np.all(out > -np.pi) and np.all(out < np.pi)
    # Whitened scores: each angle column has a comparable spread (not dominated by scale).
    assert np.all(out.std(axis=0) > 0.3)
    # Monotone in the PCA score: ordering of rows along each component is kept.
    Z = (X - stats.mean) / stats.scale
    scores = Z @ stats.eigvecs[:, :3]
    for j in range(3):
        order = np.argsort(scores[:, j])
        assert np.all(np.diff(out[order, j]) >= 0)


def test_feature_map_is_applied_identically_to_any_split():
    X = _correlated(120, 6, seed=6)
    stats = GlobalStats.from_sums([SufficientStats.of(X)])
    fmap = feature_map(stats, "angle", 4)
    assert np.array_equal(fmap.transform(X[10:20]), fmap.transform(X)[10:20])


# --------------------------------------------------------------------------- what the data lacks


def _flags(n_anomalies: int, n_normal: int) -> Dataset:
    y = np.r_[np.ones(n_anomalies), np.zeros(n_normal)].astype(np.int64)
    return Dataset(np.random.default_rng(0).normal(size=(len(y), 3)), y, True, "flags")


START = "partition: could not give every client at least 6 anomalies and normal samples: the data"


@pytest.mark.parametrize(
    "ds, cfg, normal, expected",
    [
        (
            _flags(0, 300),
            PartitionConfig(),
            [0],
            "(flags) has no anomalies (y = 1 rows); use data with labelled anomalies",
        ),
        (_flags(300, 0), PartitionConfig(), [0], "(flags) has no normal rows (y = 0); use data with normal rows"),
        (
            _flags(20, 300),
            PartitionConfig(),
            [0],
            "(flags) has 20 anomalies (y = 1 rows), fewer than the 24 that 4 clients take with "
            "partition.min_anomalies = 6; lower partition.min_anomalies or use fewer clients",
        ),
        (
            _flags(100, 23),
            PartitionConfig(),
            [0],
            "(flags) has 23 normal rows (y = 0), fewer than the 24 that 4 clients take",
        ),
        (
            Dataset(np.zeros((40, 2)), np.arange(40) % 2, False, "two"),
            PartitionConfig(normal="global"),
            [0, 1],
            "(two) has no anomalies (rows outside dataset.normal_classes); make fewer classes normal",
        ),
        (
            Dataset(np.zeros((40, 2)), np.arange(40) % 2, False, "two"),
            PartitionConfig(normal="context", normal_classes_per_client=2),
            [0],
            "(two) has 2 classes, all of them normal at every client (partition.normal_classes_per_client = 2), "
            "so no anomalies; lower partition.normal_classes_per_client",
        ),
        (
            Dataset(np.zeros((40, 4)), np.arange(40) % 4, False, "four"),
            PartitionConfig(normal="context"),
            [0],
            "(four) has 40 rows (6 anomalies + 6 normal rows per client), fewer than the 48 that 4 clients take",
        ),
    ],
    ids=["no anomalies", "no normal rows", "few anomalies", "few normal rows", "all normal", "context", "few rows"],
)
def test_data_without_enough_anomalies_or_normal_rows_says_so(ds, cfg, normal, expected):
    with pytest.raises(PQFLInputError) as info:
        partition(ds, NAMES, cfg, normal, seed=0)
    assert str(info.value).startswith(f"{START} {expected}"), str(info.value)
    assert "partition.alpha" not in str(info.value)


def test_enough_data_badly_spread_still_suggests_alpha():
    """When the totals suffice, only the draw can be at fault: the hint stays on α."""
    assert shortage(_flags(24, 24), 4, PartitionConfig(), [0]) == ("", "")
    with pytest.raises(PQFLInputError) as info:
        partition(_flags(24, 300), NAMES, PartitionConfig(alpha=0.01), [0], seed=0, attempts=3)
    assert "raise partition.alpha" in str(info.value) and "the data" not in str(info.value)


def _fleet_config(**sections) -> dict:
    base = {
        "dataset": {"source": "sklearn:digits"},
        "partition": {"alpha": 1.0, "min_anomalies": 6},
        "clients": [{"name": n, "qubits": 3} for n in NAMES],
    }
    return {**base, **sections}


def test_a_tiny_max_samples_is_named_as_the_cause():
    with pytest.raises(PQFLInputError) as info:
        load_and_partition(parse_config(_fleet_config(dataset={"source": "sklearn:digits", "max_samples": 30})))
    assert str(info.value) == (
        "dataset.max_samples: 30 rows (of 1797) leave too few for 4 clients: 30 rows (6 anomalies + 6 normal rows "
        "per client), fewer than the 48 that 4 clients take with partition.min_anomalies = 6; raise max_samples"
    )


def test_batch_size_beyond_every_training_row_is_refused():
    datas = load_and_partition(parse_config(_fleet_config()))
    pooled, largest = sum(d.n_train for d in datas), max(d.n_train for d in datas)
    for ok in (largest, largest + 1, pooled):  # up to the pooled rows: full batches, and the centralized model's
        load_and_partition(parse_config(_fleet_config(federation={"batch_size": ok})))
    with pytest.raises(PQFLInputError) as info:
        load_and_partition(parse_config(_fleet_config(federation={"batch_size": pooled + 1})))
    assert str(info.value).startswith(
        f"federation.batch_size: {pooled + 1} is more than the {pooled} training rows of all 4 clients together "
        f"(the largest client has {largest})"
    )
    assert str(info.value).endswith(f"use a batch_size of at most {largest}")
