"""A new SQLite store starts as a copy of an empty store that MLflow made once in pqfl's
cache folder (flows/tracking.py, ``empty_store``), instead of MLflow creating its tables and
running its migrations again for every store. The copy must be the store MLflow makes."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import mlflow.store.db.utils
import pytest
from mlflow.tracking import MlflowClient

from flows.tracking import open_store


@pytest.fixture
def creations(monkeypatch, tmp_path) -> list[str]:
    """The databases MLflow's own table creation ran on, in a cache folder of this test's."""
    monkeypatch.setenv("PQFL_CACHE_DIR", str(tmp_path / "cache"))
    real, seen = mlflow.store.db.utils._initialize_tables, []

    def counted(engine):
        seen.append(engine.url.database)
        return real(engine)

    monkeypatch.setattr(mlflow.store.db.utils, "_initialize_tables", counted)
    return seen


def _schema(path: Path) -> dict:
    """Every table's and index's definition, with the lines of each as a set (MLflow's own
    migrations write a table's constraints in an order that varies from run to run), the
    schema revision, and every table's rows apart from the experiments' times."""
    with closing(sqlite3.connect(path)) as db:
        entries = db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
        tables = [name for kind, name, _ in entries if kind == "table"]
        rows = {t: db.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables if t != "experiments"}
        experiments = db.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments")
        return {
            "entries": {(kind, name): frozenset((sql or "").splitlines()) for kind, name, sql in entries},
            "rows": rows,
            "experiments": experiments.fetchall(),
        }


def test_a_new_store_is_a_copy_of_the_store_mlflow_makes(creations, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Default experiment's artifact root follows the folder
    ours = tmp_path / "ours" / "mlflow.db"
    open_store(f"sqlite:///{ours}").search_experiments()
    mlflows = tmp_path / "mlflow" / "mlflow.db"
    MlflowClient(f"sqlite:///{mlflows}").search_experiments()
    assert len(creations) == 2 and creations[1] == str(mlflows)  # the empty store in the cache, then MLflow's
    assert Path(creations[0]).parent == tmp_path / "cache" / "mlflow"
    schema = _schema(ours)
    assert schema == _schema(mlflows)
    assert len(schema["entries"]) > 50 and schema["rows"]["alembic_version"]
    assert schema["experiments"] == [(0, "Default", str(tmp_path / "mlruns" / "0"), "active")]
    # the copy is a working store: a run, a metric, a registered model
    client = open_store(f"sqlite:///{ours}")
    run = client.create_run("0")
    client.log_metric(run.info.run_id, "auroc", 0.5, step=1)
    client.create_registered_model("pqfl-empty-store")
    assert client.get_run(run.info.run_id).data.metrics == {"auroc": 0.5}
    assert [m.name for m in client.search_registered_models()] == ["pqfl-empty-store"]


def test_the_empty_store_is_made_once_and_an_existing_store_is_never_replaced(creations, tmp_path):
    uris = [f"sqlite:///{tmp_path / f'store{k}' / 'mlflow.db'}" for k in range(3)]
    for uri in uris:
        open_store(uri).search_experiments()
    (template,) = (tmp_path / "cache" / "mlflow").iterdir()  # its temporary file is gone
    assert len(creations) == 1 and Path(creations[0]).parent == template.parent
    client = open_store(uris[0])
    client.create_experiment("kept")
    assert "kept" in [e.name for e in open_store(uris[0]).search_experiments()]
    assert len(creations) == 1


def test_without_a_writable_cache_folder_mlflow_creates_the_store(creations, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("PQFL_CACHE_DIR", str(blocker / "cache"))  # cannot be created under a file
    store = tmp_path / "store" / "mlflow.db"
    assert open_store(f"sqlite:///{store}").search_experiments()[0].name == "Default"
    assert creations == [str(store)]
