"""Dataset sources, each read from its official distribution format on a local path.

| source | reads |
|---|---|
| ``sklearn:digits``, ``sklearn:breast_cancer`` | data shipped with scikit-learn |
| ``odds:FILE.mat`` | ODDS MATLAB file with ``X`` and ``y`` (y = 1 anomaly) |
| ``csv:FILE#label=COL`` | CSV with a header; ``COL`` holds the label |
| ``cifar10:DIR`` | CIFAR-10 binary version: ``data_batch_1..5.bin`` and ``test_batch.bin`` |
| ``cifar100:DIR`` | CIFAR-100 binary version: ``train.bin`` and ``test.bin``; the *fine* label (100 classes) |
| ``svhn:FILE.mat`` | SVHN cropped digits: ``X`` (32, 32, 3, N), ``y`` with 10 meaning digit 0 |
| ``imagefolder:DIR`` | ImageNet-style folder: one sub-folder of JPEG/PNG files per class |

Image sources take options after ``#``: ``size=S`` (default 8) is the side of the grayscale
image each picture is reduced to, so a sample has S² features (8 → 64 = 2⁶ amplitudes);
``cifar100:DIR#label=coarse`` picks the 20 superclasses instead of the 100 fine classes.
The federated PCA (``preprocessing``) then maps these features to what each client's
encoding takes.

A source yields features X and labels y. For class-labelled sources (digits, images, CSV
with a class column) y holds classes and the anomaly setup is decided by the partition;
for sources whose labels are anomaly flags (ODDS, breast_cancer), ``anomaly_labels`` is
True and y = 1 marks an anomaly.

Every source is checked the same way after loading: finite features small enough that the
sums of squares the clients share (``preprocessing``) stay finite, one label per row, and
0/1 labels where they flag anomalies. A bad file raises PQFLInputError naming the file and
the fix; values echoed in messages are cut short (``pqfl.config.clip``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse

from pqfl.config import clip
from pqfl.errors import PQFLInputError

# Every scheme ``load_source`` understands (the config validates against this list).
SCHEMES = ("sklearn", "odds", "csv", "cifar10", "cifar100", "svhn", "imagefolder")

IMAGE_SIZE = 8  # default side of the reduced grayscale image: 64 features = 2^6 amplitudes
# ITU-R BT.601 luma, the weights Pillow's convert("L") uses, so every image source agrees.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CHUNK = 4096  # images converted at a time: bounds the float copy of a 50k-image file
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray
    y: np.ndarray
    anomaly_labels: bool
    name: str
    classes: tuple[str, ...] = ()  # class names by label, where the source has them


def _check(X: np.ndarray, y: np.ndarray, where: str, anomaly_labels: bool) -> None:
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise PQFLInputError(
            f"{where}: expected a 2-D feature matrix with one label per row, got X{X.shape}, y{y.shape}"
        )
    if not np.all(np.isfinite(X)):
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise PQFLInputError(f"{where}: {bad} rows have NaN or infinite features; clean or impute them first")
    with np.errstate(over="ignore"):  # the federated PCA sums x xᵀ over rows, then works over features
        power = float(np.einsum("ij,ij->", X, X)) * X.shape[1]
    if not np.isfinite(power):
        raise PQFLInputError(
            f"{where}: feature values up to {np.abs(X).max():.3g} overflow the sums of squares the clients share; "
            "rescale the features first (e.g. standardise them or take logarithms)"
        )
    if anomaly_labels and not set(np.unique(y)).issubset({0, 1}):
        found = sorted(set(np.unique(y).tolist()))[:6]
        raise PQFLInputError(f"{where}: labels must be 0 (normal) or 1 (anomaly), found {found}; recode the labels")


_KINDS = {"U": "text", "S": "text", "O": "a cell array or struct", "V": "a struct", "c": "complex numbers"}


def _numeric(value, what: str, path: Path):
    """A MATLAB variable that holds real numbers (sparse matrices made dense)."""
    if scipy.sparse.issparse(value):
        value = value.toarray()
    if value.dtype.kind not in "biuf":
        raise PQFLInputError(
            f"dataset.source: {path}: {what} holds {_KINDS.get(value.dtype.kind, value.dtype.name)}, not real numbers; "
            "save X and y as real numeric arrays"
        )
    return value


def _load_sklearn(name: str) -> Dataset:
    from sklearn import datasets

    if name == "digits":
        d = datasets.load_digits()
        return Dataset(d.data.astype(np.float64), d.target.astype(np.int64), False, "digits")
    if name == "breast_cancer":
        d = datasets.load_breast_cancer()
        # target 0 = malignant: the rarer class is the anomaly.
        return Dataset(d.data.astype(np.float64), (d.target == 0).astype(np.int64), True, "breast_cancer")
    raise PQFLInputError(
        f"dataset.source: unknown scikit-learn dataset {clip(repr(name))}; use sklearn:digits or sklearn:breast_cancer"
    )


def _load_odds(path: Path) -> Dataset:
    if not os.path.isfile(path):  # unlike Path.is_file, False (not OSError) for a name too long
        raise PQFLInputError(f"dataset.source: file {clip(path)} not found; give an existing ODDS .mat file")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for corrupt files
        raise PQFLInputError(
            f"dataset.source: {path} is not a readable MATLAB .mat file ({type(err).__name__}); re-download it"
        ) from None
    if "X" not in mat or "y" not in mat:
        raise PQFLInputError(f"dataset.source: {path} has no 'X' and 'y' arrays; ODDS files hold both")
    X = np.asarray(_numeric(mat["X"], "X", path), dtype=np.float64)
    y = np.asarray(_numeric(mat["y"], "y", path)).ravel()
    _check(X, y, str(path), anomaly_labels=True)
    return Dataset(X, y.astype(np.int64), True, path.stem)


def _load_csv(spec: str) -> Dataset:
    path_str, _, frag = spec.partition("#")
    label = frag.removeprefix("label=") if frag.startswith("label=") else None
    path = Path(path_str)
    if not label:
        raise PQFLInputError(f"dataset.source: csv:{clip(spec)} names no label column; write csv:PATH#label=COLUMN")
    if not os.path.isfile(path):
        raise PQFLInputError(f"dataset.source: file {clip(path)} not found; give an existing CSV file")
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0].tolist()
        frame = pd.read_csv(path)
    except Exception as err:
        raise PQFLInputError(
            f"dataset.source: {path} is not a readable CSV ({type(err).__name__}); check the file"
        ) from None
    # pandas renames a repeated column (label, label.1), which would turn a second label into a feature.
    repeated = sorted({c for c in header if isinstance(c, str) and header.count(c) > 1})
    if repeated:
        raise PQFLInputError(
            f"dataset.source: {path} names the column(s) {clip(repeated)} more than once; give every column a unique name"
        )
    if label not in frame.columns:
        raise PQFLInputError(
            f"dataset.source: {path} has no column {clip(repr(label))}; columns are {clip(list(frame.columns)[:8])}"
        )
    y = frame.pop(label).to_numpy()
    try:
        X = frame.to_numpy(dtype=np.float64)
    except ValueError:
        raise PQFLInputError(
            f"dataset.source: {path} has non-numeric feature columns; encode them as numbers"
        ) from None
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise PQFLInputError(
                f"dataset.source: label column {label!r} in {path} must hold integers; recode the labels"
            )
    binary = set(np.unique(y).tolist()) <= {0, 1}
    _check(X, y, str(path), anomaly_labels=binary)
    return Dataset(X, y.astype(np.int64), binary, path.stem)


def _options(scheme: str, spec: str, allowed: tuple[str, ...]) -> tuple[Path, dict[str, str]]:
    """Split ``PATH#key=value&key=value`` and check the keys."""
    path, _, frag = spec.partition("#")
    opts: dict[str, str] = {}
    for item in filter(None, frag.split("&")):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed:
            raise PQFLInputError(
                f"dataset.source: {scheme}:{clip(spec)} has option {clip(repr(item))}; "
                f"options are {', '.join(k + '=...' for k in allowed)}"
            )
        opts[key] = value
    return Path(path), opts


def _image_size(scheme: str, opts: dict[str, str]) -> int:
    text = opts.get("size", str(IMAGE_SIZE))
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise PQFLInputError(
            f"dataset.source: {scheme} option size={clip(repr(text))} must be an integer 1-64 (side of the reduced image)"
        )
    return int(text)


def _gray_small(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB → (N, size²) grayscale in [0, 1], averaged over pixel blocks."""
    n, h, w, _ = images.shape
    out = np.empty((n, size * size), dtype=np.float64)
    for start in range(0, n, _CHUNK):
        gray = images[start : start + _CHUNK].astype(np.float32) @ _LUMA  # (m, h, w)
        if h % size == 0 and w % size == 0:
            small = gray.reshape(len(gray), size, h // size, size, w // size).mean(axis=(2, 4))
        else:  # block sizes that do not divide the image: Pillow's box filter does the same averaging
            from PIL import Image

            small = np.stack(
                [np.asarray(Image.fromarray(g, mode="F").resize((size, size), Image.Resampling.BOX)) for g in gray]
            )
        out[start : start + len(gray)] = small.reshape(len(gray), -1) / 255.0
    return out


def _cifar_dir(scheme: str, path: Path, inner: str, files: list[str]) -> Path:
    """The folder holding the binary files: ``path`` itself or its ``inner`` sub-folder."""
    if not os.path.isdir(path):
        raise PQFLInputError(
            f"dataset.source: directory {clip(path)} not found; give the unpacked {inner} folder of the {scheme} binary version"
        )
    folder = path / inner if (path / inner).is_dir() and not (path / files[0]).exists() else path
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        hint = (
            "it looks like the python (pickle) version; download the binary version"
            if (folder / "data_batch_1").exists() or (folder / "train").exists()
            else f"give the unpacked {inner} folder of the binary version"
        )
        raise PQFLInputError(f"dataset.source: {folder} lacks {', '.join(missing)}; {hint}")
    return folder


def _read_records(
    path: Path, label_bytes: int, label_index: int, n_labels: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR binary file: records of ``label_bytes`` label bytes then 3072 pixel bytes
    (1024 red, 1024 green, 1024 blue, each 32×32 row-major). Memory-mapped, converted in chunks."""
    record = label_bytes + 3072
    n_bytes = path.stat().st_size
    if n_bytes == 0 or n_bytes % record:
        raise PQFLInputError(
            f"dataset.source: {path} is {n_bytes} bytes, not a whole number of {record}-byte records; "
            "it is not the CIFAR binary version, re-download it"
        )
    records = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, record)
    labels = np.asarray(records[:, label_index], dtype=np.int64)
    if labels.max() >= n_labels:
        raise PQFLInputError(
            f"dataset.source: {path} has label {int(labels.max())} where at most {n_labels - 1} is possible; "
            "it is not this CIFAR variant's binary file"
        )
    X = np.concatenate(
        [
            _gray_small(records[s : s + _CHUNK, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), size)
            for s in range(0, len(records), _CHUNK)
        ]
    )
    del records
    return X, labels


def _load_cifar(scheme: str, spec: str) -> Dataset:
    if scheme == "cifar10":
        path, opts = _options(scheme, spec, ("size",))
        files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        folder = _cifar_dir(scheme, path, "cifar-10-batches-bin", files)
        label_bytes, label_index, n_labels = 1, 0, 10
    else:
        path, opts = _options(scheme, spec, ("size", "label"))
        files = ["train.bin", "test.bin"]
        folder = _cifar_dir(scheme, path, "cifar-100-binary", files)
        kind = opts.get("label", "fine")
        if kind not in ("fine", "coarse"):
            raise PQFLInputError(
                f"dataset.source: cifar100 option label={clip(repr(kind))}; use label=fine (100 classes) or label=coarse (20)"
            )
        # Each record starts with the coarse then the fine label byte.
        label_bytes, label_index, n_labels = 2, (1 if kind == "fine" else 0), (100 if kind == "fine" else 20)
    size = _image_size(scheme, opts)
    parts = [_read_records(folder / f, label_bytes, label_index, n_labels, size) for f in files]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    _check(X, y, str(folder), anomaly_labels=False)
    return Dataset(X, y, False, scheme)


def _load_svhn(spec: str) -> Dataset:
    path, opts = _options("svhn", spec, ("size",))
    size = _image_size("svhn", opts)
    if not os.path.isfile(path):
        raise PQFLInputError(
            f"dataset.source: file {clip(path)} not found; give SVHN's train_32x32.mat or test_32x32.mat"
        )
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as err:  # NotImplementedError for HDF5 (v7.3), ValueError/TypeError for junk
        raise PQFLInputError(
            f"dataset.source: {path} is not a readable MATLAB .mat file ({type(err).__name__}); "
            "use SVHN's cropped-digits train_32x32.mat / test_32x32.mat"
        ) from None
    if "X" not in mat or "y" not in mat:
        raise PQFLInputError(
            f"dataset.source: {path} has no 'X' and 'y' arrays; use SVHN's cropped-digits *_32x32.mat files"
        )
    images, y = _numeric(mat["X"], "X", path), np.asarray(_numeric(mat["y"], "y", path)).ravel()
    if images.ndim != 4 or images.shape[2] != 3 or images.shape[3] != len(y):
        raise PQFLInputError(
            f"dataset.source: {path} has X{images.shape} and {len(y)} labels; the cropped-digits format is "
            "X (32, 32, 3, N) with one label per image"
        )
    if not np.all((y >= 0) & (y <= 10)):
        raise PQFLInputError(
            f"dataset.source: {path} has labels outside 1-10; the cropped-digits format labels 1-9 and 10 for digit 0"
        )
    y = np.where(y == 10, 0, y).astype(np.int64)  # SVHN writes digit 0 as label 10
    X = _gray_small(np.moveaxis(images, 3, 0).astype(np.uint8, copy=False), size)
    del mat, images
    _check(X, y, str(path), anomaly_labels=False)
    return Dataset(X, y, False, path.stem, tuple(str(d) for d in range(10)))


def _load_imagefolder(spec: str) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    path, opts = _options("imagefolder", spec, ("size",))
    size = _image_size("imagefolder", opts)
    if not os.path.isdir(path):
        raise PQFLInputError(
            f"dataset.source: directory {clip(path)} not found; give a folder with one sub-folder of images per class"
        )
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    rows, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((path / name).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    small = img.convert("L").resize((size, size), Image.Resampling.BOX)
            except (UnidentifiedImageError, OSError) as err:
                raise PQFLInputError(
                    f"dataset.source: {file} is not a readable image ({type(err).__name__}); remove or replace it"
                ) from None
            rows.append(np.asarray(small, dtype=np.float64).ravel() / 255.0)
            labels.append(label)
    if not rows:
        raise PQFLInputError(
            f"dataset.source: {path} holds no JPEG/PNG images in class sub-folders; lay it out as {path}/CLASS/IMAGE.png"
        )
    found = sorted(set(labels))
    if len(found) < 2:
        raise PQFLInputError(
            f"dataset.source: {path} has images of only one class ({classes[found[0]]!r}); add a sub-folder per class"
        )
    X, y = np.stack(rows), np.asarray(labels, dtype=np.int64)
    _check(X, y, str(path), anomaly_labels=False)
    return Dataset(X, y, False, path.name, tuple(classes))


def load_source(source: str) -> Dataset:
    """Load a dataset from a source string (see module docstring)."""
    scheme, _, rest = source.partition(":")
    if scheme == "sklearn":
        return _load_sklearn(rest)
    if scheme == "odds":
        return _load_odds(Path(rest))
    if scheme == "csv":
        return _load_csv(rest)
    if scheme in ("cifar10", "cifar100"):
        return _load_cifar(scheme, rest)
    if scheme == "svhn":
        return _load_svhn(rest)
    if scheme == "imagefolder":
        return _load_imagefolder(rest)
    raise PQFLInputError(
        f"dataset.source: unknown source {clip(repr(source))}; use sklearn:digits, sklearn:breast_cancer, odds:PATH, "
        "csv:PATH#label=COLUMN, cifar10:DIR, cifar100:DIR, svhn:FILE or imagefolder:DIR"
    )
