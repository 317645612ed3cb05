"""Where the client tasks run: the Prefect task runner a config asks for, and a Prefect API
address that Dask workers can report to.

Without ``PREFECT_API_URL`` a flow talks to a temporary Prefect server that it starts
itself, and the settings it hands to prefect-dask carry no address. Each Dask worker
process would then try to start a temporary server of its own, which is slow and can
time out (measured: a 165 s first round, with clients dropped). For ``runner.kind: dask``
:func:`api_for_dask` starts that temporary server up front and sets its address, so the
flow and every worker on this machine use one server. Remote workers need a server they
can reach: start ``prefect server start --host 0.0.0.0`` and set ``PREFECT_API_URL``; it
is then used as is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from tasks.settings import RunnerConfig


def task_runner_for(runner: RunnerConfig):
    """The Prefect task runner ``runner`` asks for.

    ``dask`` with an address connects to that running scheduler (workers elsewhere must
    have this project installed); without one, each method subflow starts and stops a
    local cluster of ``max_workers`` single-threaded worker processes.
    """
    if runner.kind == "dask":
        from prefect_dask import DaskTaskRunner  # imported only when asked for: it pulls in distributed

        if runner.address:
            return DaskTaskRunner(address=runner.address)
        cluster_kwargs = {"processes": True, "threads_per_worker": 1, "host": "127.0.0.1", "dashboard_address": None}
        if runner.max_workers:
            cluster_kwargs["n_workers"] = runner.max_workers
        return DaskTaskRunner(cluster_kwargs=cluster_kwargs)
    if runner.kind == "processes":
        return ProcessPoolTaskRunner(max_workers=runner.max_workers)
    return ThreadPoolTaskRunner(max_workers=runner.max_workers)


@contextmanager
def api_for_dask(runner: RunnerConfig) -> Iterator[str | None]:
    """Yield the API URL in use; start and set a temporary server if Dask needs one."""
    if runner.kind != "dask" or PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance a flow without an API URL would start
    # A loaded machine (Dask workers importing JAX) can take longer than Prefect's 20 s default.
    server.start(timeout=max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), 120))
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        server.stop()
