#!/usr/bin/env bash
# Install Debian's chromium for the browser tests when it is missing.
# Playwright drives this system binary via executable_path; we never download a browser build.
set -euo pipefail

CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"

if [ -x "$CHROMIUM_BIN" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "ensure_chromium: $CHROMIUM_BIN is missing and we are not root; install Debian's 'chromium' package" >&2
        exit 1
    fi
else
    SUDO=""
fi

export DEBIAN_FRONTEND=noninteractive
echo "ensure_chromium: installing Debian's chromium package" >&2
# Wait for a concurrent run's apt instead of failing on its lock.
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

if [ ! -x "$CHROMIUM_BIN" ]; then
    echo "ensure_chromium: installation finished but $CHROMIUM_BIN is still missing" >&2
    exit 1
fi
"$CHROMIUM_BIN" --version >&2 || true
