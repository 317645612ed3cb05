#!/usr/bin/env bash
# Start a process worker for pqfl's work pool. It polls the server at PREFECT_API_URL and
# runs each flow run as a subprocess in the directory the deployments were made from.
# Extra arguments go to `prefect worker start` (e.g. --run-once, --limit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT="${PREFECT:-.venv/bin/prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
exec "$PREFECT" worker start --pool pqfl-process --type process "$@"
