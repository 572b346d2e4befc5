#!/usr/bin/env bash
# Janus for the tests, the demo and the benchmark (recorder/testing/janus.py does the work):
#   scripts/janus.sh install [-q]  install Debian's janus when it is missing (needs root; idempotent)
#   scripts/janus.sh check [-q]    install, then start it once with the project's configuration in
#                                  a sealed network namespace, show what /janus/info says, stop it
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m recorder.testing.janus "$@"
