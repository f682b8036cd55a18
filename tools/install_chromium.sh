#!/usr/bin/env bash
# Install Debian's chromium for the browser tests when /usr/bin/chromium is absent (no browser download).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get > /dev/null; then
    echo "error: /usr/bin/chromium is missing and apt-get is unavailable; install Chromium by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing Debian's chromium (apt-get)"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium > /dev/null
/usr/bin/chromium --version
