#!/usr/bin/env bash
# Browser tests drive Debian's Chromium through Playwright (never a downloaded browser build: this
# network cannot fetch one). Installs it when missing and we can (root + apt-get); otherwise explains.
set -euo pipefail
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "ensure-chromium: installing Debian's chromium (needed by the browser tests)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "ensure-chromium: $CHROMIUM not found. Install Debian's chromium (sudo apt-get install -y chromium)" >&2
echo "or point CHROMIUM_PATH at a Chromium 120+ binary." >&2
exit 1
