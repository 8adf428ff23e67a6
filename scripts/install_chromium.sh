#!/usr/bin/env bash
# Install Debian's Chromium for the browser test of `sftprep inspect --html` (tests/report/test_report_browser.py).
# Idempotent: does nothing when /usr/bin/chromium already exists. Needs root (apt-get).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium
