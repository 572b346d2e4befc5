"""Regenerate the golden frames on purpose: `.venv/bin/python scripts/update_goldens.py`.

Runs tests/test_golden.py with RECORDER_UPDATE_GOLDENS=1, which rewrites every golden PNG that no
longer matches within the tolerance (and writes missing ones), then lists what changed according
to git. Look at each changed PNG before committing it: a golden is only as good as the eyes that
approved it (docs/goldens.md). Extra arguments go to pytest (e.g. `-k spotlight`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = "tests/golden"


def main(argv: list[str]) -> int:
    env = {**os.environ, "RECORDER_UPDATE_GOLDENS": "1"}
    command = [sys.executable, "-m", "pytest", "tests/test_golden.py", "-q", "-rs", *argv]
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)
    changed = subprocess.run(
        ["git", "status", "--short", "--", GOLDEN_DIR],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    print(changed or "no golden changed", end="" if changed else "\n")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
