"""Prefect task ``execute-circuits``: run a client's circuits on a backend (qiskit-aer with a
device noise model, or IBM Quantum hardware) and return ⟨Z_i⟩ per sample.

The backend is an argument: :func:`backend_for` picks it from the client's profile.
Backend and job failures are raised as :class:`~tasks.retry.TransientError`, so the
retry options of :mod:`tasks.retry` retry them with backoff; a circuit the backend
rejects fails at once.

IBM Quantum token: the ``QISKIT_IBM_TOKEN`` environment variable, else the Prefect Secret
block named :data:`TOKEN_SECRET_BLOCK`. It is read inside :func:`backend_for` and handed
only to the runtime service; it is never a task or flow parameter, never logged and never
written to MLflow.
"""

from __future__ import annotations

import os

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from pqfl.quantum import qiskit_backend as hw
from pqfl.quantum.devices import load_device
from tasks.retry import NO_FAULTS, FaultPlan, TransientError, is_transient

TOKEN_ENV = "QISKIT_IBM_TOKEN"
TOKEN_SECRET_BLOCK = "qiskit-ibm-token"

# Injection hook for the IBM path: (device name, token) → a backend object with a
# ``target`` that a SamplerV2 accepts. Tests put a fake backend here; production uses
# qiskit-ibm-runtime's QiskitRuntimeService.
RUNTIME_BACKEND_FACTORY = hw.runtime_backend


class MissingTokenError(RuntimeError):
    """No IBM Quantum token in the environment or in the Prefect Secret block."""


def ibm_token() -> str:
    """The IBM Quantum API token: ``QISKIT_IBM_TOKEN``, else the Prefect Secret block."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    try:
        from prefect.blocks.system import Secret

        return Secret.load(TOKEN_SECRET_BLOCK).get()
    except Exception:  # noqa: BLE001 — any lookup failure means: no token configured
        raise MissingTokenError(
            f"backend: ibm_runtime needs an IBM Quantum token; set {TOKEN_ENV} or create a Prefect "
            f"Secret block named {TOKEN_SECRET_BLOCK!r}"
        ) from None


def backend_for(profile, seed: int | None = None):
    """(backend that runs the circuits, backend whose target they are transpiled for, layout)
    for a device client's profile."""
    if profile.backend == "ibm_runtime":
        backend = RUNTIME_BACKEND_FACTORY(profile.device, ibm_token())
        return backend, backend, profile.layout
    device = load_device(profile.from_device)
    return hw.aer_device_backend(device, seed=seed), device, profile.layout


def _attempt() -> int:
    return max(task_run.run_count or 1, 1)


@task(name="execute-circuits", cache_policy=NO_CACHE, task_run_name="execute-circuits-{client}")
def execute_circuits(
    backend,
    job: hw.CircuitJob,
    shots: int,
    seed: int | None = None,
    client: str = "",
    faults: FaultPlan = NO_FAULTS,
) -> tuple[np.ndarray, int]:
    """Run every sample of ``job`` on ``backend`` in one sampler job.

    Returns the measured expectation values, shape (batch, n_outputs), and the number of retries it took.
    """
    attempt = _attempt()
    faults.check("execute-circuits", client, 0, attempt)
    try:
        return hw.run_job(backend, job, shots, seed), attempt - 1
    except Exception as err:  # noqa: BLE001 — classified, not swallowed
        if is_transient(err):
            raise TransientError(f"{client}: backend job failed: {type(err).__name__}: {err}") from err
        raise
