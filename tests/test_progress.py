"""What a person sees while `pqfl run` trains: one line per round on stderr (round, mean and
worst AUROC, elapsed), a progress bar when stderr is a terminal, no stack traces or server
noise, and stdout / --json left clean for programs."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny import TINY, write_config

pytestmark = pytest.mark.timeout(600)

PQFL = [sys.executable, "-m", "flows.cli"]
METHODS = ["pqfl", "fedavg"]
ROUNDS = 2
ROUND_LINE = re.compile(
    r"^\[pqfl\] (?P<method>\S+)\s+round\s+(?P<k>\d+)/(?P<rounds>\d+)\s+mean AUROC (?P<mean>\d\.\d{3})"
    r"\s+worst (?P<worst>\d\.\d{3})\s+\((?P<elapsed>\d+\.\d) s\)$"
)


def _env(tmp_path: Path) -> dict[str, str]:
    # Only what a user's shell would have: the CLI itself must keep Prefect quiet.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    return env


def _args(tmp_path: Path) -> list[str]:
    cfg = write_config(tmp_path)
    return [
        "run",
        "--config",
        str(cfg),
        "--methods",
        ",".join(METHODS),
        "--rounds",
        str(ROUNDS),
        "--json",
        str(tmp_path / "out.json"),
    ]


def _round_lines(text: str) -> list[re.Match]:
    return [m for line in text.splitlines() if (m := ROUND_LINE.match(line.strip()))]


def _check_round_lines(stderr: str, result: dict) -> None:
    lines = _round_lines(stderr)
    assert [(m["method"], int(m["k"])) for m in lines] == [(m, k) for m in METHODS for k in range(1, ROUNDS + 1)]
    for m in lines:
        history = result["methods"][m["method"]]["history"][int(m["k"]) - 1]
        assert m["mean"] == f"{history['mean_auroc']:.3f}"
        assert m["worst"] == f"{history['worst_auroc']:.3f}"
        assert int(m["rounds"]) == ROUNDS
    for method in METHODS:  # elapsed time within a method only grows
        elapsed = [float(m["elapsed"]) for m in lines if m["method"] == method]
        assert elapsed == sorted(elapsed)


def _check_stdout(stdout: str, result: dict) -> None:
    assert "[pqfl]" not in stdout and "\x1b" not in stdout, stdout
    rows = [line.split()[0] for line in stdout.splitlines()[2:] if line.strip() and not line.startswith("total")]
    assert rows == METHODS
    assert f"{result['methods']['pqfl']['mean_auroc']:.3f}" in stdout


def test_piped_run_prints_one_plain_line_per_round_and_nothing_else(tmp_path):
    proc = subprocess.run(
        PQFL + _args(tmp_path), capture_output=True, text=True, timeout=500, env=_env(tmp_path), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert "Traceback" not in proc.stderr
    assert "\x1b" not in proc.stderr, "no terminal control codes when stderr is not a terminal"
    noise = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[pqfl] ")]
    assert noise == [], "a normal run writes only pqfl's own lines to stderr:\n" + "\n".join(noise[:20])
    _check_round_lines(proc.stderr, result)
    _check_stdout(proc.stdout, result)


def test_terminal_run_shows_a_progress_bar_over_client_rounds(tmp_path):
    """stderr on a pseudo-terminal (as in an interactive shell), stdout piped to a program."""
    master, slave = os.openpty()
    env = {**_env(tmp_path), "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen(
        PQFL + _args(tmp_path), stdout=subprocess.PIPE, stderr=slave, env=env, cwd=tmp_path, text=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 500
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        stdout = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal[-4000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert "Traceback" not in terminal
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal).replace("\r", "\n")
    total = len(METHODS) * ROUNDS * len(TINY["clients"])
    bar = rf"\[pqfl\] (?:{'|'.join(METHODS)}) \d/{len(METHODS)}, round \d+/{ROUNDS}\D+(\d+)/{total} client rounds"
    seen = {int(v) for v in re.findall(bar, plain)}
    assert seen, f"no progress bar in the terminal output:\n{plain[-3000:]}"
    assert seen <= set(range(0, total + 1, len(TINY["clients"]))), "the bar moves one round of clients at a time"
    assert max(seen) >= len(TINY["clients"])
    _check_round_lines(plain, result)
    _check_stdout(stdout, result)
