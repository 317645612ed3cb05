#!/usr/bin/env bash
# Create .venv with Python 3.11 and install pqfl with the versions tested together
# (constraints.txt). Idempotent: skips the install when nothing it depends on changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PQFL_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11 is required (set PQFL_PYTHON to its path)" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.pqfl-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pqfl and its pinned dependencies into .venv (first time: a few minutes)" >&2
  log=.venv/pqfl-install.log
  # uv (pinned in constraints.txt) installs the ~200 packages in parallel: 58 s against 112 s
  # with pip on 2 cores (docs/maintaining.md). Python here may be told not to write .pyc
  # files (PYTHONDONTWRITEBYTECODE), so they are compiled at install, as pip does.
  if ! { .venv/bin/python -m pip install -c constraints.txt uv \
      && .venv/bin/python -m uv pip install --python .venv/bin/python --native-tls --compile-bytecode \
        -c constraints.txt -e ".[test]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup: installing dependencies failed; the full log is in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
