"""MLflow logging for a training flow (docs/mlflow.md, store layout). Only the flow process calls this.

Layout: one experiment per config; one parent run per method (flattened config as
params, Prefect flow-run id and git commit as tags, per-round mean/worst metrics with
step = round); one nested run per client (hardware profile as params, per-round
metrics, circuit drawing and OpenQASM); artifacts: config, results CSV, plots.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from pqfl.errors import PQFLInputError
from pqfl.results import ClientEvaluation, RoundReport, RoundSummary
from tasks.settings import RunConfig

if TYPE_CHECKING:
    from pqfl.detector import QuantumDetector

PARENT_TAG = "pqfl.role"

# MLflow metric names, grouped by prefix so the chart view shows one section per group:
# test/ and val/ (the round's evaluation), train/, fl/ (the federation's bookkeeping),
# time/, and hw/ (flows/device_evaluation.py). Stores written before 0.2 use the plain
# names on the left; `pqfl compare` reads both.
PARENT_METRICS = {
    "mean_auroc": "test/mean_auroc",
    "mean_aupr": "test/mean_aupr",
    "mean_false_error": "test/mean_false_error",
    "mean_missing_error": "test/mean_missing_error",
    "mean_f1": "test/mean_f1",
    "worst_auroc": "test/worst_auroc",
    "mean_val_auroc": "val/mean_auroc",
    "round_wall_s": "time/round_s",
    "round_train_s": "time/round_train_s",
    "round_evaluate_s": "time/round_evaluate_s",
    "clients_in_round": "fl/clients_in_round",
    "clients_dropped": "fl/clients_dropped",
    "retries": "fl/retries",
    "wall_s": "time/wall_s",
    "retries_total": "fl/retries_total",
    # compiled functions this method prepared in the flow process (pqfl/compile_cache.py):
    # traced and stored, or loaded from the cache folder, and the seconds spent on both
    # (summed over the client threads that prepared them at once)
    "compile_traced": "time/compile_traced",
    "compile_loaded": "time/compile_loaded",
    "compile_seconds": "time/compile_s",
    # with federation.attack: the mean AUROC over honest clients and over the attackers
    "honest_mean_auroc": "test/honest_mean_auroc",
    "attackers_mean_auroc": "test/attackers_mean_auroc",
    # with federation.privacy: ε of the (ε, δ)-DP spent up to the round (dp-accounting's RDP accountant)
    "epsilon": "privacy/epsilon",
}
CLIENT_METRICS = {
    "auroc": "test/auroc",
    "aupr": "test/aupr",
    "false_error": "test/false_error",
    "missing_error": "test/missing_error",
    "f1": "test/f1",
    "val_auroc": "val/auroc",
    "threshold": "val/threshold",
    "train_loss": "train/loss",
    "retries": "fl/retries",
    "dropped": "fl/dropped",
}
ROUND_METRICS = tuple(PARENT_METRICS[k] for k in RoundSummary.__dataclass_fields__ if k != "round")


def tracking_uri(cfg: RunConfig) -> str:
    """``MLFLOW_TRACKING_URI`` when set (as MLflow users expect), else the configured store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store (None for any other store)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def writable_folder(folder: Path) -> bool:
    """Whether files can be created in ``folder``, or in the nearest existing folder above it."""
    folder = folder.resolve()
    while not folder.exists():
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def check_store(uri: str) -> None:
    """Refuse, before anything starts, a store this run could not use: a SQLite path that is a
    folder, read-only, in a folder that cannot be written, corrupt, or a SQLite database
    that is not an MLflow store (MLflow would turn it into one); an HTTP server that does not
    answer within 5 s. Raises PQFLInputError naming the store and the fix."""
    where = f"MLflow store {uri[:200]}"
    path = sqlite_path(uri)
    if path is None:
        if uri.startswith(("http://", "https://")):
            try:
                urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
            except (OSError, ValueError) as err:
                raise PQFLInputError(
                    f"{where} does not answer ({str(getattr(err, 'reason', err))[:120]}); start the tracking server "
                    "or point MLFLOW_TRACKING_URI (or tracking.uri) at one that runs"
                ) from None
        return
    if path.is_dir():
        raise PQFLInputError(f"{where}: {path} is a folder; point the URI at a database file inside it")
    if not writable_folder(path.parent):
        raise PQFLInputError(f"{where}: the folder of {path} cannot be written; choose a writable location")
    if not path.exists() or path.stat().st_size == 0:
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise PQFLInputError(f"{where}: {path} is read-only; make it writable or use another store")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        raise PQFLInputError(
            f"{where}: {path} is not a readable SQLite database ({err}); restore it or use another store"
        ) from None
    if not {"experiments", "runs", "alembic_version"} <= tables:
        raise PQFLInputError(
            f"{where}: {path} is a SQLite database but not an MLflow store; refusing to add MLflow's tables to it: "
            "point the URI at a new file or an MLflow store"
        )


def open_store(uri: str) -> MlflowClient:
    """A client of the store at ``uri``. A SQLite store's schema is created (or migrated) under
    a file lock, so runs started at once on a new store do not race in MLflow's table creation.
    A new SQLite store starts as a copy of :func:`empty_store`."""
    path = sqlite_path(uri)
    if path is None:
        return MlflowClient(tracking_uri=uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists() or path.stat().st_size == 0:
            _start_from_empty_store(path)
        client = MlflowClient(tracking_uri=uri)  # creating the client creates or migrates the schema
        client.search_experiments(max_results=1)
    return client


def empty_store() -> Path:
    """A SQLite database holding MLflow's schema at the installed revision and nothing else,
    made once by MLflow's own table creation and migrations in pqfl's cache folder. MLflow
    takes about a second to create its 60-odd tables and run its migrations on every new
    store; a copy takes milliseconds. It has no experiment: MLflow adds its ``Default``
    experiment, with the new store's artifact root, when a client first opens the copy."""
    from mlflow.store.db.utils import _get_latest_schema_revision, _initialize_tables, create_sqlalchemy_engine

    from pqfl.compile_cache import cache_folder

    template = cache_folder() / "mlflow" / f"empty-{_get_latest_schema_revision()}.db"
    if not template.exists():  # processes making it at once each write their own file; the last rename wins
        template.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{template.name}.", suffix=".tmp", dir=template.parent)
        os.close(fd)
        try:
            engine = create_sqlalchemy_engine(f"sqlite:///{tmp}")
            try:
                _initialize_tables(engine)
            finally:
                engine.dispose()
            os.replace(tmp, template)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return template


def _start_from_empty_store(path: Path) -> None:
    """Write a copy of :func:`empty_store` to the new store ``path`` (held under its lock).
    When the copy cannot be made (a read-only cache folder, say), MLflow creates the store."""
    from flows.runners import copy_database

    try:
        copy_database(empty_store(), path)
    except Exception:  # noqa: BLE001 — MLflow creates the schema itself, as without the copy
        path.unlink(missing_ok=True)


def run_page(client: MlflowClient, run_id: str) -> str:
    """The MLflow UI page of a run: on the tracking server for an HTTP store, else on the
    local UI that ``pqfl ui`` serves for a SQLite store."""
    experiment = client.get_run(run_id).info.experiment_id
    base = client.tracking_uri if client.tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def publish_invocation(uri: str, results: dict[str, dict], title: str) -> str:
    """One comparison figure of every method of an invocation (test AUROC per method × client,
    mean-client AUROC per round), logged to each method's parent run as
    ``plots/comparison.png``; returns the results as a markdown table linking those runs."""
    client = MlflowClient(tracking_uri=uri)
    lines = ["| method | mean AUROC | mean AUPR | worst AUROC | mean false err | mean missing err | MLflow run |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        # Rendered once, the same file in every run: log_figure draws it again for each run,
        # which took 9.7 s of the fifteen-method default's publish against 1.1 s now.
        from pqfl.plots import invocation_comparison_figure, plt

        png = Path(tmp) / "comparison.png"
        figure = invocation_comparison_figure(results, title)
        try:
            figure.savefig(png)
        finally:
            plt.close(figure)
        for method, r in results.items():
            run_id = r["mlflow_parent_run_id"]
            client.log_artifact(run_id, str(png), "plots")
            lines.append(f"| {method} | {r['mean_auroc']:.3f} | {r['mean_aupr']:.3f} | {r['worst_auroc']:.3f} | "
                         f"{r['mean_false_error']:.3f} | {r['mean_missing_error']:.3f} | "
                         f"[{run_id[:8]}]({run_page(client, run_id)}) |")  # fmt: skip
    return "\n".join([f"**{title}**", "", *lines, "", "MLflow links of a SQLite store open with `pqfl ui`."])


def _artifact_root(uri: str) -> str | None:
    """For a SQLite store, keep artifacts in an ``artifacts`` folder beside the database."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    return (db.parent.resolve() / "artifacts").as_uri()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _metrics(values: dict, names: dict[str, str], ts: int, step: int) -> list[Metric]:
    return [Metric(names.get(k, k), float(v), ts, step) for k, v in values.items()]


class MethodRun:
    """The MLflow runs of one method: a parent and one nested run per client.

    A round's metrics are queued (:meth:`queue_round`) and sent by :meth:`flush`, one
    ``log_batch`` per run for all the rounds queued: at most every ``every_s`` seconds
    (:meth:`flush_if_due`; 0 sends every round) and when the method ends. Each
    ``log_batch`` costs the SQLite store a run lookup, a latest-metrics update and two
    commits whatever it holds, so sending a few rounds at once costs what one round did.
    :attr:`unlogged` is the queue as plain data for the round's checkpoint, so that a
    resume sends what a crash left unsent (:meth:`requeue`)."""

    def __init__(self, client: MlflowClient, parent_id: str, client_run_ids: dict[str, str], every_s: float = 0.0):
        self.client = client
        self.parent_id = parent_id
        self.client_run_ids = client_run_ids
        self.every_s = every_s
        self.pending: dict[str, list[Metric]] = {}
        self.sent_at = time.monotonic()

    def has_step(self, run_id: str, key: str, step: int) -> bool:
        """Whether ``run_id`` already holds metric ``key`` at ``step`` (one batch is one transaction)."""
        return any(m.step == step for m in self.client.get_metric_history(run_id, key))

    def round_metrics(self, report: RoundReport) -> dict[str, list[Metric]]:
        """One round's metrics (step = round) per run id: the parent's summary and bookkeeping,
        each client's evaluation, loss and retries."""
        ts, step = int(time.time() * 1000), report.round
        extra = {
            "round_wall_s": report.wall_s,
            "round_train_s": report.train_s,
            "round_evaluate_s": report.evaluate_s,
            "clients_in_round": report.in_round,
            "clients_dropped": len(report.dropped),
            "retries": report.retries,
        }
        if report.attackers:
            extra["honest_mean_auroc"] = report.honest_summary.mean_auroc
            extra["attackers_mean_auroc"] = report.attacker_summary.mean_auroc
        if report.epsilon is not None:
            extra["epsilon"] = report.epsilon
        out = {self.parent_id: _metrics({**report.summary.metrics(), **extra}, PARENT_METRICS, ts, step)}
        for row in report.clients:
            ev = row.evaluation
            values = {**ev.metrics(), "val_auroc": ev.val_auroc, "threshold": ev.threshold}
            if row.loss is not None:
                values["train_loss"] = row.loss
            values.update(retries=row.retries, dropped=int(row.dropped))
            out[self.client_run_ids[row.client]] = _metrics(values, CLIENT_METRICS, ts, step)
        return out

    def queue_round(self, report: RoundReport) -> None:
        """Queue one round's metrics for the next :meth:`flush`."""
        for run_id, metrics in self.round_metrics(report).items():
            self.pending.setdefault(run_id, []).extend(metrics)

    @property
    def unlogged(self) -> dict[str, list[list]]:
        """The queued metrics as JSON-able data: ``{run_id: [[key, value, timestamp, step], ...]}``."""
        return {run_id: [[m.key, m.value, m.timestamp, m.step] for m in ms] for run_id, ms in self.pending.items()}

    def requeue(self, unlogged: dict[str, list[list]]) -> None:
        """Queue metrics a checkpoint recorded as possibly unsent (:attr:`unlogged`)."""
        for run_id, rows in unlogged.items():
            self.pending.setdefault(run_id, []).extend(Metric(k, float(v), int(ts), int(st)) for k, v, ts, st in rows)

    def flush(self, only_missing: bool = False) -> None:
        """Send the queued metrics, one ``log_batch`` per run. ``only_missing`` first drops each
        (metric, step) the run already holds: a resume sends again what its checkpoint
        recorded as unsent, and a crash may have come after part of it was sent."""
        for run_id, metrics in list(self.pending.items()):
            if only_missing:
                held = {
                    (key, m.step)
                    for key in {m.key for m in metrics}
                    for m in self.client.get_metric_history(run_id, key)
                }
                metrics = [m for m in metrics if (m.key, m.step) not in held]
            if metrics:
                self.client.log_batch(run_id, metrics=metrics)
            del self.pending[run_id]
        self.sent_at = time.monotonic()

    def flush_if_due(self) -> None:
        """:meth:`flush` when ``every_s`` has passed since the last one (always with ``every_s`` 0)."""
        if time.monotonic() - self.sent_at >= self.every_s:
            self.flush()

    def log_round(self, report: RoundReport, only_missing: bool = False) -> None:
        """Log one round now (step = round). ``only_missing`` skips what the runs already hold,
        so a resume can repeat the log of its last round without duplicates."""
        self.queue_round(report)
        self.flush(only_missing=only_missing)

    def log_final(self, values: dict, step: int, only_missing: bool = False) -> None:
        """The method's closing values (``wall_s``, ``retries_total``) at the last step."""
        ts = int(time.time() * 1000)
        if only_missing:
            values = {k: v for k, v in values.items() if not self.has_step(self.parent_id, PARENT_METRICS[k], step)}
        if values:
            self.client.log_batch(self.parent_id, metrics=_metrics(values, PARENT_METRICS, ts, step))

    def log_datasets(self, datas, source: str) -> None:
        """Each client's train, val and test splits as MLflow datasets of its run: name,
        digest, schema and row counts. MLflow stores no rows of them, so nothing of a
        client's data leaves its run but what a hash and the shapes say."""
        from mlflow.data import from_numpy
        from mlflow.entities import DatasetInput, InputTag

        for d in datas:
            inputs = []
            for split in ("train", "val", "test"):
                ds = from_numpy(getattr(d, f"X_{split}"), targets=getattr(d, f"y_{split}"), name=f"{d.name}-{split}")
                tags = [InputTag("mlflow.data.context", split), InputTag("pqfl.source", source[:250])]
                inputs.append(DatasetInput(ds._to_mlflow_entity(), tags))
            self.client.log_inputs(self.client_run_ids[d.name], datasets=inputs)

    def log_artifacts(
        self, cfg: RunConfig, method: str, history: list[RoundSummary], final: list[ClientEvaluation], setups, thetas
    ) -> None:
        """The config, the results table and the method's figures in the parent run; each
        client's circuit (drawing and OpenQASM) in its run."""
        from pqfl.plots import client_roc_pr_figure, method_convergence_figure, plt
        from pqfl.quantum.reference import draw_text, to_openqasm

        client, pid = self.client, self.parent_id
        client.log_dict(pid, cfg.model_dump(mode="json", by_alias=True), "config.yaml")
        table = pd.DataFrame([ev.row() for ev in final])
        table.insert(0, "method", method)
        client.log_text(pid, table.to_csv(index=False), "results.csv")
        client.log_table(pid, table, "results.json")  # shown as a table in the UI's artifact view
        for figure, name in ((method_convergence_figure(history, method), "convergence"),
                             (client_roc_pr_figure(final, setups, method), "roc_pr")):  # fmt: skip
            client.log_figure(pid, figure, f"plots/{name}.png")
            plt.close(figure)
        for setup, theta in zip(setups, thetas):
            run_id = self.client_run_ids[setup.name]
            # Drawn at the encoding of the federated mean, not at a client's row: no data row leaves in an artifact.
            sample = setup.feature_map.transform(setup.feature_map.mean[None, :])[0]
            client.log_text(run_id, draw_text(setup.spec, sample, theta) + "\n", "circuit/circuit.txt")
            client.log_text(run_id, to_openqasm(setup.spec, sample, theta), "circuit/circuit.qasm")

    def log_models(self, cfg: RunConfig, method: str, detectors: dict[str, QuantumDetector]) -> dict[str, str]:
        """Each client's final personalized detector as a pyfunc model in its client run,
        registered as ``{experiment}-{method}-{client}`` (flows/detector_model.py);
        nothing when the config's ``tracking.log_models`` is off."""
        if not cfg.tracking.log_models:
            return {}
        from flows.detector_model import log_detectors

        return log_detectors(
            self.client,
            experiment=cfg.experiment_name,
            method=method,
            source=cfg.dataset.source,
            run_ids=self.client_run_ids,
            detectors=detectors,
            step=cfg.federation.rounds,
        )

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        if reason:
            self.client.set_tag(self.parent_id, "pqfl.failure", reason[:4000])
        for run_id in self.client_run_ids.values():
            self.client.set_terminated(run_id, status)
        self.client.set_terminated(self.parent_id, status)


class Tracker:
    """Creates the experiment and the runs; one per flow run."""

    def __init__(self, cfg: RunConfig, flow_run_id: str | None):
        self.cfg = cfg
        self.uri = tracking_uri(cfg)
        root = _artifact_root(self.uri)
        self.client = open_store(self.uri)
        exp = self.client.get_experiment_by_name(cfg.experiment_name)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(cfg.experiment_name, artifact_location=root)
            except MlflowException as err:  # another run created it a moment ago
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                self.experiment_id = self.client.get_experiment_by_name(cfg.experiment_name).experiment_id
        else:
            self.experiment_id = exp.experiment_id
        self.flow_run_id = flow_run_id or "none"
        self.commit = git_commit()

    def fail_orphans(self, invocation: str, method: str, reason: str) -> list[str]:
        """Mark FAILED the unfinished runs of ``method`` in ``invocation`` that no checkpoint
        knows of (a crash between creating them and the first checkpoint); their ids."""
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`pqfl.invocation` = '{invocation}' and tags.`pqfl.method` = '{method}' and attributes.status != 'FINISHED'",
        )
        for parent in found:
            pid = parent.info.run_id
            children = self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{pid}'")
            MethodRun(self.client, pid, {c.info.run_id: c.info.run_id for c in children}).finish(
                "FAILED", reason=reason
            )
        return [r.info.run_id for r in found]

    def reopen_method(self, parent_id: str, client_run_ids: dict[str, str]) -> MethodRun:
        """Continue existing runs (crash-resume): mark them RUNNING again and note the resume."""
        for run_id in [parent_id, *client_run_ids.values()]:
            self.client.update_run(run_id, status="RUNNING")
        tags = self.client.get_run(parent_id).data.tags
        if "pqfl.failure" in tags:  # the reason the previous attempt stopped no longer holds
            self.client.delete_tag(parent_id, "pqfl.failure")
        resumes = int(tags.get("pqfl.resumes", "0")) + 1
        self.client.set_tag(parent_id, "pqfl.resumes", str(resumes))
        self.client.set_tag(parent_id, f"prefect.flow_run_id.resume{resumes}", self.flow_run_id)
        return MethodRun(self.client, parent_id, dict(client_run_ids), every_s=self.cfg.tracking.metrics_every_s)

    def start_method(self, method: str, setups, tags: dict[str, str] | None = None, description: str = "") -> MethodRun:
        """A parent run for ``method`` (the flattened config as params; the user, source and
        git tags MLflow's own context providers set; ``description`` as the run's note) and
        a nested run per client (its hardware profile as params)."""
        tags = resolve_tags({
            PARENT_TAG: "parent",
            "pqfl.method": method,
            "prefect.flow_run_id": self.flow_run_id,
            "git_commit": self.commit,
            "mlflow.source.git.commit": self.commit,
            MLFLOW_RUN_NOTE: description,
            **(tags or {}),
        })  # fmt: skip
        parent = self.client.create_run(self.experiment_id, run_name=method, tags=tags)
        pid = parent.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in sorted(self.cfg.flat().items())]
        params.append(Param("method", method))
        self.client.log_batch(pid, params=params)  # MLflow splits it into batches of its size
        client_ids = {}
        for setup in setups:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{method}/{setup.name}",
                tags=resolve_tags(
                    {
                        "mlflow.parentRunId": pid,
                        PARENT_TAG: "client",
                        "pqfl.method": method,
                        "pqfl.client": setup.name,
                        MLFLOW_RUN_NOTE: f"client {setup.name} of {method}: {setup.profile.qubits} qubits, "
                        f"{setup.profile.encoding} encoding, {setup.n_train} training rows",
                    }
                ),  # fmt: skip
            )
            profile = setup.profile.model_dump(mode="json")
            noise = profile.pop("noise")
            hw = {**profile, **{f"noise.{k}": v for k, v in noise.items()}, "n_train": setup.n_train}
            hw["normal_classes"] = setup.normal_classes
            self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in hw.items()])
            client_ids[setup.name] = run.info.run_id
        return MethodRun(self.client, pid, client_ids, every_s=self.cfg.tracking.metrics_every_s)
