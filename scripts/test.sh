#!/usr/bin/env bash
# Set up, then lint (ruff check, ruff format --check) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two workers, one test file each at a time: the suite is CPU-bound in one process and
# waits on servers it starts, so this uses both cores (7:31 against 13:45 serially here).
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
