"""Every dataset source, read from a tiny file the test writes in that dataset's official
format, and the partition scenarios the benchmark suites use."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from pqfl.config import PartitionConfig, parse_config
from pqfl.data.partition import partition
from pqfl.data.sources import Dataset, load_source
from pqfl.errors import PQFLInputError
from pqfl.fleet import prepare

CIFAR10_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def _rgb(rng, n: int, side: int = 32) -> np.ndarray:
    return rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def _expected(images: np.ndarray, size: int = 8) -> np.ndarray:
    """What a user gets from Pillow: RGB → L, box-filtered to size×size, scaled to [0, 1]."""
    return np.stack(
        [
            np.asarray(Image.fromarray(im).convert("L").resize((size, size), Image.Resampling.BOX), float).ravel() / 255
            for im in images
        ]
    )


def write_cifar10(folder, rng, per_file: int = 4):
    """The CIFAR-10 binary version: per record 1 label byte, then R, G, B planes of 32×32."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for name in CIFAR10_FILES:
        im, lab = _rgb(rng, per_file), rng.integers(0, 10, per_file).astype(np.uint8)
        planes = im.transpose(0, 3, 1, 2).reshape(per_file, 3072)
        (folder / name).write_bytes(np.hstack([lab[:, None], planes]).tobytes())
        images.append(im)
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def write_cifar100(folder, rng, n_train: int = 6, n_test: int = 3):
    """The CIFAR-100 binary version: per record a coarse and a fine label byte, then the planes."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train.bin", n_train), ("test.bin", n_test)):
        im = _rgb(rng, n)
        coarse, fine = rng.integers(0, 20, n).astype(np.uint8), rng.integers(20, 100, n).astype(np.uint8)
        (folder / name).write_bytes(
            np.hstack([coarse[:, None], fine[:, None], im.transpose(0, 3, 1, 2).reshape(n, 3072)]).tobytes()
        )
        out.append((im, coarse, fine))
    return [np.concatenate(parts) for parts in zip(*out)]


def write_svhn(path, rng, n: int = 7):
    """SVHN cropped digits: X (32, 32, 3, N) uint8, y (N, 1) with 10 for digit 0."""
    im = _rgb(rng, n)
    y = np.array([10, 1, 2, 10, 9, 5, 3][:n], dtype=np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"X": np.moveaxis(im, 0, 3), "y": y})
    return im, y.ravel()


def test_cifar10_reads_every_batch_in_order_as_grayscale(tmp_path):
    images, labels = write_cifar10(tmp_path / "cifar-10-batches-bin", np.random.default_rng(0))
    # The parent folder works as well as the batches folder itself.
    for src in (tmp_path / "cifar-10-batches-bin", tmp_path):
        ds = load_source(f"cifar10:{src}")
        assert ds.X.shape == (24, 64) and not ds.anomaly_labels
        np.testing.assert_array_equal(ds.y, labels)
        # Pillow rounds twice (L conversion, box filter) to integers: agreement within 1.5 grey levels.
        np.testing.assert_allclose(ds.X, _expected(images), atol=1.5 / 255)
    small = load_source(f"cifar10:{tmp_path}#size=4")
    np.testing.assert_allclose(small.X, _expected(images, 4), atol=1.5 / 255)


def test_cifar100_uses_fine_labels_unless_coarse_is_asked(tmp_path):
    images, coarse, fine = write_cifar100(tmp_path, np.random.default_rng(1))
    ds = load_source(f"cifar100:{tmp_path}")
    np.testing.assert_array_equal(ds.y, fine)
    np.testing.assert_allclose(ds.X, _expected(images), atol=1.5 / 255)
    np.testing.assert_array_equal(load_source(f"cifar100:{tmp_path}#label=coarse").y, coarse)


def test_svhn_maps_label_10_to_digit_0(tmp_path):
    images, y = write_svhn(tmp_path / "train_32x32.mat", np.random.default_rng(2))
    ds = load_source(f"svhn:{tmp_path / 'train_32x32.mat'}")
    np.testing.assert_array_equal(ds.y, np.where(y == 10, 0, y))
    assert 10 not in ds.y and (ds.y == 0).sum() == 2
    np.testing.assert_allclose(ds.X, _expected(images), atol=1.5 / 255)


def test_imagefolder_reads_png_and_jpeg_by_class_folder(tmp_path):
    rng = np.random.default_rng(3)
    pngs = {}
    for cls in ("zebra", "ant"):  # labels follow sorted folder names: ant = 0, zebra = 1
        (tmp_path / cls).mkdir()
        for i in range(2):
            im = _rgb(rng, 1, 16)[0]
            Image.fromarray(im).save(tmp_path / cls / f"{i}.png")
            pngs[(cls, i)] = im
        Image.fromarray(_rgb(rng, 1, 20)[0]).save(tmp_path / cls / "extra.JPG", format="JPEG")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    ds = load_source(f"imagefolder:{tmp_path}#size=4")
    assert ds.classes == ("ant", "zebra")
    np.testing.assert_array_equal(ds.y, [0, 0, 0, 1, 1, 1])
    assert ds.X.shape == (6, 16)
    np.testing.assert_allclose(ds.X[0], _expected(pngs[("ant", 0)][None], 4)[0], atol=1e-12)
    np.testing.assert_allclose(ds.X[4], _expected(pngs[("zebra", 1)][None], 4)[0], atol=1e-12)


def test_odds_and_csv_sources(tmp_path):
    X = np.random.default_rng(4).normal(size=(12, 3))
    y = np.array([0] * 9 + [1] * 3)
    scipy.io.savemat(tmp_path / "toy.mat", {"X": X, "y": y.reshape(-1, 1).astype(float)})
    ds = load_source(f"odds:{tmp_path / 'toy.mat'}")
    assert ds.anomaly_labels and ds.name == "toy"
    np.testing.assert_allclose(ds.X, X)
    pd.DataFrame({"a": X[:, 0], "cls": y * 3, "b": X[:, 1]}).to_csv(tmp_path / "toy.csv", index=False)
    ds = load_source(f"csv:{tmp_path / 'toy.csv'}#label=cls")
    assert not ds.anomaly_labels and sorted(set(ds.y)) == [0, 3]
    np.testing.assert_allclose(ds.X, X[:, :2])


@pytest.mark.parametrize(
    "case",
    [
        "cifar10 missing dir",
        "cifar10 python version",
        "cifar10 truncated",
        "cifar10 bad option",
        "cifar10 bad size",
        "cifar100 as cifar10",
        "cifar100 bad label kind",
        "svhn missing",
        "svhn not mat",
        "svhn wrong shape",
        "imagefolder missing",
        "imagefolder empty",
        "imagefolder one class",
        "imagefolder broken image",
    ],
)
def test_loader_errors_name_the_file_and_the_fix(case, tmp_path):
    rng = np.random.default_rng(5)
    if case == "cifar10 missing dir":
        src, needle = f"cifar10:{tmp_path / 'nope'}", "nope not found"
    elif case == "cifar10 python version":
        (tmp_path / "data_batch_1").write_bytes(b"\x80\x04pickle")
        src, needle = f"cifar10:{tmp_path}", "python (pickle) version"
    elif case == "cifar10 truncated":
        write_cifar10(tmp_path, rng)
        (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 3000)
        src, needle = f"cifar10:{tmp_path}", "test_batch.bin is 3000 bytes"
    elif case == "cifar10 bad option":
        write_cifar10(tmp_path, rng)
        src, needle = f"cifar10:{tmp_path}#label=fine", "options are size="
    elif case == "cifar10 bad size":
        write_cifar10(tmp_path, rng)
        src, needle = f"cifar10:{tmp_path}#size=0", "size='0'"
    elif case == "cifar100 as cifar10":  # 3074-byte records do not divide a 3073-byte layout here
        write_cifar100(tmp_path, rng, n_train=1, n_test=1)
        for name in CIFAR10_FILES:
            (tmp_path / name).write_bytes((tmp_path / "train.bin").read_bytes())
        src, needle = f"cifar10:{tmp_path}", "not the CIFAR binary version"
    elif case == "cifar100 bad label kind":
        write_cifar100(tmp_path, rng)
        src, needle = f"cifar100:{tmp_path}#label=medium", "label=fine"
    elif case == "svhn missing":
        src, needle = f"svhn:{tmp_path / 'train_32x32.mat'}", "train_32x32.mat not found"
    elif case == "svhn not mat":
        (tmp_path / "x.mat").write_text("hello")
        src, needle = f"svhn:{tmp_path / 'x.mat'}", "not a readable MATLAB"
    elif case == "svhn wrong shape":
        scipy.io.savemat(tmp_path / "x.mat", {"X": np.zeros((5, 32, 32, 3), np.uint8), "y": np.ones((5, 1))})
        src, needle = f"svhn:{tmp_path / 'x.mat'}", "X (32, 32, 3, N)"
    elif case == "imagefolder missing":
        src, needle = f"imagefolder:{tmp_path / 'imgs'}", "imgs not found"
    elif case == "imagefolder empty":
        (tmp_path / "cat").mkdir()
        src, needle = f"imagefolder:{tmp_path}", "no JPEG/PNG images"
    elif case == "imagefolder one class":
        (tmp_path / "cat").mkdir()
        Image.fromarray(_rgb(rng, 1, 8)[0]).save(tmp_path / "cat" / "a.png")
        src, needle = f"imagefolder:{tmp_path}", "only one class"
    else:
        for cls in ("a", "b"):
            (tmp_path / cls).mkdir()
            Image.fromarray(_rgb(rng, 1, 8)[0]).save(tmp_path / cls / "ok.png")
        (tmp_path / "b" / "bad.png").write_bytes(b"not a png")
        src, needle = f"imagefolder:{tmp_path}", "bad.png is not a readable image"
    with pytest.raises(PQFLInputError) as err:
        load_source(src)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_config_accepts_the_image_sources():
    base = {"clients": [{"name": "a", "qubits": 2}]}
    for src in ("cifar10:/d", "cifar100:/d#label=coarse", "svhn:/f.mat", "imagefolder:/d"):
        assert parse_config({**base, "dataset": {"source": src}}).dataset.source == src
    with pytest.raises(PQFLInputError, match="dataset.source"):
        parse_config({**base, "dataset": {"source": "mnist:/d"}})


def test_image_source_reaches_every_encoding_through_federated_pca(tmp_path):
    """64 grayscale features → 2^q amplitudes or q angles per client, from summed statistics."""
    write_cifar10(tmp_path, np.random.default_rng(6), per_file=60)
    cfg = parse_config(
        {
            "dataset": {"source": f"cifar10:{tmp_path}", "normal_classes": [0, 1, 2, 3, 4]},
            "partition": {"alpha": 100.0, "normal": "global", "min_anomalies": 3},
            "clients": [
                {"name": "amp6", "qubits": 6, "encoding": "amplitude"},
                {"name": "amp3", "qubits": 3, "encoding": "amplitude"},
                {"name": "angle4", "qubits": 4, "encoding": "angle"},
            ],
        }
    )
    fleet = prepare(cfg)
    setups, stats = fleet.clients, fleet.stats
    assert len(stats.mean) == 64
    widths = {s.name: s.X_train.shape[1] for s in setups}
    assert widths == {"amp6": 64, "amp3": 8, "angle4": 4}
    for s in setups[:2]:
        np.testing.assert_allclose(np.linalg.norm(s.X_train, axis=1), 1.0)
    assert np.all(np.abs(setups[2].X_train) < np.pi)


# --- scenarios -------------------------------------------------------------------------


def _classes(n_per_class: int = 60, n_classes: int = 5) -> Dataset:
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return Dataset(rng.normal(size=(len(y), 3)) + y[:, None], y, False, "toy")


def _raw_labels(ds: Dataset, client) -> np.ndarray:
    """The original class of each of a client's rows (rows are unique in the toy data)."""
    lookup = {tuple(row): c for row, c in zip(ds.X, ds.y)}
    return np.array([lookup[tuple(r)] for r in np.vstack([client.X_train, client.X_val, client.X_test])])


def test_anomaly_classes_choose_which_classes_are_the_anomalies():
    ds = _classes()
    cfg = PartitionConfig(alpha=100.0, normal="global", anomaly_classes=[3], anomaly_ratio=0.2, min_anomalies=3)
    clients = partition(ds, ["a", "b"], cfg, [0, 1], seed=0)
    for c in clients:
        raw = _raw_labels(ds, c)
        labels = np.concatenate([c.y_train, c.y_val, c.y_test])
        assert set(raw[labels == 1]) == {3}  # only class 3 supplies anomalies
        assert set(raw[labels == 0]) == {0, 1}  # classes 2 and 4 are left out
        assert labels.mean() == pytest.approx(0.2, abs=0.03)


def test_anomaly_classes_errors():
    ds = _classes()
    with pytest.raises(PQFLInputError, match="partition.anomaly_classes: classes \\[9\\]"):
        partition(ds, ["a"], PartitionConfig(normal="global", anomaly_classes=[9]), [0], seed=0)
    with pytest.raises(PQFLInputError, match="also in dataset.normal_classes"):
        partition(ds, ["a"], PartitionConfig(normal="global", anomaly_classes=[0]), [0], seed=0)


def test_context_anomaly_classes_exclude_each_clients_own_normals():
    ds = _classes(n_per_class=80)
    cfg = PartitionConfig(
        alpha=0.3, normal="context", normal_classes_per_client=1, anomaly_classes=[2, 3], min_anomalies=3
    )
    clients = partition(ds, ["a", "b", "c"], cfg, [0], seed=1)
    for c in clients:
        raw = _raw_labels(ds, c)
        labels = np.concatenate([c.y_train, c.y_val, c.y_test])
        assert set(raw[labels == 1]) <= {2, 3} - set(c.normal_classes)
        assert set(raw[labels == 0]) == set(c.normal_classes)


def test_dirichlet_alpha_and_quantity_skew_control_heterogeneity():
    ds = _classes(n_per_class=200)
    names = [f"c{i}" for i in range(6)]

    def spread(**kw):
        cfg = PartitionConfig(normal="global", min_anomalies=3, anomaly_ratio=0.3, **kw)
        clients = partition(ds, names, cfg, [0, 1, 2], seed=2)
        sizes = np.array([len(_raw_labels(ds, c)) for c in clients])
        shares = np.array([np.bincount(_raw_labels(ds, c), minlength=5) / len(_raw_labels(ds, c)) for c in clients])
        return sizes, np.abs(shares - shares.mean(axis=0)).sum(axis=1).mean()

    _, iid_gap = spread(alpha=100.0)
    _, skew_gap = spread(alpha=0.5)
    assert skew_gap > 3 * iid_gap  # small α: class mixes differ between clients
    even, _ = spread(alpha=100.0)
    uneven, _ = spread(alpha=100.0, quantity_skew=1.5)
    assert uneven.max() / uneven.min() > 2 * even.max() / even.min()


def test_many_clients_scenario_partitions_anomaly_labelled_data():
    """50 clients on ODDS-style labels: every client gets both classes and its own rows."""
    rng = np.random.default_rng(8)
    y = (rng.random(6000) < 0.1).astype(int)
    ds = Dataset(rng.normal(size=(6000, 4)), y, True, "odds-like")
    names = [f"c{i:02d}" for i in range(50)]
    clients = partition(ds, names, PartitionConfig(alpha=5.0, min_anomalies=3), [0], seed=0)
    assert [c.name for c in clients] == names
    assert all(c.y_train.sum() >= 1 and c.y_test.sum() >= 1 for c in clients)
    total = sum(len(c.y_train) + len(c.y_val) + len(c.y_test) for c in clients)
    assert total == 6000


# --- hostile files ---------------------------------------------------------------------


def _mat(tmp_path, X, y, name="bad.mat") -> str:
    scipy.io.savemat(tmp_path / name, {"X": X, "y": y})
    return f"odds:{tmp_path / name}"


@pytest.mark.parametrize(
    "case",
    ["text X", "cell X", "struct X", "complex X", "text y", "complex y"],
)
def test_mat_variables_that_are_not_real_numbers_are_refused(case, tmp_path):
    X, y = np.random.default_rng(9).normal(size=(4, 2)), np.array([[0.0], [1.0], [0.0], [0.0]])
    what, value = (
        case.split()[1],
        {
            "text": np.array(["ab", "cd", "ef", "gh"]),
            "cell": np.array([np.zeros(2), np.ones(3), np.zeros(1), np.ones(2)], dtype=object),
            "struct": {"a": 1.0},
            "complex": (X if case.endswith("X") else y) + 1j,
        }[case.split()[0]],
    )
    src = _mat(tmp_path, value, y) if what == "X" else _mat(tmp_path, X, value)
    kind = {"text": "text", "cell": "a cell array or struct", "struct": "a struct", "complex": "complex numbers"}
    with pytest.raises(PQFLInputError) as err:
        load_source(src)
    msg = str(err.value)
    assert msg.startswith(f"dataset.source: {tmp_path / 'bad.mat'}: {what} holds {kind[case.split()[0]]}"), msg
    assert "real numeric arrays" in msg and "\n" not in msg


def test_sparse_and_logical_mat_variables_are_read_as_numbers(tmp_path):
    X = np.eye(6)[:, :4]
    y = np.array([[0], [1], [0], [0], [1], [0]], dtype=bool)
    ds = load_source(_mat(tmp_path, scipy.sparse.csc_matrix(X), y))
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y.ravel().astype(int))


def test_values_that_overflow_the_shared_statistics_are_refused(tmp_path):
    X, y = np.random.default_rng(10).normal(size=(50, 3)), (np.arange(50) % 5 == 0).astype(float)[:, None]
    np.testing.assert_allclose(load_source(_mat(tmp_path, X * 1e150, y, "ok.mat")).X, X * 1e150)  # large but summable
    for name, src in (
        ("big.mat", _mat(tmp_path, X * 1e200, y, "big.mat")),
        ("big.csv", f"csv:{tmp_path / 'big.csv'}#label=label"),
    ):
        pd.DataFrame({"a": X[:, 0] * 1e300, "label": y.ravel().astype(int)}).to_csv(tmp_path / "big.csv", index=False)
        with pytest.raises(PQFLInputError) as err:
            load_source(src)
        assert f"{name}: feature values up to" in str(err.value)
        assert "overflow the sums of squares" in str(err.value) and "rescale the features" in str(err.value)


def test_repeated_csv_column_names_are_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,label,b,label,a\n1,0,2,0,3\n4,1,5,1,6\n")
    with pytest.raises(PQFLInputError) as err:
        load_source(f"csv:{path}#label=label")
    assert str(err.value) == (
        f"dataset.source: {path} names the column(s) ['a', 'label'] more than once; give every column a unique name"
    )
    path.write_text("a,label,a.1\n1,0,2\n4,1,5\n")  # a column pandas would have made from a repeat, written out
    assert load_source(f"csv:{path}#label=label").X.shape == (2, 2)


@pytest.mark.parametrize("scheme", ["odds", "csv", "svhn", "cifar10", "imagefolder"])
def test_a_huge_source_string_is_not_echoed_back(scheme):
    source = f"{scheme}:/{'x' * 20_000_000}" + ("#label=y" if scheme == "csv" else "")
    with pytest.raises(PQFLInputError) as err:
        load_source(source)
    msg = str(err.value)
    assert msg.startswith("dataset.source: ") and "not found" in msg
    assert len(msg) < 500 and "characters)" in msg
