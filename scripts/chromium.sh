#!/usr/bin/env bash
# Make sure Debian's Chromium is installed at /usr/bin/chromium for the browser tests (Playwright
# drives it headless; we do not download Playwright's own browser builds). Installs it with apt
# when it is missing and we are root. Elsewhere a missing browser is reported and the browser
# tests skip themselves; under CI=true it is an error. Prints the browser's path. Usage:
#   scripts/chromium.sh
set -euo pipefail

BROWSER=/usr/bin/chromium

in_ci() {
  case "${CI:-}" in
    1 | true | TRUE | True | yes) return 0 ;;
    *) return 1 ;;
  esac
}

fail() {
  echo "$1" >&2
  if in_ci; then
    exit 1
  fi
  exit 0
}

if [ ! -x "$BROWSER" ]; then
  if [ "$(id -u)" != 0 ]; then
    fail "Chromium is missing and this user cannot install it (run: sudo apt-get install -y chromium)"
  fi
  echo "installing Chromium from Debian's packages..." >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends chromium >&2; }; then
    fail "apt-get could not install chromium"
  fi
fi

if [ ! -x "$BROWSER" ]; then
  fail "Chromium is still missing at $BROWSER"
fi
echo "$BROWSER"
