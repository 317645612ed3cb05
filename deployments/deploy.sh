#!/usr/bin/env bash
# Register pqfl's deployments (prefect.yaml) with the Prefect server at PREFECT_API_URL:
# create the process work pool if it is missing, then deploy every entry non-interactively.
# Run it again after editing prefect.yaml; it is idempotent.
# The pool name must match work_pool.name in prefect.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT="${PREFECT:-.venv/bin/prefect}"
POOL=pqfl-process
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"

if [[ -z "${PREFECT_API_URL:-}" ]] && ! "$PREFECT" config view 2>/dev/null | grep -q "^PREFECT_API_URL="; then
    echo "deploy.sh: PREFECT_API_URL is not set; start a server (prefect server start) and" \
         "export PREFECT_API_URL=http://127.0.0.1:4200/api" >&2
    exit 2
fi
if "$PREFECT" work-pool inspect "$POOL" >/dev/null 2>&1; then
    echo "work pool $POOL exists"
else
    "$PREFECT" work-pool create "$POOL" --type process
fi
"$PREFECT" --no-prompt deploy --all
