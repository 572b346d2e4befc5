"""`recorder health`: ask a running worker's control endpoint whether its recording is healthy.

    recorder health                  # http://127.0.0.1:8080/healthz, the container image's port
    recorder health --port 9000

Exit 0 when `GET /healthz` answers 200, 1 otherwise (503 unhealthy, refused, timed out), with
the endpoint's answer on one line. It is the container image's HEALTHCHECK and the Kubernetes
Job's liveness probe (an exec probe: it runs inside the pod, on loopback), so it sends the
token the worker requires when `RECORDER_CONTROL_TOKEN` is set. Only the standard library's
HTTP client: a probe that runs every few seconds should start fast.
"""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.request

from recorder.control_settings import CONTROL_TOKEN_ENV_VAR
from recorder.errors import ExitCode

HELP = "check a running worker's health through its control endpoint (for container probes)"

# The control port the container image's entrypoint gives `recorder run` (see the Dockerfile).
IMAGE_CONTROL_PORT = 8080
HEALTH_TIMEOUT_S = 5.0
MAX_SHOWN_ANSWER_BYTES = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=IMAGE_CONTROL_PORT, help=f"default {IMAGE_CONTROL_PORT}"
    )
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument(
        "--timeout", type=float, default=HEALTH_TIMEOUT_S, help=f"default {HEALTH_TIMEOUT_S} s"
    )


def run(args: argparse.Namespace) -> int:
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/healthz"
    request = urllib.request.Request(url)
    token = os.environ.get(CONTROL_TOKEN_ENV_VAR)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            print(_shown(response.read()))
            return ExitCode.OK
    except urllib.error.HTTPError as error:  # 503: the worker says it is not healthy
        print(f"{url}: {error.code} {_shown(error.read())}")
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {getattr(error, 'reason', error)}")
    return ExitCode.FAILED


def _shown(body: bytes) -> str:
    return body[:MAX_SHOWN_ANSWER_BYTES].decode("utf-8", errors="replace").strip()
