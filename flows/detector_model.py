"""Each client's personalized detector as an MLflow pyfunc model (DESIGN §2: "final
personalized detectors as MLflow pyfunc models").

``pqfl/`` never imports MLflow, so the packing lives here. A client's fitted state — its
feature map, circuit profile, parameters (θ block, head, one-class centre) and the threshold
chosen on its validation split — is written as two plain files (``detector.json`` and
``detector.npz``, no pickled classes), and :class:`PersonalizedDetector` rebuilds pqfl's
objects from them and scores with pqfl's own :func:`~pqfl.federated.local_update.predict_scores`.

Input: a pandas DataFrame of raw features with the dataset's columns (preprocessing is
inside the model). Output: a DataFrame with ``score`` (higher = more anomalous) and
``flag`` (1 when ``score`` ≥ the validation threshold, as in the training metrics).

Registered model names are ``{experiment}-{method}-{client}`` (see :func:`registered_name`);
every run adds a new version to each. Finite-shot clients sample their ⟨Z⟩ estimates with a
fixed seed per client, so the same request always gets the same answer.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
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

from pqfl.config import ClientProfile
from pqfl.data.preprocessing import FeatureMap
from pqfl.federated.client import combine_scores
from pqfl.federated.local_update import predict_scores
from pqfl.quantum.spec import CircuitSpec

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


@dataclass
class Detector:
    """A client's fitted detector on raw features; scoring is pqfl's ``predict_scores``."""

    columns: list[str]
    feature_map: FeatureMap
    spec: CircuitSpec
    objective: str
    simulator: str
    shots: int | None
    params: dict
    center: np.ndarray | None
    threshold: float
    seed: int
    stream: tuple
    restarts: list[tuple[dict, np.ndarray | None]] = field(default_factory=list)  # (params, center) of restarts 1..R−1

    def decision_function(self, X) -> np.ndarray:
        """Anomaly scores (higher = more anomalous) for raw feature rows in ``columns`` order;
        with restarts, their ensemble score (``pqfl.federated.client.combine_scores``)."""
        Z = self.feature_map.transform(np.asarray(X, dtype=np.float64))
        members = [(self.params, self.center, self.stream)]
        members += [(params, center, (*self.stream, "replica", r)) for r, (params, center) in enumerate(self.restarts, 1)]
        scores = [
            predict_scores(self.spec, objective=self.objective, simulator=self.simulator, shots=self.shots, params=params,
                           center=center, X=Z, seed=self.seed, stream=stream)
            for params, center, stream in members
        ]
        return combine_scores(scores, self.objective)

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) >= self.threshold).astype(np.int64)

    @classmethod
    def load(cls, folder: str | Path) -> "Detector":
        folder = Path(folder)
        meta = json.loads((folder / "detector.json").read_text())
        arrays = np.load(folder / "detector.npz")
        optional = lambda key: arrays[key] if key in arrays.files else None  # noqa: E731
        profile = ClientProfile.model_validate(meta["profile"])
        return cls(
            columns=meta["columns"],
            feature_map=FeatureMap(
                meta["encoding"], meta["out_dim"], arrays["mean"], arrays["scale"], optional("components"), optional("whiten"),
                None if optional("norm_anchor") is None else float(optional("norm_anchor")),
                bool(meta.get("residual", False)),
            ),
            spec=CircuitSpec.from_profile(profile),
            objective=meta["objective"],
            simulator=meta["simulator"],
            shots=profile.shots,
            params={"theta": arrays["theta"], "w": arrays["w"], "b": arrays["b"]},
            center=optional("center"),
            threshold=float(meta["threshold"]),
            seed=int(meta["seed"]),
            stream=tuple(meta["stream"]),
            restarts=[
                ({"theta": arrays[f"theta@{r}"], "w": arrays[f"w@{r}"], "b": arrays[f"b@{r}"]}, optional(f"center@{r}"))
                for r in range(1, int(meta.get("restarts", 1)))
            ],
        )


def serve_stream(client_index: int) -> tuple:
    """The random stream of a served detector's shot sampling (fixed per client)."""
    return ("serve", int(client_index))


def write_detector(
    folder: Path, *, columns, setup, state, theta, threshold: float, objective: str, simulator: str, seed: int, restarts=()
) -> Path:
    """Write a client's fitted state as ``detector.json`` + ``detector.npz`` into ``folder``;
    ``restarts``: the (state, θ) of its further restarts (``federation.restarts``), stored
    as ``theta@r``, ``w@r``, ``b@r`` (and ``center@r``)."""
    folder.mkdir(parents=True, exist_ok=True)
    fmap = setup.feature_map
    meta = {
        "client": setup.name,
        "columns": list(columns),
        "profile": setup.profile.model_dump(mode="json"),
        "encoding": fmap.encoding,
        "out_dim": int(fmap.out_dim),
        "residual": bool(fmap.residual),
        "objective": objective,
        "simulator": simulator,
        "threshold": float(threshold),
        "seed": int(seed),
        "stream": list(serve_stream(setup.index)),
        "restarts": 1 + len(restarts),
    }
    (folder / "detector.json").write_text(json.dumps(meta, indent=2))
    arrays = {"theta": theta, "w": state.w, "b": np.asarray(state.b), "mean": fmap.mean, "scale": fmap.scale}
    optional = {"components": fmap.components, "whiten": fmap.whiten, "norm_anchor": fmap.norm_anchor, "center": state.center}
    arrays.update({k: v for k, v in optional.items() if v is not None})
    for r, (st, th) in enumerate(restarts, 1):
        arrays.update({f"theta@{r}": th, f"w@{r}": st.w, f"b@{r}": np.asarray(st.b)})
        if st.center is not None:
            arrays[f"center@{r}"] = st.center
    np.savez(folder / "detector.npz", **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
    return folder


class PersonalizedDetector(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: raw-feature DataFrame in, ``score`` and ``flag`` out."""

    def load_context(self, context):
        self.detector = Detector.load(context.artifacts["detector"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        missing = [c for c in self.detector.columns if c not in frame.columns]
        if missing:
            raise MlflowException.invalid_parameter_value(
                f"input is missing feature column(s) {missing[:5]}; send all {len(self.detector.columns)} raw features"
            )
        X = frame[self.detector.columns].to_numpy(dtype=np.float64)
        scores = self.detector.decision_function(X)
        return pd.DataFrame({"score": scores, "flag": (scores >= self.detector.threshold).astype(np.int64)})


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
    setups,
    states,
    thetas,
    thresholds,
    objective: str,
    simulator: str,
    seed: int,
    step: int,
) -> dict[str, str]:
    """Log each client's detector as a pyfunc model in its client run (its final-round
    metrics linked at ``step``), register it as :func:`registered_name`, and return
    ``{client: "models:/name/version"}``. ``states`` and ``thetas`` hold, per client, one
    entry per restart."""
    uris = {}
    with tempfile.TemporaryDirectory() as tmp, _fluent_tracking_uri(client.tracking_uri), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
        for setup, state, theta, threshold in zip(setups, states, thetas, thresholds):
            fmap = setup.feature_map
            columns = feature_columns(source, len(fmap.mean))
            folder = write_detector(
                Path(tmp) / setup.name,
                columns=columns,
                setup=setup,
                state=state[0],
                theta=theta[0],
                restarts=list(zip(state[1:], theta[1:])),
                threshold=threshold,
                objective=objective,
                simulator=simulator,
                seed=seed,
            )
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
                run_id=run_ids[setup.name],
                step=step,
                tags={"pqfl.method": method, "pqfl.client": setup.name},
            )
            name = registered_name(experiment, method, setup.name)
            tags = {"pqfl.method": method, "pqfl.client": setup.name, "threshold": f"{threshold:.6g}"}
            version = _register(client, name, info.model_id, run_ids[setup.name], tags)
            uris[setup.name] = f"models:/{name}/{version}"
    return uris
