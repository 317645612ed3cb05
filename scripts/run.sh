#!/usr/bin/env bash
# Quick start: set up, then run every method on the embedded default config.
# Extra arguments go to `pqfl run` (e.g. --rounds 3). Results: out.json and MLflow (mlruns/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pqfl run --json out.json "$@"
