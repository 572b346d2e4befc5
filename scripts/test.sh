#!/usr/bin/env bash
# Install everything the tests need into .venv (system packages too, when root), lint, and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's chromium for the dashboard's browser test, which skips without it (Playwright drives
# the system's browser; its own browser downloads are never used). Installed once, as root.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
        echo "scripts/test.sh: chromium could not be installed: the browser test will be skipped" >&2
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# Debian's janus for the Janus connector's tests (skipped, saying why, when it cannot run here).
bash scripts/janus.sh install -q ||
    echo "scripts/test.sh: janus could not be installed: the Janus tests will be skipped" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
