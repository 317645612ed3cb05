"""Round checkpoints for crash-resume, kept beside the MLflow store.

Layout (``ROOT`` is ``checkpoints/`` next to a SQLite store's database, or
``PQFL_CHECKPOINT_DIR`` when set; it must be set for a non-SQLite store)::

    ROOT/<invocation>/invocation.json   the config and method list of one `pqfl run`
    ROOT/<invocation>/<method>.ckpt     that method's last complete round

``<invocation>`` is the Prefect flow-run id (a UUID) of the first ``pqfl-train`` run;
every MLflow parent run of that invocation carries it in the tag ``pqfl.invocation`` and
its own checkpoint path in ``pqfl.checkpoint``, so any parent run id leads back to the
whole invocation. The id is checked to be a UUID before it is joined into a path, and a
resume reads checkpoints only under this store's ``ROOT``, whatever the tags say.

A checkpoint is data, never code: an ``.npz`` archive read with ``allow_pickle=False``,
holding the arrays of the library's :class:`~pqfl.federated.rounds.FederationState`
(``pqfl.federated.snapshot``) and, as one more array of bytes, a JSON header with the
rest: the format and pqfl version, the round history and last round's report, retry and
drop counts, the elapsed time and the MLflow run ids. Loading checks every field; a
damaged, foreign or older file is refused with one line (exit 2) and nothing of it runs.

Not stored, because nothing of it survives a round: the local optimiser state
(re-initialised from the round's start parameters every round) and any random generator
(every draw is derived afresh from (seed, stream, client, round); the header says so,
with the seed). Files are written to a temporary name, flushed to disk, then renamed over
the old one (``os.replace``), so a crash leaves either the previous round's checkpoint or
the new one, never a torn file.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import pqfl
from pqfl.errors import PQFLInputError
from pqfl.federated import snapshot
from pqfl.federated.rounds import FederationState
from pqfl.results import RoundSummary

CHECKPOINT_ENV = "PQFL_CHECKPOINT_DIR"
# 2: global_theta has a sharing-group axis; 3: the library's FederationState (pickled);
# 4: data only (npz + JSON header).
FORMAT = 4
HEADER = "header.json"
_INVOCATION = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_METHOD = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


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
    # MLflow metrics queued but maybe not sent when it was written ({run_id: [[key, value,
    # timestamp, step], ...]}, flows/tracking.MethodRun.unlogged); None in checkpoints
    # written before the queue, whose last round a resume logs again
    unlogged: dict | None = None
    format: int = FORMAT

    @property
    def round(self) -> int:
        return self.state.round

    @property
    def history(self) -> list[RoundSummary]:
        return self.state.history


def encode(ckpt: MethodCheckpoint) -> bytes:
    """A checkpoint as the bytes of an ``.npz`` archive: the state's arrays and a JSON header."""
    meta, arrays = snapshot.to_data(ckpt.state)
    header = {
        "format": FORMAT,
        "pqfl_version": pqfl.__version__,
        "method": ckpt.method,
        "state": meta,
        "elapsed_s": ckpt.elapsed_s,
        "parent_run_id": ckpt.parent_run_id,
        "client_run_ids": ckpt.client_run_ids,
        "finished": ckpt.finished,
        "result": ckpt.result,
        "rng": ckpt.rng,
        "optimizer": ckpt.optimizer,
        "flow_runs": ckpt.flow_runs,
        "unlogged": ckpt.unlogged,
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{HEADER: np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)})
    return buffer.getvalue()


def decode(data: bytes, where: str) -> MethodCheckpoint:
    """The checkpoint in ``data`` (the bytes :func:`encode` wrote); PQFLInputError for anything else."""
    refuse = f"--resume: {where}"
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        header = json.loads(arrays.pop(HEADER).tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError):
        raise PQFLInputError(
            f"{refuse} is not a pqfl checkpoint (damaged, foreign, or a pickle of pqfl before format {FORMAT}); "
            "start a new run"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else None
        raise PQFLInputError(
            f"{refuse} was written by another pqfl version (format {got!r}, this pqfl reads {FORMAT}); start a new run"
        )
    try:
        ids = header["client_run_ids"]
        if not (isinstance(ids, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in ids.items())):
            raise ValueError("client_run_ids: expected a mapping of client names to run ids")
        for key, kind in (
            ("method", str),
            ("parent_run_id", str),
            ("finished", bool),
            ("rng", dict),
            ("optimizer", dict),
            ("flow_runs", dict),
        ):
            if not isinstance(header[key], kind):
                raise ValueError(f"{key}: expected {kind.__name__}")
        if not isinstance(header["elapsed_s"], (int, float)) or not (
            header["result"] is None or isinstance(header["result"], dict)
        ):
            raise ValueError("elapsed_s or result: wrong type")
        unlogged = header.get("unlogged")
        if unlogged is not None and not _metric_rows(unlogged):
            raise ValueError("unlogged: expected {run_id: [[key, value, timestamp, step], ...]}")
        state = snapshot.from_data(header["state"], arrays)
    except (KeyError, ValueError, TypeError) as err:
        raise PQFLInputError(f"{refuse} is damaged ({str(err)[:200]}); start a new run") from None
    return MethodCheckpoint(
        method=header["method"],
        state=state,
        elapsed_s=float(header["elapsed_s"]),
        parent_run_id=header["parent_run_id"],
        client_run_ids=ids,
        finished=header["finished"],
        result=header["result"],
        rng=header["rng"],
        optimizer=header["optimizer"],
        flow_runs=header["flow_runs"],
        unlogged=unlogged,
    )


def _metric_rows(unlogged: object) -> bool:
    """Whether ``unlogged`` has the shape :attr:`MethodCheckpoint.unlogged` describes."""
    return isinstance(unlogged, dict) and all(
        isinstance(run_id, str)
        and isinstance(rows, list)
        and all(
            isinstance(r, list)
            and len(r) == 4
            and isinstance(r[0], str)
            and isinstance(r[1], (int, float))
            and all(isinstance(x, int) and not isinstance(x, bool) for x in r[2:])
            for r in rows
        )
        for run_id, rows in unlogged.items()
    )


def read_checkpoint(path: str | Path) -> MethodCheckpoint:
    """The checkpoint in the file ``path``."""
    return decode(Path(path).read_bytes(), str(path))


def check_invocation(invocation: object) -> str:
    """``invocation`` if it is a Prefect flow-run id (a UUID), the only thing joined into a checkpoint path."""
    if not isinstance(invocation, str) or not _INVOCATION.fullmatch(invocation):
        raise PQFLInputError(
            f"--resume: the invocation id {str(invocation)[:80]!r} (tag pqfl.invocation) is not a Prefect flow-run id; "
            "the run's tags were changed: start a new run"
        )
    return invocation


class CheckpointStore:
    """The checkpoint folder of one ``pqfl run`` invocation, under ``root``."""

    def __init__(self, root: Path, invocation: str):
        self.invocation = check_invocation(invocation)
        self.root = Path(root).resolve()
        self.folder = self.root / self.invocation

    @property
    def manifest_path(self) -> Path:
        return self.folder / "invocation.json"

    def path(self, method: str) -> Path:
        if not _METHOD.fullmatch(method):
            raise PQFLInputError(f"--resume: method name {method[:80]!r} cannot name a checkpoint file")
        return self.folder / f"{method}.ckpt"

    def write_manifest(self, config: dict, methods: list[str], experiment: str) -> None:
        body = {"invocation": self.invocation, "experiment": experiment, "methods": methods, "config": config}
        atomic_write(self.manifest_path, json.dumps(body, indent=2).encode())

    def read_manifest(self) -> dict:
        """The invocation's config and methods, checked to be what :meth:`write_manifest` wrote."""
        try:
            body = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise PQFLInputError(
                f"--resume: checkpoint folder {self.folder} has no invocation.json; it was moved or deleted, "
                "so this run cannot be resumed (start a new `pqfl run`)"
            ) from None
        except (OSError, ValueError) as err:
            raise PQFLInputError(
                f"--resume: {self.manifest_path} is not readable JSON ({type(err).__name__}); start a new run"
            ) from None
        ok = (
            isinstance(body, dict)
            and body.get("invocation") == self.invocation
            and isinstance(body.get("config"), dict)
            and isinstance(body.get("methods"), list)
            and all(isinstance(m, str) for m in body["methods"])
        )
        if not ok:
            raise PQFLInputError(f"--resume: {self.manifest_path} is not this invocation's manifest; start a new run")
        return body

    def save(self, ckpt: MethodCheckpoint) -> None:
        atomic_write(self.path(ckpt.method), encode(ckpt))

    def load(self, method: str) -> MethodCheckpoint | None:
        path = self.path(method)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        ckpt = decode(data, str(path))
        if ckpt.method != method:
            raise PQFLInputError(f"--resume: {path} holds method {ckpt.method!r}, not {method!r}; start a new run")
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
    store = CheckpointStore(checkpoint_root(uri), tags["pqfl.invocation"])
    written = Path(tags["pqfl.checkpoint"]).parent.parent
    if written.resolve() != store.root:
        raise PQFLInputError(
            f"--resume: the run's checkpoints were written under {str(written)[:200]}, not under this store's checkpoint "
            f"root {store.root}; set {CHECKPOINT_ENV} to that folder if you trust it"
        )
    manifest = store.read_manifest()
    cfg = parse_run_config(manifest["config"], origin=str(store.manifest_path))
    for method in manifest["methods"]:  # a damaged checkpoint is refused now, before any run is touched
        store.load(method)
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # keep writing to the store the run was found in
        cfg = cfg.with_overrides({"tracking.uri": uri})
    return store, cfg
