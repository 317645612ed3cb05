"""Dataset sources: ``sklearn:digits``, ``sklearn:breast_cancer``, ``odds:PATH``, ``csv:PATH#label=COL``.

A source yields features X and labels y. For class-labelled sources (digits, CSV with a
class column) y holds classes and the anomaly setup is decided by the partition; for
sources whose labels are anomaly flags (ODDS, breast_cancer), ``anomaly_labels`` is True
and y = 1 marks an anomaly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from pqfl.errors import PQFLInputError


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray
    y: np.ndarray
    anomaly_labels: bool
    name: str


def _check(X: np.ndarray, y: np.ndarray, where: str, anomaly_labels: bool) -> None:
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise PQFLInputError(f"{where}: expected a 2-D feature matrix with one label per row, got X{X.shape}, y{y.shape}")
    if not np.all(np.isfinite(X)):
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise PQFLInputError(f"{where}: {bad} rows have NaN or infinite features; clean or impute them first")
    if anomaly_labels and not set(np.unique(y)).issubset({0, 1}):
        found = sorted(set(np.unique(y).tolist()))[:6]
        raise PQFLInputError(f"{where}: labels must be 0 (normal) or 1 (anomaly), found {found}; recode the labels")


def _load_sklearn(name: str) -> Dataset:
    from sklearn import datasets

    if name == "digits":
        d = datasets.load_digits()
        return Dataset(d.data.astype(np.float64), d.target.astype(np.int64), False, "digits")
    if name == "breast_cancer":
        d = datasets.load_breast_cancer()
        # target 0 = malignant: the rarer class is the anomaly.
        return Dataset(d.data.astype(np.float64), (d.target == 0).astype(np.int64), True, "breast_cancer")
    raise PQFLInputError(f"dataset.source: unknown scikit-learn dataset {name!r}; use sklearn:digits or sklearn:breast_cancer")


def _load_odds(path: Path) -> Dataset:
    if not path.is_file():
        raise PQFLInputError(f"dataset.source: file {path} not found; give an existing ODDS .mat file")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for corrupt files
        raise PQFLInputError(f"dataset.source: {path} is not a readable MATLAB .mat file ({type(err).__name__}); re-download it") from None
    if "X" not in mat or "y" not in mat:
        raise PQFLInputError(f"dataset.source: {path} has no 'X' and 'y' arrays; ODDS files hold both")
    X = np.asarray(mat["X"], dtype=np.float64)
    y = np.asarray(mat["y"]).ravel()
    _check(X, y, str(path), anomaly_labels=True)
    return Dataset(X, y.astype(np.int64), True, path.stem)


def _load_csv(spec: str) -> Dataset:
    path_str, _, frag = spec.partition("#")
    label = frag.removeprefix("label=") if frag.startswith("label=") else None
    path = Path(path_str)
    if not label:
        raise PQFLInputError(f"dataset.source: csv:{spec} names no label column; write csv:PATH#label=COLUMN")
    if not path.is_file():
        raise PQFLInputError(f"dataset.source: file {path} not found; give an existing CSV file")
    try:
        frame = pd.read_csv(path)
    except Exception as err:
        raise PQFLInputError(f"dataset.source: {path} is not a readable CSV ({type(err).__name__}); check the file") from None
    if label not in frame.columns:
        raise PQFLInputError(f"dataset.source: {path} has no column {label!r}; columns are {list(frame.columns)[:8]}")
    y = frame.pop(label).to_numpy()
    try:
        X = frame.to_numpy(dtype=np.float64)
    except ValueError:
        raise PQFLInputError(f"dataset.source: {path} has non-numeric feature columns; encode them as numbers") from None
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise PQFLInputError(f"dataset.source: label column {label!r} in {path} must hold integers; recode the labels")
    binary = set(np.unique(y).tolist()) <= {0, 1}
    _check(X, y, str(path), anomaly_labels=binary)
    return Dataset(X, y.astype(np.int64), binary, path.stem)


def load_source(source: str) -> Dataset:
    """Load a dataset from a source string (see module docstring)."""
    scheme, _, rest = source.partition(":")
    if scheme == "sklearn":
        return _load_sklearn(rest)
    if scheme == "odds":
        return _load_odds(Path(rest))
    if scheme == "csv":
        return _load_csv(rest)
    raise PQFLInputError(
        f"dataset.source: unknown source {source!r}; use sklearn:digits, sklearn:breast_cancer, odds:PATH or csv:PATH#label=COLUMN"
    )
