"""``pqfl compare``: the method table of one ``pqfl run`` invocation, read back from MLflow.

An invocation is one ``pqfl run`` (with its ``--resume``s): every parent run it made carries
its id in the tag ``pqfl.invocation`` (older runs without it: ``prefect.flow_run_id``), the
method in ``pqfl.method`` and the config as params (``federation.methods`` lists the methods
it runs). It is *complete* when each of those methods has a FINISHED parent run. The table
never mixes invocations: it is the latest complete one, or the one ``--invocation`` names,
or the one of the parent or client run that ``--run`` names.

Metric names: parent runs log ``test/mean_auroc``, ``time/wall_s``, … (grouped by prefix in
MLflow's charts); stores written before log ``mean_auroc``, ``wall_s``, …. Each value is read
under its new name first, then under its old one, so both kinds of store work.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flows.tracking import PARENT_METRICS
from pqfl.config import METHODS, clip
from pqfl.errors import PQFLInputError
from tasks.settings import RunConfig

# The key in the table and in --json (as in `pqfl run --json`): (name logged now, name logged
# before 0.2, which was the key itself).
METRICS = {
    k: (PARENT_METRICS[k], k)
    for k in (
        "mean_auroc", "mean_aupr", "mean_false_error", "mean_missing_error", "mean_f1", "worst_auroc",
        "mean_val_auroc", "wall_s", "retries_total",
    )
}  # fmt: skip
INVOCATION_TAG = "pqfl.invocation"


def metric(run: Run, key: str) -> float | None:
    """The run's last value of ``key`` (a :data:`METRICS` key), new name first, else old name."""
    for name in METRICS[key]:
        if name in run.data.metrics:
            return run.data.metrics[name]
    return None


def _invocation_of(run: Run) -> str | None:
    tags = run.data.tags
    flow_run = tags.get("prefect.flow_run_id")
    return tags.get(INVOCATION_TAG) or (flow_run if flow_run not in (None, "", "none") else None)


def _listed_methods(run: Run) -> list[str]:
    """The methods the run's invocation was configured to run (param ``federation.methods``)."""
    try:
        listed = ast.literal_eval(run.data.params.get("federation.methods", ""))
    except (ValueError, SyntaxError):
        return []
    return [str(m) for m in listed] if isinstance(listed, (list, tuple)) else []


def _int_param(run: Run, name: str) -> int | str | None:
    value = run.data.params.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


@dataclass
class Invocation:
    """The parent runs of one invocation."""

    id: str
    runs: list[Run] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        listed: list[str] = []
        for run in self.runs:
            listed = listed or _listed_methods(run)
        found = [r.data.tags.get("pqfl.method") for r in self.runs]
        names = [*listed, *(m for m in found if m and m not in listed)]
        return sorted(dict.fromkeys(names), key=lambda m: (METHODS.index(m) if m in METHODS else len(METHODS), m))

    @property
    def finished(self) -> dict[str, Run]:
        """Each method's FINISHED parent run (the latest, should a method have been started again)."""
        out: dict[str, Run] = {}
        for run in sorted(self.runs, key=lambda r: r.info.start_time or 0):
            if run.info.status == "FINISHED":
                out[run.data.tags.get("pqfl.method")] = run
        return out

    @property
    def missing(self) -> dict[str, str]:
        """The methods without a FINISHED parent run: their latest status, or ``never started``."""
        finished, out = self.finished, {}
        for method in self.methods:
            if method not in finished:
                statuses = [r.info.status for r in self.runs if r.data.tags.get("pqfl.method") == method]
                out[method] = statuses[-1] if statuses else "never started"
        return out

    @property
    def complete(self) -> bool:
        return bool(self.methods) and not self.missing

    @property
    def started(self) -> int:
        return min((r.info.start_time or 0) for r in self.runs)

    @property
    def ended(self) -> int:
        """When its last method finished (0 while incomplete)."""
        return max((r.info.end_time or 0) for r in self.finished.values()) if self.complete else 0

    def describe_missing(self) -> str:
        return ", ".join(f"{m} {s}" for m, s in self.missing.items())

    def resume_hint(self) -> str:
        """How to complete it: ``pqfl run --resume`` with one of its parent run ids."""
        run = max(self.runs, key=lambda r: r.info.start_time or 0)
        return f"`pqfl run --resume {run.info.run_id}`"


def _parent_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], "tags.`pqfl.role` = 'parent'", max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def invocations(client: MlflowClient, experiment_id: str) -> list[Invocation]:
    """The experiment's invocations, oldest first."""
    found: dict[str, Invocation] = {}
    for run in _parent_runs(client, experiment_id):
        key = _invocation_of(run)
        if key is not None:
            found.setdefault(key, Invocation(key)).runs.append(run)
    return sorted(found.values(), key=lambda inv: inv.started)


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def _run_of(client: MlflowClient, run_id: str, uri: str) -> Run:
    """The parent run that ``run_id`` names (itself, or the parent of a client run)."""
    fix = "give a parent or client run id of `pqfl run` (mlflow_parent_run_ids in its --json output, or the MLflow UI)"
    try:
        run = client.get_run(run_id)
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent and run.data.tags.get("pqfl.role") != "parent":
            run = client.get_run(parent)
    except MlflowException:
        raise PQFLInputError(f"--run: no MLflow run {clip(run_id, 80)!r} in {clip(uri)}; {fix}") from None
    if run.data.tags.get("pqfl.role") != "parent" or _invocation_of(run) is None:
        raise PQFLInputError(f"--run: MLflow run {clip(run_id, 80)} is not a run of `pqfl run`; {fix}")
    return run


def compare(
    cfg: RunConfig,
    experiment: str | None = None,
    invocation: str | None = None,
    run_id: str | None = None,
    note=None,
) -> dict:
    """The comparison of one invocation: ``{"invocation", "experiment", "rounds", "seed",
    "dataset", "started", "methods": {method: {metric: value, ..., "run_id"}}}``, methods in
    table order. ``note(line)`` is told when newer invocations are left out as incomplete.
    Raises PQFLInputError naming the fix when there is nothing (complete) to compare."""
    from flows.tracking import check_store, tracking_uri

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise PQFLInputError(f"--experiment: no MLflow store at {uri}; run `pqfl run` first or set MLFLOW_TRACKING_URI")
    check_store(uri)
    client = MlflowClient(tracking_uri=uri)
    if run_id is not None:
        run = _run_of(client, run_id, uri)
        found = client.get_experiment(run.info.experiment_id)
        if experiment is not None and experiment != found.name:
            raise PQFLInputError(
                f"--run: run {clip(run_id, 80)} is in experiment {found.name!r}, not {clip(experiment)!r}; "
                "drop --experiment"
            )
        invocation = _invocation_of(run)
    else:
        name = experiment or cfg.experiment_name
        found = client.get_experiment_by_name(name)
        if found is None:
            raise PQFLInputError(f"--experiment: no MLflow experiment {clip(name)!r} in {uri}; run `pqfl run` first")
    name = found.name
    known = invocations(client, found.experiment_id)
    if not known:
        raise PQFLInputError(f"--experiment: {name!r} has no runs of `pqfl run` yet; run `pqfl run` first")
    if invocation is not None:
        flag = "--run" if run_id is not None else "--invocation"
        chosen = next((inv for inv in known if inv.id == invocation), None)
        if chosen is None:
            latest = ", ".join(inv.id for inv in reversed(known[-3:]))
            raise PQFLInputError(
                f"--invocation: no invocation {clip(invocation, 80)!r} in experiment {name!r}; "
                f"the latest are {latest} (tag pqfl.invocation of the parent runs)"
            )
        if not chosen.complete:
            raise PQFLInputError(
                f"{flag}: invocation {chosen.id} is not complete ({chosen.describe_missing()}); "
                f"finish it with {chosen.resume_hint()} or choose another"
            )
    else:
        complete = [inv for inv in known if inv.complete]
        if not complete:
            last = known[-1]
            raise PQFLInputError(
                f"--experiment: {name!r} has no complete invocation (the latest, {last.id}, has "
                f"{last.describe_missing()}); finish it with {last.resume_hint()} or run `pqfl run`"
            )
        chosen = max(complete, key=lambda inv: inv.ended)
        newer = [inv for inv in known if not inv.complete and inv.started > chosen.started]
        if newer and note is not None:
            note(
                f"newer invocation {newer[-1].id} left out: not complete ({newer[-1].describe_missing()}); "
                f"showing {chosen.id}"
            )
    finished = chosen.finished
    first = finished[chosen.methods[0]]
    return {
        "invocation": chosen.id,
        "experiment": name,
        "rounds": _int_param(first, "federation.rounds"),
        "seed": _int_param(first, "federation.seed"),
        "dataset": first.data.params.get("dataset.source"),
        "started": _stamp(chosen.started),
        "methods": {
            m: {**{k: metric(finished[m], k) for k in METRICS}, "run_id": finished[m].info.run_id}
            for m in chosen.methods
        },
    }


def describe(result: dict) -> str:
    """The lines above the table: the invocation, its settings and each method's parent run."""
    lines = [
        f"invocation {result['invocation']} (experiment {result['experiment']!r}, started {result['started']})",
        f"rounds {result['rounds']}, seed {result['seed']}, dataset {result['dataset']}",
        "parent runs:",
    ]
    width = max(len(m) for m in result["methods"])
    lines += [f"  {m:<{width}}  {row['run_id']}" for m, row in result["methods"].items()]
    return "\n".join(lines)


def as_json(result: dict) -> dict:
    """What ``pqfl compare --json`` writes."""
    keys = ("invocation", "experiment", "rounds", "seed", "dataset", "methods")
    return {k: result[k] for k in keys}
