"""Each client's personalized detector as an MLflow pyfunc model.

``pqfl/`` never imports MLflow, so the packing lives here. The model wraps the library's
fitted :class:`~pqfl.detector.QuantumDetector` — its feature map, circuit, parameters (θ
block, head, one-class centre) and the threshold chosen on its validation split — saved
by :mod:`pqfl.persistence` as two plain files (``detector.json`` and ``detector.npz``, no
pickled classes); :class:`PersonalizedDetector` loads it and scores with it.

Input: a pandas DataFrame of raw features with the dataset's columns (preprocessing is
inside the model). Output: a DataFrame with ``score`` (higher = more anomalous) and
``flag`` (1 when ``score`` ≥ the validation threshold, as in the training metrics).

Registered model names are ``{experiment}-{method}-{client}`` (see :func:`registered_name`);
every run adds a new version to each. Finite-shot clients sample their ⟨Z⟩ estimates with a
fixed seed per client, so the same request always gets the same answer.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM, disable_logging, enable_logging

from pqfl.detector import QuantumDetector
from pqfl.persistence import feature_names, load_detector, save_detector

OUTPUT_SCHEMA = Schema([ColSpec("double", "score"), ColSpec("long", "flag")])
#: Requirements written into the model instead of MLflow inferring them (that would
#: reload every model in a subprocess). Serving runs in this project's environment.
REGISTERED_DESCRIPTION = (
    "A pqfl client's personalized anomaly detector. Input: a DataFrame of raw features (the "
    "dataset's columns). Output: score (higher = more anomalous) and flag (score >= the "
    "threshold chosen on the client's validation split)."
)
PIP_REQUIREMENTS = [f"mlflow=={mlflow.__version__}", "pqfl"]


@contextmanager
def _in_run(uri: str, run_id: str):
    """Make ``run_id`` of the store at ``uri`` MLflow's active run for the block, so that the
    fluent ``log_model`` (which takes no store or run) logs into that run's experiment and
    links the model to the run. The store is named through ``MLFLOW_TRACKING_URI``, MLflow's
    own setting, restored afterwards; leaving the block ends the run as FINISHED."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        with mlflow.start_run(run_id=run_id) as run:
            yield run
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def registered_name(experiment: str, method: str, client: str) -> str:
    """``{experiment}-{method}-{client}``; characters a model URI cannot hold become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{experiment}-{method}-{client}")


@lru_cache(maxsize=8)
def feature_columns(source: str, n_features: int) -> tuple[str, ...]:
    """The raw feature names of a dataset source: scikit-learn's ``feature_names``, a CSV's
    header without its label column, else ``x0 … x{d-1}`` (ODDS ``.mat`` files carry none)."""
    scheme, _, rest = source.partition(":")
    names: list[str] = []
    if scheme == "sklearn":
        from sklearn import datasets

        loader = getattr(datasets, f"load_{rest}", None)
        if loader is not None:
            names = [str(n) for n in loader().feature_names]
    elif scheme == "csv":
        path, _, frag = rest.partition("#")
        label = frag.removeprefix("label=")
        names = [str(c) for c in pd.read_csv(path, nrows=0).columns if c != label]
    if len(names) != n_features or len(set(names)) != n_features:
        names = [f"x{i}" for i in range(n_features)]
    return tuple(names)


class PersonalizedDetector(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: raw-feature DataFrame in, ``score`` and ``flag`` out."""

    def load_context(self, context):
        self.detector = load_detector(context.artifacts["detector"])
        self.columns = list(self.detector.feature_names_in_)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise MlflowException.invalid_parameter_value(
                f"input is missing feature column(s) {missing[:5]}; send all {len(self.columns)} raw features"
            )
        scores = self.detector.decision_function(frame[self.columns].astype(np.float64))
        return pd.DataFrame({"score": scores, "flag": (scores >= self.detector.threshold_).astype(np.int64)})


def _register(name: str, model_uri: str, tags: dict) -> str:
    """A new version of ``name`` from the logged model at ``model_uri``, by
    ``mlflow.register_model`` (which also links the version on the logged model: the Models
    tab's "Registered models" column). Its event lines ("Successfully registered …") are
    switched off for the call: the CLI keeps stderr for its own lines."""
    was_on = MLFLOW_LOGGING_STREAM.enabled
    disable_logging()
    try:
        version = mlflow.register_model(model_uri, name, await_registration_for=0, tags=tags)
    finally:
        if was_on:
            enable_logging()
    if str(version.version) == "1":
        MlflowClient().update_registered_model(name, description=REGISTERED_DESCRIPTION)
    return str(version.version)


def log_detectors(
    client: MlflowClient,
    *,
    experiment: str,
    method: str,
    source: str,
    run_ids: dict[str, str],
    detectors: dict[str, QuantumDetector],
    step: int,
) -> dict[str, str]:
    """Log each client's fitted detector as a pyfunc model in its client run (so in that
    run's experiment, its final-round metrics linked at ``step``), register it as
    :func:`registered_name`, and return ``{client: "models:/name/version"}``. The client
    runs end FINISHED."""
    uris = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
        for name, det in detectors.items():
            columns = feature_names(det, feature_columns(source, det.n_features_in_))
            folder = save_detector(det, Path(tmp) / f"client{len(uris)}", columns=columns, client=name)
            with _in_run(client.tracking_uri, run_ids[name]):
                info = mlflow.pyfunc.log_model(
                    name=f"{method}-{name}",  # the Models tab lists models by this name
                    python_model=str(Path(__file__).with_name("detector_pyfunc.py")),
                    artifacts={"detector": str(folder)},
                    signature=ModelSignature(
                        inputs=Schema([ColSpec("double", c) for c in columns]), outputs=OUTPUT_SCHEMA
                    ),
                    # No input_example: MLflow would reload and run every model to validate it
                    # (about a third of the logging cost); the signature names the columns.
                    pip_requirements=PIP_REQUIREMENTS,
                    step=step,
                    tags={"pqfl.method": method, "pqfl.client": name},
                )
                registered = registered_name(experiment, method, name)
                tags = {"pqfl.method": method, "pqfl.client": name, "threshold": f"{det.threshold_:.6g}"}
                version = _register(registered, info.model_uri, tags)
            uris[name] = f"models:/{registered}/{version}"
    return uris
