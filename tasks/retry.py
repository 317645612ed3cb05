"""Retrying failed jobs with Prefect's own machinery, and seeded fault injection.

A job (local training, evaluation, circuit execution on a backend) can fail in two ways:

- **transient**: the backend or the job queue had a bad moment (job errors, timeouts,
  dropped connections). Trying again later may work, so Prefect retries the task with
  exponential backoff and jitter.
- **permanent**: the job can never succeed as submitted (invalid circuit, bad config,
  a bug). Retrying wastes time, so the task fails at once.

Use :func:`retry_options` with ``task.with_options(**retry_options(cfg.retries))``; its
``retry_condition_fn`` asks :func:`is_transient` whether a failure is worth retrying.

Fault injection (:class:`FaultPlan`) makes an attempt of a job fail on purpose. Whether
attempt ``a`` of a job fails is a pure function of (seed, method, job, client, round, a),
so a run with faults is reproducible; since a failed attempt changes nothing, a run whose
jobs all end up succeeding gives exactly the metrics of the fault-free run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prefect.tasks import exponential_backoff

from pqfl.errors import PQFLInputError
from pqfl.rng import derive_rng
from tasks.settings import FaultConfig, RetryConfig, RunConfig

FAULT_RATE_ENV = "PQFL_FAULT_RATE"


class TransientError(RuntimeError):
    """A failure that may go away on its own (backend hiccup, job error, timeout): retried."""


class PermanentError(RuntimeError):
    """A failure that retrying cannot fix (invalid circuit, bad config): not retried."""


# Matched by class name anywhere in the exception's MRO, so that qiskit / qiskit-ibm-runtime
# need not be imported here. Permanent names are checked first: IBMBackendValueError is
# both a backend error and a ValueError, and it is the caller's mistake.
_PERMANENT_NAMES = frozenset(
    {
        "CircuitError",
        "TranspilerError",
        "QiskitBackendNotFoundError",
        "IBMInputValueError",
        "IBMBackendValueError",
        "IBMNotAuthorizedError",
        "IBMAccountError",
        "AerError",  # the simulator rejected the circuit or ran out of memory: same again next time
    }
)
_TRANSIENT_NAMES = frozenset(
    {
        "TimeoutError",
        "ConnectionError",
        "JobError",  # qiskit: includes JobTimeoutError and runtime job failures
        "JobTimeoutError",
        "RuntimeJobFailureError",
        "RuntimeJobTimeoutError",
        "RuntimeJobMaxTimeoutError",
        "IBMBackendApiError",
        "IBMBackendApiProtocolError",
        "IBMApiError",
        "RequestsApiError",
    }
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is worth retrying; anything unrecognised counts as permanent."""
    if isinstance(exc, (PermanentError, PQFLInputError)):
        return False
    if isinstance(exc, TransientError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _PERMANENT_NAMES:
        return False
    return bool(names & _TRANSIENT_NAMES)


def _exception_of(state) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # the failure could not be loaded: treat it as unknown
        return None
    return result if isinstance(result, BaseException) else None


def retry_only_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed run only if its error is transient.

    (Prefect calls this only when it is a plain function, so it must stay one.)
    """
    exc = _exception_of(state)
    return exc is not None and is_transient(exc)


def retry_options(policy: RetryConfig | None = None) -> dict:
    """Keyword arguments for ``task.with_options``: retries with exponential backoff and
    jitter, failing fast on permanent errors."""
    policy = policy or RetryConfig()
    return {
        "retries": policy.max_retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=policy.backoff_s),
        "retry_jitter_factor": policy.jitter or None,
        "retry_condition_fn": retry_only_transient,
    }


def with_fault_env(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``faults.transient_rate`` taken from ``PQFL_FAULT_RATE`` when that is set."""
    raw = os.environ.get(FAULT_RATE_ENV)
    if raw is None or raw.strip() == "":
        return cfg
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise PQFLInputError(f"{FAULT_RATE_ENV}: expected a probability between 0 and 1, got {raw!r}; fix or unset it")
    return cfg.with_overrides({"faults.transient_rate": rate})


@dataclass(frozen=True)
class FaultPlan:
    """Which attempts of which jobs fail on purpose, for one method of one run.

    Picklable and small, so it travels with the task to worker processes.
    """

    seed: int
    method: str
    max_retries: int
    transient_rate: float = 0.0
    outage: dict[str, tuple[int, ...]] = field(default_factory=dict)
    permanent: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: RunConfig, method: str) -> FaultPlan:
        f: FaultConfig = cfg.faults
        return cls(
            seed=cfg.federation.seed,
            method=method,
            max_retries=cfg.retries.max_retries,
            transient_rate=f.transient_rate,
            outage={k: tuple(v) for k, v in f.outage.items()},
            permanent={k: tuple(v) for k, v in f.permanent.items()},
        )

    def transient_fault(self, job: str, client: str, round_index: int, attempt: int) -> bool:
        """Whether attempt ``attempt`` (1-based) of this job draws an injected transient fault."""
        if self.transient_rate <= 0 or attempt > self.max_retries:  # the last allowed attempt is spared
            return False
        draw = derive_rng(self.seed, "fault", self.method, job, client, round_index, attempt).random()
        return bool(draw < self.transient_rate)

    def check(self, job: str, client: str, round_index: int, attempt: int) -> None:
        """Raise the injected failure for this attempt, if any (call at the start of the job)."""
        where = f"{job} {client} round {round_index} attempt {attempt}"
        if job == "train" and round_index in self.permanent.get(client, ()):
            raise PermanentError(f"injected permanent fault: {where}")
        if job == "train" and round_index in self.outage.get(client, ()):
            raise TransientError(f"injected backend outage: {where}")
        if self.transient_fault(job, client, round_index, attempt):
            raise TransientError(f"injected transient fault: {where}")


NO_FAULTS = FaultPlan(seed=0, method="", max_retries=0)
