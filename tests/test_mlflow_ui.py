"""``pqfl ui`` serves the project's MLflow store, and a real headless Chromium shows the
method runs with their ``mean_auroc`` in the experiment's runs table; a busy port fails at
once, the address is printed when the server answers it, and no server process outlives
``pqfl ui`` (SIGINT, SIGTERM, SIGKILL)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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
from tests.servers import (
    VENV_BIN,
    alive,
    children,
    free_port,
    running,
    server_env,
    session_members,
    session_of,
)
from tests.tiny import write_config

pytestmark = pytest.mark.timeout(600)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
METHODS = ["local", "fedavg", "fedprox", "pqfl", "centralized"]
METRIC = "test/mean_auroc"
METRIC_COL = f"metrics.`{METRIC}`"
CLIENTS = ["amp-3q", "angle-2q-noisy", "iqp-2q-shots"]


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


def test_pqfl_ui_shows_the_method_runs_with_mean_auroc(tmp_path, tmp_path_factory, browser, prefect_server):
    store = tiny_store(tmp_path_factory, prefect_server)
    expected = {m: store["result"]["methods"][m]["mean_auroc"] for m in METHODS}
    experiment_id = MlflowClient(store["uri"]).get_experiment_by_name("tiny").experiment_id
    port = free_port()
    cmd = [str(VENV_BIN / "pqfl"), "ui", "--config", str(store["config"]), "--port", str(port)]
    started = time.monotonic()
    env = server_env(MLFLOW_TRACKING_URI=store["uri"])
    with running(cmd, f"http://127.0.0.1:{port}/health", tmp_path / "ui.log", env, timeout=240):
        server_s = time.monotonic() - started
        page = runs_page(f"http://127.0.0.1:{port}", experiment_id)
        told = f"MLflow UI for {store['uri']}: {page}"  # what pqfl ui tells the user, once its own probe answers
        deadline = time.monotonic() + 30
        while told not in (tmp_path / "ui.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert told in (tmp_path / "ui.log").read_text()
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
        _show_metric_column(browser, wait, METRIC)
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
        shot = tmp_path / "mlflow_ui.png"
        assert browser.save_screenshot(str(shot))
        sections = _chart_sections(browser, wait, page.replace("?", "?compareRunsMode=CHART&", 1))
        models = _models_tab(
            browser, wait, runs_page(f"http://127.0.0.1:{port}", experiment_id).replace("/runs?", "/models?")
        )
        comparison = _artifact_image(
            browser, wait, port, experiment_id, store["result"]["mlflow_parent_run_ids"]["pqfl"], tmp_path
        )
        browser_s = time.monotonic() - started - server_s
    print(
        f"pqfl ui healthy after {server_s:.1f} s; browser checks {browser_s:.1f} s; screenshot {shot}", file=sys.stderr
    )
    if os.environ.get("PQFL_TEST_ARTIFACTS"):  # keep the screenshots where a person can look at them
        Path(os.environ["PQFL_TEST_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        for picture in (shot, comparison):
            shutil.copy(picture, Path(os.environ["PQFL_TEST_ARTIFACTS"]) / picture.name)
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
    # The chart view: one section per metric prefix, as many charts as the parent runs have metrics.
    client = MlflowClient(store["uri"])
    logged = set().union(*(client.get_run(r).data.metrics for r in store["result"]["mlflow_parent_run_ids"].values()))
    prefixes = {name.split("/")[0] for name in logged if not name.startswith("system/")}
    assert prefixes == {"test", "val", "fl", "time"}, sections
    for prefix in prefixes:
        assert sections.get(prefix) == sum(name.startswith(prefix + "/") for name in logged), (prefix, sections)
    assert sections["System metrics"] == sum(name.startswith("system/") for name in logged) > 0
    # The Models tab: every client's detector, named method-client, from its client run, registered.
    for method in METHODS:
        for name in CLIENTS:
            assert models.get(f"{method}-{name}") == (f"{method}/{name}", f"tiny-{method}-{name}"), models
    assert len(models) == len(METHODS) * len(CLIENTS)


def _chart_sections(driver, wait: WebDriverWait, url: str) -> dict[str, int]:
    """The chart view's sections: ``{title: number of charts}``."""
    driver.get(url)
    header = "//div[@data-testid='experiment-view-compare-runs-section-header']"
    wait.until(EC.visibility_of_element_located((By.XPATH, f"{header}[contains(., 'test')]")))
    found = {}
    for element in driver.find_elements(By.XPATH, header):
        match = re.match(r"\s*(.+?)\s*\((\d+)\)", element.get_attribute("textContent"))
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def _models_tab(driver, wait: WebDriverWait, url: str) -> dict[str, tuple[str, str]]:
    """The experiment's Models tab: ``{model name: (source run, registered model)}``."""
    driver.get(url)
    wait.until(EC.visibility_of_element_located((By.XPATH, "//div[@role='gridcell' and @col-id='name']//a")))
    time.sleep(1)  # the grid fills in one render; give the cells of its last rows a moment
    rows: dict[str, dict[str, str]] = {}  # the pinned name column and the others are separate row elements
    for row in driver.find_elements(By.XPATH, "//div[@role='row' and @row-index]"):
        cells = rows.setdefault(row.get_attribute("row-index"), {})
        for cell in row.find_elements(By.XPATH, ".//div[@role='gridcell']"):
            links = cell.find_elements(By.TAG_NAME, "a")  # the name cell also holds its colour's hex code
            cells[cell.get_attribute("col-id")] = " ".join((links[0] if links else cell).text.split())
    return {
        cells["name"]: (cells.get("source_run_id"), cells.get("registered_models", "").removesuffix(" v1"))
        for cells in rows.values()
        if cells.get("name")
    }


def _artifact_image(driver, wait: WebDriverWait, port: int, experiment_id: str, run_id: str, folder: Path) -> Path:
    """Open the invocation's comparison figure in a parent run's artifact view; a screenshot of it."""
    driver.get(f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/plots/comparison.png")
    image = wait.until(EC.visibility_of_element_located((By.XPATH, "//img[@alt='plots/comparison.png']")))
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    assert image.get_attribute("naturalWidth") and int(image.get_attribute("naturalWidth")) > 800
    shot = folder / "comparison_ui.png"
    assert driver.save_screenshot(str(shot))
    return shot


def test_pqfl_ui_without_a_store_fails_in_one_line(tmp_path, monkeypatch, capsys):
    from flows.cli import main

    missing = tmp_path / "nowhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    assert main(["ui", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no MLflow store" in err and str(missing) in err
    assert not missing.exists()  # nothing created, no server started


# The lifecycle of `pqfl ui`: a busy port, the moment the address is printed, and how it ends.


def _store_with_experiment(folder: Path) -> tuple[Path, str, str]:
    """A new SQLite store holding the tiny config's (empty) experiment: config, URI, experiment id."""
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    (folder / "mlruns").mkdir()
    experiment_id = MlflowClient(uri).create_experiment("tiny")
    return write_config(folder), uri, experiment_id


def _start_ui(folder: Path, port: int, **env: str) -> tuple[subprocess.Popen, str]:
    config, uri, experiment_id = _store_with_experiment(folder)
    cmd = [str(VENV_BIN / "pqfl"), "ui", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=server_env(MLFLOW_TRACKING_URI=uri, **env), start_new_session=True)  # fmt: skip
    return proc, runs_page(f"http://127.0.0.1:{port}", experiment_id)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _until_url(proc: subprocess.Popen) -> tuple[str, int | None, list[str]]:
    """Read `pqfl ui`'s stderr up to the line with the address; GET the address at once."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "[pqfl] MLflow UI for" in line:
            url = re.search(r"(http://\S+)", line).group(1)
            return url, _status(url), seen
    raise AssertionError(f"pqfl ui ended (code {proc.wait()}) without printing the address:\n{''.join(seen)[-3000:]}")


def _server_sessions(pid: int) -> set[int]:
    """The sessions of ``pid``'s descendants that are not ``pid``'s own (the MLflow server's)."""
    return {s for s in map(session_of, children(pid)) if s is not None} - {session_of(pid)}


def _job_runners(pids: set[int]) -> set[int]:
    """The processes among ``pids`` that run MLflow's job consumers (huey)."""
    found = set()
    for pid in pids:
        try:
            if b"huey_consumer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
        except OSError:
            continue
    return found


def _gone_within(seconds: float, pids: set[int], sessions: set[int]) -> set[int]:
    """The processes still alive after ``seconds``: of ``pids`` and of the ``sessions``."""
    deadline = time.monotonic() + seconds
    while True:
        left = {p for p in pids if alive(p)} | {p for s in sessions for p in session_members(s)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _kill_all(proc: subprocess.Popen, sessions: set[int]) -> None:
    for group in {proc.pid, *sessions}:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.stderr.close()
    proc.wait(timeout=15)


def test_pqfl_ui_on_a_busy_port_fails_at_once(tmp_path):
    config, uri, _ = _store_with_experiment(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.run([str(VENV_BIN / "pqfl"), "ui", "--config", str(config), "--port", str(port)],
                              capture_output=True, text=True, timeout=10, env=server_env(MLFLOW_TRACKING_URI=uri))  # fmt: skip
    assert time.monotonic() - started < 10
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pqfl: error: --port: {port} "), proc.stderr
    assert "already in use" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_pqfl_ui_prints_the_address_once_it_answers_and_stops_every_process(sig, code, tmp_path):
    proc, page = _start_ui(tmp_path, free_port())
    sessions: set[int] = set()
    try:
        url, status, seen = _until_url(proc)
        assert url == page
        assert status == 200, "the address was printed before the server answered it"
        time.sleep(3)  # MLflow would start its job runners once the server answers
        pids = children(proc.pid)
        sessions = _server_sessions(proc.pid)
        assert len(sessions) == 1, "the MLflow server runs in a session of its own"
        assert len(pids) >= 2, pids  # mlflow server, uvicorn
        assert not _job_runners(pids), "MLflow's job runners are off unless the user turns them on"
        if sig is signal.SIGINT:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C: pqfl ui's process group
        else:
            os.kill(proc.pid, sig)  # `kill PID`
        assert proc.wait(timeout=60) == code
        rest = proc.stderr.read()
        assert rest.strip().splitlines()[-1] == f"pqfl: interrupted by {sig.name}", rest[-3000:]
        assert "Traceback" not in "".join(seen) + rest
        left = _gone_within(5, pids, sessions)
        assert not left, f"processes outlived pqfl ui: {left}"
    finally:
        _kill_all(proc, sessions)


def test_the_mlflow_server_does_not_outlive_a_killed_pqfl_ui(tmp_path):
    # With MLflow's job runners turned on by the user, which pqfl ui respects: they go too.
    proc, _ = _start_ui(tmp_path, free_port(), MLFLOW_SERVER_ENABLE_JOB_EXECUTION="true")
    sessions: set[int] = set()
    try:
        _until_url(proc)
        deadline = time.monotonic() + 30  # MLflow starts its job runners once the server answers
        while not _job_runners(pids := children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        sessions = _server_sessions(proc.pid)
        assert sessions and _job_runners(pids), pids
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
        proc.wait(timeout=15)
        left = _gone_within(30, pids, sessions)
        assert not left, f"processes outlived a killed pqfl ui: {left}"
    finally:
        _kill_all(proc, sessions)
