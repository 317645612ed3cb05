"""The training flow: for each method, the library's federation (``pqfl.federated.rounds``)
with its jobs as Prefect tasks — local training fans out per client, aggregation and
evaluation join each round — and a recorder that checkpoints and logs every round.

``pqfl_train`` (deployment ``pqfl-train``) runs the configured methods one after another
as ``pqfl-method`` subflows on identical prepared data, each on the task runner the
config asks for (threads by default, processes, or Dask). Only the flow process writes
to MLflow.
"""

from __future__ import annotations

import logging
import time

from prefect import flow, tags
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext, TagsContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run

from flows.checkpoint import CheckpointStore, checkpoint_root, resume_target
from flows.interrupts import interruption, release_frames
from flows.recorder import MethodRecorder
from flows.runners import flow_run_url, task_runner_for
from flows.tracking import Tracker, publish_invocation, tracking_uri
from pqfl.errors import PQFLRunError
from pqfl.federated.rounds import Federation
from tasks.federated import check_methods, prepare_clients, task_map
from tasks.retry import with_fault_env
from tasks.settings import load_run_config, parse_run_config

log = logging.getLogger("pqfl.progress")


def _in_a_prefect_run(record: logging.LogRecord) -> bool:
    """Whether ``record`` was written inside a flow or task run, which its API log goes to.
    The library's round loop called directly in a process that imported this module writes
    the same lines outside any run; Prefect's handler would warn about each of them."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


if not any(isinstance(h, APILogHandler) for h in log.handlers):
    # pqfl's round lines, dropped clients and failures also reach the Prefect API, in the
    # logs of the flow or task run they are written in (under `pqfl run` and in deployments).
    handler = APILogHandler()
    handler.addFilter(_in_a_prefect_run)
    log.addHandler(handler)
    if log.level == logging.NOTSET:  # the round lines are INFO; a worker's root logger passes WARNING only
        log.setLevel(logging.INFO)


@flow(name="pqfl-method", flow_run_name="{method}")
def train_method(
    config: dict, method: str, parent_flow_run_id: str | None = None, invocation: str | None = None
) -> dict:
    """Train and evaluate one method for ``federation.rounds`` rounds; returns its final metrics.

    After every round the method's state is checkpointed (flows/checkpoint.py) before the
    round is logged; if a checkpoint of this ``invocation`` exists, training continues
    after its round, in the same MLflow runs.
    """
    started = time.perf_counter()
    with TagsContext(current_tags=set()):
        # The run's tags stay on this subflow run; its task runs carry none. Prefect asks the
        # server for tag concurrency slots before a tagged task's first run, measured at
        # 1.2–2 s per subflow on the temporary SQLite server, and pqfl sets no tag limits.
        return _train_method(config, method, parent_flow_run_id, invocation, started)


def _train_method(config: dict, method: str, parent_flow_run_id: str | None, invocation: str | None, started: float):
    cfg = parse_run_config(config)
    fleet = prepare_clients(cfg)
    federation = Federation(fleet, method, cfg.federation, simulator=cfg.simulator)
    tracker = Tracker(cfg, parent_flow_run_id or str(flow_run.id))
    store = CheckpointStore(checkpoint_root(tracker.uri), invocation or parent_flow_run_id or str(flow_run.id))
    flow_runs = {"pqfl-train": tracker.flow_run_id, "pqfl-method": str(flow_run.id)}
    recorder = MethodRecorder(cfg, method, tracker, store, federation, flow_runs, started, fleet)
    if recorder.finished:
        return recorder.finished_result()
    try:
        resume = recorder.resume_state()
        result = federation.run(map_fn=task_map(cfg, method), on_round=recorder.on_round, resume=resume)
        return recorder.finish(result)
    except PQFLRunError as err:
        raise recorder.fail(err) from err
    except BaseException as err:
        interrupt = interruption(err)
        if interrupt is None:
            recorder.fail(err)
            raise
        release_frames(err)  # what the interrupted code held (an open SQLite query) before the runs are closed
        recorder.fail(interrupt)
        if interrupt is err:
            raise
        raise interrupt from None  # an interruption that came out as another error


@flow(name="pqfl-train")
def pqfl_train(config_path: str | None = None, overrides: dict | None = None, resume: str | None = None) -> dict:
    """Run every configured method on identical data; returns per-method results and wall time.

    ``resume`` is an MLflow parent run id of an earlier, interrupted invocation: its stored
    config is used, finished methods are skipped and the others continue after their last
    checkpointed round, in their own MLflow runs.
    """
    started = time.perf_counter()
    if resume:
        store, cfg = resume_target(resume, config_path)
    else:
        cfg = with_fault_env(load_run_config(config_path).with_overrides(overrides))
        check_methods(cfg)  # a deployment's run is refused here, before it writes anything
        store = CheckpointStore(checkpoint_root(tracking_uri(cfg)), str(flow_run.id))
        store.write_manifest(
            cfg.model_dump(mode="json", by_alias=True), list(cfg.federation.methods), cfg.experiment_name
        )
    if url := flow_run_url(str(flow_run.id)):
        log.info("Prefect flow run %s", url)
    method_flow = train_method.with_options(task_runner=task_runner_for(cfg.runner))
    config = cfg.model_dump(mode="json", by_alias=True)
    results = {}
    for m in cfg.federation.methods:
        with tags(f"method:{m}", f"config:{cfg.name}", f"invocation:{store.invocation}"):
            results[m] = method_flow(config, m, str(flow_run.id), store.invocation)
    table = publish_invocation(
        tracking_uri(cfg), results, title=f"{cfg.experiment_name}, invocation {store.invocation}"
    )
    create_markdown_artifact(
        markdown=table, key="pqfl-results", description=f"{cfg.experiment_name}: every method's result"
    )
    return {
        "experiment": cfg.experiment_name,
        "invocation": store.invocation,
        "mlflow_parent_run_ids": {m: r["mlflow_parent_run_id"] for m, r in results.items()},
        "wall_s": time.perf_counter() - started,
        "methods": {
            m: {k: v for k, v in r.items() if k not in ("mlflow_parent_run_id", "method")} for m, r in results.items()
        },
    }
