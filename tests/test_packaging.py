"""A non-editable install runs: ``pip install .`` into a fresh virtualenv, then ``pqfl run``
from another directory, with the embedded default config shipped as package data.

The fresh venv takes the project's dependencies from this environment's site-packages (a
``.pth`` line, which does not load this environment's editable pqfl) instead of
downloading them again, so only pqfl itself is installed, built from a copy of the tree
by pip's isolated build (which fetches the build backend, setuptools, from the registry).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(600)


def test_pip_install_then_pqfl_run_from_another_directory(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "mlruns", "*.egg-info", "__pycache__", "build")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (purelib / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    shutil.rmtree(src)  # the installed copy must not need its source tree

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="240",
    )
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pqfl.config as c; print(c.DEFAULT_CONFIG)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
        env=env,
    ).stdout.strip()
    assert where.startswith(str(purelib)) and Path(where).is_file(), where
    run = subprocess.run(
        [str(venv / "bin" / "pqfl"), "run", "--rounds", "1", "--methods", "pqfl"],
        capture_output=True,
        text=True,
        timeout=480,
        cwd=work,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines()[0].split()[:2] == ["mean", "AUROC"] and "pqfl" in run.stdout
    assert (work / "mlruns" / "mlflow.db").is_file()  # the default store, relative to where it ran
