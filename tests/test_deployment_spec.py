"""prefect.yaml declares pqfl-train, and its entrypoint resolves to the training flow."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parent.parent


def test_pqfl_train_deployment_points_at_the_flow():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    train = deployments["pqfl-train"]
    flow = load_flow_from_entrypoint(str(ROOT / train["entrypoint"]))
    assert flow.name == "pqfl-train"
    assert set(train["parameters"]) <= set(flow.parameters.properties)
    assert (ROOT / train["parameters"]["config_path"]).is_file()
