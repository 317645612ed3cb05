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
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as _tracking_utils
from mlflow.types import ColSpec, Schema

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
def _fluent_tracking_uri(uri: str):
    """Point MLflow's fluent API (``Model.log`` and ``register_model`` have no URI argument)
    at ``uri`` for the block, then restore both the global URI and ``MLFLOW_TRACKING_URI``
    exactly: ``mlflow.set_tracking_uri(None)`` would unset the variable the caller set."""
    previous, previous_env = _tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


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


def _register(client: MlflowClient, name: str, model_id: str, run_id: str, tags: dict) -> str:
    """A new version of ``name`` (created on first use) from a logged model; through the client,
    which, unlike ``mlflow.register_model``, prints nothing."""
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name, description=REGISTERED_DESCRIPTION)
    version = client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id, await_creation_for=0
    )
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
    """Log each client's fitted detector as a pyfunc model in its client run (its final-round
    metrics linked at ``step``), register it as :func:`registered_name`, and return
    ``{client: "models:/name/version"}``."""
    uris = {}
    with tempfile.TemporaryDirectory() as tmp, _fluent_tracking_uri(client.tracking_uri), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
        for name, det in detectors.items():
            columns = feature_names(det, feature_columns(source, det.n_features_in_))
            folder = save_detector(det, Path(tmp) / f"client{len(uris)}", columns=columns, client=name)
            info = Model.log(
                artifact_path=None,
                name="detector",
                flavor=mlflow.pyfunc,
                python_model=str(Path(__file__).with_name("detector_pyfunc.py")),
                artifacts={"detector": str(folder)},
                signature=ModelSignature(inputs=Schema([ColSpec("double", c) for c in columns]), outputs=OUTPUT_SCHEMA),
                # No input_example: MLflow would reload and run every model to validate it
                # (about a third of the logging cost); the signature names the columns.
                pip_requirements=PIP_REQUIREMENTS,
                run_id=run_ids[name],
                step=step,
                tags={"pqfl.method": method, "pqfl.client": name},
            )
            registered = registered_name(experiment, method, name)
            tags = {"pqfl.method": method, "pqfl.client": name, "threshold": f"{det.threshold_:.6g}"}
            version = _register(client, registered, info.model_id, run_ids[name], tags)
            uris[name] = f"models:/{registered}/{version}"
    return uris
