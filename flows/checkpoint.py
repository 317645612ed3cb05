"""Round checkpoints for crash-resume, kept beside the MLflow store.

Layout (``ROOT`` is ``checkpoints/`` next to a SQLite store's database, or
``PQFL_CHECKPOINT_DIR`` when set; it must be set for a non-SQLite store)::

    ROOT/<invocation>/invocation.json   the config and method list of one `pqfl run`
    ROOT/<invocation>/<method>.ckpt     that method's last complete round (pickle)

``<invocation>`` is the Prefect flow-run id of the first ``pqfl-train`` run; every MLflow
parent run of that invocation carries it in the tag ``pqfl.invocation`` and its own
checkpoint path in ``pqfl.checkpoint``, so any parent run id leads back to the whole
invocation.

What a checkpoint holds is the library's :class:`~pqfl.federated.rounds.FederationState`
(everything that carries over from one round to the next: the global tensors, every
trainer's state — quantum block v_n, head, one-class centre — the round history and the
last round's report, retry and drop counts) plus the elapsed time and the MLflow run ids. Not stored, because nothing of it survives a round: the local
optimiser state (re-initialised from the round's start parameters every round) and any
random generator (every draw is derived afresh from (seed, stream, client, round); the
record below says so, with the seed). Files are written to a temporary name, flushed to
disk, then renamed over the old one (``os.replace``), so a crash leaves either the
previous round's checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pqfl.errors import PQFLInputError
from pqfl.federated.rounds import FederationState
from pqfl.results import RoundSummary

CHECKPOINT_ENV = "PQFL_CHECKPOINT_DIR"
FORMAT = 3  # 2: global_theta has a leading sharing-group axis; 3: the library's FederationState


def checkpoint_root(uri: str) -> Path:
    """Where checkpoints go for the MLflow store at ``uri``."""
    if os.environ.get(CHECKPOINT_ENV):
        return Path(os.environ[CHECKPOINT_ENV]).resolve()
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / "checkpoints"
    raise PQFLInputError(
        f"{CHECKPOINT_ENV}: the MLflow store {uri} is not a local SQLite file, so there is no folder beside it "
        f"for round checkpoints; set {CHECKPOINT_ENV} to a local folder"
    )


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


@dataclass
class MethodCheckpoint:
    """One method's state after its last complete round (round 0 = just started)."""

    method: str
    state: FederationState
    elapsed_s: float
    parent_run_id: str
    client_run_ids: dict[str, str]
    finished: bool = False
    result: dict | None = None  # the method's return value, once finished
    rng: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    flow_runs: dict = field(default_factory=dict)  # Prefect ids of the pqfl-train / pqfl-method runs that wrote it
    format: int = FORMAT

    @property
    def round(self) -> int:
        return self.state.round

    @property
    def history(self) -> list[RoundSummary]:
        return self.state.history


class CheckpointStore:
    """The checkpoint folder of one ``pqfl run`` invocation."""

    def __init__(self, root: Path, invocation: str):
        self.invocation = invocation
        self.folder = Path(root) / invocation

    @property
    def manifest_path(self) -> Path:
        return self.folder / "invocation.json"

    def path(self, method: str) -> Path:
        return self.folder / f"{method}.ckpt"

    def write_manifest(self, config: dict, methods: list[str], experiment: str) -> None:
        body = {"invocation": self.invocation, "experiment": experiment, "methods": methods, "config": config}
        atomic_write(self.manifest_path, json.dumps(body, indent=2).encode())

    def read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise PQFLInputError(
                f"--resume: checkpoint folder {self.folder} has no invocation.json; it was moved or deleted, "
                "so this run cannot be resumed (start a new `pqfl run`)"
            ) from None

    def save(self, ckpt: MethodCheckpoint) -> None:
        atomic_write(self.path(ckpt.method), pickle.dumps(ckpt, protocol=pickle.HIGHEST_PROTOCOL))

    def load(self, method: str) -> MethodCheckpoint | None:
        try:
            data = self.path(method).read_bytes()
        except FileNotFoundError:
            return None
        ckpt = pickle.loads(data)
        if getattr(ckpt, "format", None) != FORMAT:
            raise PQFLInputError(f"--resume: {self.path(method)} was written by another pqfl version; start a new run")
        return ckpt


def resume_target(run_id: str, config_path: str | None = None):
    """The checkpoint store and stored config of the invocation that MLflow run ``run_id`` belongs to.

    ``run_id`` may be any method's parent run id (or one of its client runs). The store is
    found through ``MLFLOW_TRACKING_URI``, else the ``tracking.uri`` of ``config_path``
    (the embedded default when None), as for ``pqfl compare``.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from flows.tracking import tracking_uri
    from tasks.settings import load_run_config, parse_run_config

    uri = tracking_uri(load_run_config(config_path))
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise PQFLInputError(
            f"--resume: no MLflow store at {uri}; run from the folder of the first run or set MLFLOW_TRACKING_URI"
        )
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
        if run.data.tags.get("pqfl.role") == "client":
            run = client.get_run(run.data.tags["mlflow.parentRunId"])
    except MlflowException:
        raise PQFLInputError(
            f"--resume: no MLflow run {run_id!r} in {uri}; pass a parent run id from `pqfl run` "
            "(mlflow_parent_run_ids in its --json output, or the MLflow UI)"
        ) from None
    tags = run.data.tags
    if "pqfl.invocation" not in tags or "pqfl.checkpoint" not in tags:
        raise PQFLInputError(
            f"--resume: MLflow run {run_id} has no pqfl checkpoint tags; only runs started by `pqfl run` can be resumed"
        )
    store = CheckpointStore(Path(tags["pqfl.checkpoint"]).parent.parent, tags["pqfl.invocation"])
    manifest = store.read_manifest()
    cfg = parse_run_config(manifest["config"], origin=str(store.manifest_path))
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # keep writing to the store the run was found in
        cfg = cfg.with_overrides({"tracking.uri": uri})
    return store, cfg
