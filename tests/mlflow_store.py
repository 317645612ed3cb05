"""One real MLflow store filled by the tiny flow, shared by the registry and browser tests.

Training it takes a minute, so the first module that asks builds it
and later ones reuse it (a module-level memo: a fixture imported into two modules would run
twice). It lives in pytest's temporary directory; nothing leaks into the environment.
"""

from __future__ import annotations

import os

from tests.servers import reporting_to
from tests.tiny import write_config

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

_STORE: dict | None = None


def tiny_store(tmp_path_factory, prefect_api: str) -> dict:
    """``{"uri", "folder", "config", "result"}`` of the tiny config trained with all five methods,
    reporting to the Prefect server at ``prefect_api``."""
    global _STORE
    if _STORE is None:
        from flows.train import pqfl_train

        folder = tmp_path_factory.mktemp("mlflow_store")
        config = write_config(folder)
        uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
        old = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = uri  # overrides the config's own store
        try:
            with reporting_to(prefect_api):
                result = pqfl_train(str(config))
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)
        _STORE = {"uri": uri, "folder": folder, "config": config, "result": result}
    return _STORE
