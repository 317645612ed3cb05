"""Settings of the orchestration layer (flows and tasks): which task runner, how jobs are retried, which
faults are injected (for testing), and where MLflow writes.

They sit in the same YAML file as the library's settings (``pqfl.config.Config``), under
``runner``, ``retries``, ``faults`` and ``tracking``; :class:`RunConfig` is the library's
config with these four sections validated. Every flow, task and CLI command reads a
:class:`RunConfig` (:func:`load_run_config`, :func:`parse_run_config`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pqfl.config import Config, ExperimentName, Float, Int, clip, load_config, parse_config

if TYPE_CHECKING:
    from pqfl.benchmark.suite import Case, Suite


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_DASK_ADDRESS = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*):(?P<port>[0-9]{1,5})")


class RunnerConfig(_Strict):
    """Which Prefect task runner executes the per-client tasks.

    ``dask`` with an ``address`` (``tcp://HOST:PORT`` of a running Dask scheduler) sends the
    tasks to that cluster; ``dask`` without one starts a local cluster of ``max_workers``
    worker processes for the run.
    """

    kind: Literal["threads", "processes", "dask"] = "threads"
    max_workers: Int | None = Field(default=None, ge=1)
    address: str | None = None

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        match = _DASK_ADDRESS.fullmatch(v.strip())
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise ValueError(
                "expected a Dask scheduler address like tcp://HOST:PORT (port 1-65535), as printed by `dask scheduler`"
            )
        return v.strip()

    @model_validator(mode="after")
    def _address_needs_dask(self) -> RunnerConfig:
        if self.address is not None and self.kind != "dask":
            raise ValueError(
                f"address is only used with kind: dask (kind is {self.kind!r}); set kind: dask or remove the address"
            )
        return self


class RetryConfig(_Strict):
    """How Prefect retries a failed job (local training, evaluation, circuit execution).

    Only transient failures (backend/job errors, timeouts) are retried; the n-th retry
    waits ``backoff_s · 2^(n−1)`` seconds, spread by ``jitter`` (Prefect's
    ``retry_jitter_factor``). Permanent failures (invalid circuit, bad config) fail at once.
    """

    max_retries: Int = Field(default=3, ge=0, le=50)
    backoff_s: Float = Field(default=1.0, ge=0, description="delay before the first retry; doubles each retry")
    jitter: Float = Field(default=0.5, ge=0, description="Prefect retry_jitter_factor (0 = exact delays)")


class FaultConfig(_Strict):
    """Seeded fault injection, for testing how runs survive failing jobs.

    ``transient_rate``: probability that an attempt of a job fails with a transient error,
    drawn from (seed, method, job, client, round, attempt); the last attempt the retry
    budget allows is spared, so these faults alone never exhaust the retries.
    ``outage``: client → rounds in which its backend is down (every attempt of its local
    training fails transiently, so the client is dropped after its retries).
    ``permanent``: client → rounds in which its local training fails permanently (no retry).
    The environment variable ``PQFL_FAULT_RATE`` overrides ``transient_rate``.
    """

    transient_rate: Float = Field(default=0.0, ge=0, le=1)
    outage: dict[str, list[Int]] = Field(default_factory=dict)
    permanent: dict[str, list[Int]] = Field(default_factory=dict)


class TrackingConfig(_Strict):
    """Where MLflow writes. ``MLFLOW_TRACKING_URI`` in the environment overrides ``uri``."""

    uri: str = "sqlite:///mlruns/mlflow.db"
    experiment: ExperimentName | None = None  # default: the config's name
    # Log and register every client's final detector as an MLflow model (about 0.2-0.5 s
    # each); sweeps that only compare metrics can turn it off.
    log_models: bool = True
    # Send each round's metrics to MLflow at most this often, a few rounds in one batch per
    # run (and always when a method ends); 0 sends every round as it ends. The round's
    # checkpoint keeps what is not sent yet, so a resume sends it.
    metrics_every_s: Float = Field(default=2.0, ge=0)


class RunConfig(Config):
    """A ``pqfl run``: the library's config plus the runner, retry, fault and tracking settings."""

    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _faults_name_clients(self) -> RunConfig:
        names = [c.name for c in self.clients]
        for kind, plan in (("outage", self.faults.outage), ("permanent", self.faults.permanent)):
            for client, rounds in plan.items():
                if client not in names:
                    raise ValueError(f"faults.{kind}: unknown client {clip(repr(client))}; use one of {clip(names)}")
                if any(r < 1 for r in rounds):
                    raise ValueError(
                        f"faults.{kind}.{client}: rounds start at 1 (got {clip(rounds)}); list rounds 1..K"
                    )
        return self

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name


def parse_run_config(data: Any, origin: str = "config") -> RunConfig:
    """Validate a mapping into a :class:`RunConfig`; PQFLInputError names the field and fix."""
    return parse_config(data, origin, schema=RunConfig)


def load_run_config(path: str | Path | None = None) -> RunConfig:
    """Load and validate a YAML run config (the embedded default when ``path`` is None)."""
    return load_config(path, schema=RunConfig)


def check_run_suite(
    suite_path: str, data_dir: str | None, overrides: dict | None = None, seeds: list[int] | None = None
) -> tuple[Suite, list[Case]]:
    """The library's suite check (fields, configs, data files, partitions), plus every case's
    orchestration sections (runner, retries, faults, tracking), so that no case fails on
    its settings after hours of others. Here rather than in the
    benchmark flow, so that ``pqfl benchmark`` checks its input before Prefect and MLflow load."""
    from pqfl.benchmark.suite import check_suite

    spec, cases = check_suite(suite_path, data_dir, overrides, seeds)
    for case in cases:
        parse_run_config(
            case.config,
            origin=f"suite {spec.name}, dataset {case.dataset}, objective {case.objective}, seed {case.seed}",
        )
    return spec, cases
