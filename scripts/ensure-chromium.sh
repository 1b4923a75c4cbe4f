#!/usr/bin/env bash
# Browser tests drive Debian's Chromium through Playwright (never a downloaded browser build: this
# network cannot fetch one). Checks that it is there and new enough; installs or upgrades Debian's
# package when it is not and we can (root + apt-get); otherwise explains what to do. Prints the version
# it uses. CHROMIUM_PATH points at another binary (checked, never installed); WEBLORA_MIN_CHROMIUM
# overrides the minimum (for testing this script). Stale apt lists give Chromium 150, on which
# tests/e2e/offline.e2e.ts fails every time, hence `apt-get update` before installing.
set -euo pipefail

# The major version the suite is known to pass on.
MIN_CHROMIUM_MAJOR=156

MIN="${WEBLORA_MIN_CHROMIUM:-$MIN_CHROMIUM_MAJOR}"
DEBIAN_CHROMIUM=/usr/bin/chromium
CHROMIUM="${CHROMIUM_PATH:-$DEBIAN_CHROMIUM}"

# The version `$1 --version` reports ("Chromium 156.0.8078.108 built on Debian ..." → 156.0.8078.108),
# or nothing when the binary is missing or says no version. /usr/bin/chromium is a shell wrapper that
# may print shell noise on stderr: ignored.
chromium_version() {
  [ -x "$1" ] || return 0
  { "$1" --version 2>/dev/null || true; } | { grep -oE '[0-9]+(\.[0-9]+)+' || true; } | head -n 1
}

# True when version $1 (e.g. 156.0.8078.108) has a major version >= $2.
version_at_least() {
  local major="${1%%.*}"
  [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -ge "$2" ]
}

describe() {
  if [ -n "$1" ]; then echo "Chromium $1 at $CHROMIUM"; else echo "no Chromium at $CHROMIUM"; fi
}

# fail VERSION [after-apt]: explains and exits 1.
fail() {
  echo "ensure-chromium: $(describe "$1"), but the browser tests need Chromium $MIN or newer." >&2
  if [ "${2:-}" = after-apt ]; then
    echo "apt-get update && apt-get install chromium did not give $MIN+: check the apt sources, or" >&2
    echo "point CHROMIUM_PATH at Chromium $MIN+." >&2
  elif [ -n "${CHROMIUM_PATH:-}" ]; then
    echo "Point CHROMIUM_PATH at Chromium $MIN+, or unset it to use Debian's $DEBIAN_CHROMIUM." >&2
  else
    echo "Install Debian's current package: sudo apt-get update && sudo apt-get install -y chromium" >&2
    echo "(or point CHROMIUM_PATH at Chromium $MIN+)." >&2
  fi
  exit 1
}

main() {
  local version
  version="$(chromium_version "$CHROMIUM")"
  if [ -n "$version" ] && version_at_least "$version" "$MIN"; then
    echo "ensure-chromium: using Chromium $version at $CHROMIUM (minimum $MIN)"
    return 0
  fi
  # Only Debian's own package is ours to install or upgrade.
  if [ -z "${CHROMIUM_PATH:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "ensure-chromium: $(describe "$version"); installing Debian's current chromium (need $MIN+)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    version="$(chromium_version "$CHROMIUM")"
    if [ -n "$version" ] && version_at_least "$version" "$MIN"; then
      echo "ensure-chromium: using Chromium $version at $CHROMIUM (minimum $MIN)"
      return 0
    fi
    fail "$version" after-apt
  fi
  fail "$version"
}

# Sourcing the file (tests) defines the functions without running the check.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
