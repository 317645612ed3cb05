"""prefect.yaml declares pqfl-train, pqfl-nightly-benchmark and pqfl-weekly-regime-map, and their entrypoints resolve
to the flows whose parameters they set (checked without a server; tests/test_deploy_server.py
deploys them to a real one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}


@pytest.mark.parametrize(
    "name, flow_name",
    [
        ("pqfl-train", "pqfl-train"),
        ("pqfl-nightly-benchmark", "pqfl-benchmark"),
        ("pqfl-weekly-regime-map", "pqfl-regime-map"),
    ],
)
def test_deployment_points_at_its_flow(name, flow_name):
    spec = DEPLOYMENTS[name]
    flow = load_flow_from_entrypoint(str(ROOT / spec["entrypoint"]))
    assert flow.name == flow_name
    assert set(spec["parameters"]) <= set(flow.parameters.properties)
    assert set(flow.parameters.required or []) <= set(spec["parameters"]), "every required parameter has a value"


def test_train_deployment_is_on_demand_with_an_existing_config():
    train = DEPLOYMENTS["pqfl-train"]
    assert not train.get("schedules")
    assert (ROOT / train["parameters"]["config_path"]).is_file()
    assert train["parameters"]["overrides"] == {}


def test_nightly_benchmark_runs_daily_at_a_fixed_utc_time():
    [schedule] = DEPLOYMENTS["pqfl-nightly-benchmark"]["schedules"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    assert (day, month, weekday) == ("*", "*", "*")
    assert schedule["timezone"] == "UTC" and schedule["active"] is True


def test_regime_map_runs_weekly_at_a_fixed_utc_time_and_never_overlaps():
    weekly = DEPLOYMENTS["pqfl-weekly-regime-map"]
    [schedule] = weekly["schedules"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24 and 0 <= int(weekday) <= 6
    assert (day, month) == ("*", "*")
    assert schedule["timezone"] == "UTC" and schedule["active"] is True
    assert weekly["concurrency_limit"] == 1


def test_every_deployment_shares_the_process_pool_that_deploy_sh_creates():
    pools = {d["work_pool"]["name"] for d in DEPLOYMENTS.values()}
    assert len(pools) == 1
    script = (ROOT / "deployments" / "deploy.sh").read_text()
    assert f"POOL={pools.pop()}\n" in script and "--type process" in script
    assert "--no-prompt deploy --all" in script
