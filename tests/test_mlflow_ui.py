"""``pqfl ui`` serves the project's MLflow store, and a real headless Chromium shows the
method runs with their ``mean_auroc`` in the experiment's runs table."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from flows.mlflow_ui import runs_page
from tests.mlflow_store import tiny_store
from tests.servers import VENV_BIN, free_port, running, server_env

pytestmark = pytest.mark.timeout(600)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
METHODS = ["local", "fedavg", "fedprox", "pqfl", "centralized"]
METRIC_COL = "metrics.`mean_auroc`"


@pytest.fixture
def browser(tmp_path):
    """Debian's Chromium through its own chromedriver: headless, offline, no selenium-manager."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1920,900",
    ):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def _row_index(driver, run_name: str) -> str:
    link = driver.find_element(By.XPATH, f"//div[@role='row']//a[normalize-space()='{run_name}']")
    return link.find_element(By.XPATH, "./ancestor::div[@role='row'][1]").get_attribute("row-index")


def _show_metric_column(driver, wait: WebDriverWait, metric: str) -> None:
    """Tick ``metric`` in the runs table's column chooser (metrics are hidden by default)."""
    driver.find_element(By.XPATH, "//button[normalize-space()='Columns']").click()
    search = wait.until(EC.element_to_be_clickable((By.XPATH, "//input[@placeholder='Search columns']")))
    search.send_keys(metric)
    wait.until(EC.element_to_be_clickable((By.XPATH, f"//strong[normalize-space()='{metric}']"))).click()
    search.send_keys(Keys.ESCAPE)


def test_pqfl_ui_shows_the_method_runs_with_mean_auroc(tmp_path, tmp_path_factory, browser):
    store = tiny_store(tmp_path_factory)
    expected = {m: store["result"]["methods"][m]["mean_auroc"] for m in METHODS}
    experiment_id = MlflowClient(store["uri"]).get_experiment_by_name("tiny").experiment_id
    port = free_port()
    cmd = [str(VENV_BIN / "pqfl"), "ui", "--config", str(store["config"]), "--port", str(port)]
    started = time.monotonic()
    env = server_env(MLFLOW_TRACKING_URI=store["uri"])
    with running(cmd, f"http://127.0.0.1:{port}/health", tmp_path / "ui.log", env, timeout=240):
        server_s = time.monotonic() - started
        page = runs_page(f"http://127.0.0.1:{port}", experiment_id)
        assert (
            f"MLflow UI for {store['uri']}: {page}" in (tmp_path / "ui.log").read_text()
        )  # what pqfl ui tells the user
        browser.get(page)
        wait = WebDriverWait(browser, 90)
        # The runs table lists one parent run per method, by run name (client runs are nested under them).
        for method in METHODS:
            wait.until(
                EC.visibility_of_element_located((By.XPATH, f"//div[@role='row']//a[normalize-space()='{method}']"))
            )
        for close in browser.find_elements(
            By.XPATH, "//button[@data-component-id='mlflow.assistant.chat_panel.close']"
        ):
            close.click()  # the assistant side panel would hide the right-hand columns
        _show_metric_column(browser, wait, "mean_auroc")
        wait.until(
            EC.visibility_of_element_located((By.XPATH, f"//div[@role='columnheader' and @col-id='{METRIC_COL}']"))
        )
        shown = {}
        for method in METHODS:
            row = _row_index(browser, method)
            cell = wait.until(
                EC.visibility_of_element_located(
                    (
                        By.XPATH,
                        f"//div[@role='row' and @row-index='{row}']//div[@role='gridcell' and @col-id='{METRIC_COL}']",
                    )
                )
            )
            shown[method] = cell.text.strip()
        browser_s = time.monotonic() - started - server_s
        shot = tmp_path / "mlflow_ui.png"
        assert browser.save_screenshot(str(shot))
    print(
        f"pqfl ui healthy after {server_s:.1f} s; browser checks {browser_s:.1f} s; screenshot {shot}", file=sys.stderr
    )
    if os.environ.get("PQFL_TEST_ARTIFACTS"):  # keep the screenshot where a person can look at it
        Path(os.environ["PQFL_TEST_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["PQFL_TEST_ARTIFACTS"]) / "mlflow_ui.png")
    for method, text in shown.items():
        # The table rounds for display: compare at the precision it shows.
        decimals = len(text.partition(".")[2])
        assert decimals >= 2, (method, text)
        assert float(text) == pytest.approx(expected[method], abs=0.51 * 10**-decimals), (
            method,
            text,
            expected[method],
        )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_pqfl_ui_without_a_store_fails_in_one_line(tmp_path, monkeypatch, capsys):
    from flows.cli import main

    missing = tmp_path / "nowhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    assert main(["ui", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no MLflow store" in err and str(missing) in err
    assert not missing.exists()  # nothing created, no server started
