"""Prefect tasks over the library's round jobs (``pqfl.federated.jobs``), and the ``map_fn``
that hands the round loop's jobs to them.

``local-train`` and ``evaluate`` are per-client jobs with the run's retry options
(``tasks.retry.retry_options``) and a :class:`~tasks.retry.FaultPlan`, which may fail an
attempt on purpose before any work is done; each reports the retries it needed.
``aggregate`` is the round's join. Tasks take and return small jobs and results and never
touch MLflow. Caching is off: inputs are arrays that change every round, and hashing them
would cost more than it saves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache

import numpy as np
from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from pqfl.compile_cache import enable_persistent_cache
from pqfl.federated import jobs
from pqfl.fleet import Fleet, prepare
from pqfl.results import ClientEvaluation
from tasks.retry import NO_FAULTS, FaultPlan, retry_options
from tasks.settings import RunConfig, parse_run_config

# Worker processes import this module too: they share the on-disk compilation cache.
enable_persistent_cache()


@contextmanager
def _attempt() -> Iterator[int]:
    """This attempt's number, Prefect's ``run_count`` of the task run. A failure leaves the
    task with ``retries`` (the retries spent before it) set on its exception, which reaches
    the round loop through the future, pickled or not: reading ``run_count`` back from the
    API after the future fails races the state's write on the server."""
    attempt = max(task_run.run_count, 1)
    try:
        yield attempt
    except Exception as err:
        err.retries = attempt - 1
        raise


@task(
    name="local-train", cache_policy=NO_CACHE, task_run_name="local-train-{job.setup.profile.name}-r{job.round_index}"
)
def local_train(job: jobs.TrainJob, faults: FaultPlan = NO_FAULTS) -> jobs.Trained:
    """One trainer's local epochs for this round (fan-out)."""
    with _attempt() as attempt:
        faults.check("train", job.setup.name, job.round_index, attempt)
        return replace(jobs.train_client(job), retries=attempt - 1)


@task(name="evaluate", cache_policy=NO_CACHE, task_run_name="evaluate-{job.setup.profile.name}-r{job.round_index}")
def evaluate(job: jobs.EvalJob, faults: FaultPlan = NO_FAULTS) -> ClientEvaluation:
    """The model a method evaluates for this client (one member per restart), scored on its
    own validation/test data."""
    with _attempt() as attempt:
        faults.check("evaluate", job.setup.name, job.round_index, attempt)
        return replace(jobs.evaluate_client(job), retries=attempt - 1)


def prepared_fleet(cfg: RunConfig) -> Fleet:
    """``pqfl.fleet.prepare(cfg)``, once per config in this process: the CLI's check before
    the run and every method of the invocation share one preparation. The key is the whole
    config, so any change prepares again; the last two fleets are kept."""
    return _fleet_of(json.dumps(cfg.model_dump(mode="json", by_alias=True), sort_keys=True))


def check_methods(cfg: RunConfig) -> None:
    """Build every configured method's federation before any method trains, so a method the
    settings cannot run (DP with shared heads, ``one_class`` with ``fedenc``, a poisoning
    attack on shared scores, ...) is refused as bad input before an earlier method has
    spent its time."""
    from pqfl.errors import PQFLInputError
    from pqfl.federated.rounds import Federation

    fleet = prepared_fleet(cfg)
    for method in cfg.federation.methods:
        try:
            Federation(fleet, method, cfg.federation, simulator=cfg.simulator)
        except ValueError as err:
            raise PQFLInputError(str(err)) from None


@lru_cache(maxsize=2)
def _fleet_of(config_json: str) -> Fleet:
    return prepare(parse_run_config(json.loads(config_json)))


@task(name="prepare-clients", cache_policy=NO_CACHE)
def prepare_clients(cfg: RunConfig) -> Fleet:
    """Load, partition and preprocess (federated statistics) every client's data; prepared
    once per invocation (:func:`prepared_fleet`)."""
    return prepared_fleet(cfg)


@task(name="aggregate", cache_policy=NO_CACHE, task_run_name="aggregate-r{job.round_index}")
def aggregate(job: jobs.AggregateJob) -> np.ndarray:
    """The server's combination of the uploaded blocks within each sharing group (join)."""
    return jobs.aggregate_uploads(job)


def task_map(cfg: RunConfig, method: str) -> Callable:
    """The round loop's ``map_fn``: each library job function runs as its Prefect task,
    mapped over the round's jobs on the flow's task runner."""
    faults = FaultPlan.from_config(cfg, method)
    retried = retry_options(cfg.retries)
    tasks = {
        jobs.train_client: lambda js: local_train.with_options(**retried).map(js, unmapped(faults)),
        jobs.evaluate_client: lambda js: evaluate.with_options(**retried).map(js, unmapped(faults)),
        jobs.aggregate_uploads: lambda js: aggregate.map(js),
    }

    def map_fn(fn: Callable, items: list) -> list:
        return list(tasks[fn](items))

    return map_fn
