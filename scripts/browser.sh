#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the MLflow UI browser test (issue 5).
# Idempotent: does nothing when /usr/bin/chromium and /usr/bin/chromedriver exist.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
if ! command -v apt-get >/dev/null; then
  echo "setup: the browser test needs Chromium and ChromeDriver at /usr/bin (install them with your package manager)" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
echo "setup: installing Debian's chromium and chromium-driver for the browser test" >&2
log=$(mktemp)
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2; echo "setup: installing chromium failed (log: $log)" >&2; exit 1
fi
