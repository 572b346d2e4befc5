"""`recorder demo`: record a live demo room on this machine, end to end, with nothing but loopback.

The embedded room, three or four synthetic participants over real WebRTC, a recording started
and stopped through the room like an application does (`recorder.demo` has the script). The
recording goes where the deployment's environment says (CONTRACT.md §2): `./recordings` unless
`RECORDER_OUTPUT_DIR` or `RECORDER_S3_BUCKET` say otherwise. Exit 0 when every participant saw
RECORDING_STOPPED, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import signal
import sys
import tempfile
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from layouts.model import LayoutType, Theme
from recorder.demo import (
    DEFAULT_DURATION_S,
    DEFAULT_PARTICIPANTS,
    MIN_DURATION_S,
    PARTICIPANT_COUNTS,
    DemoOptions,
    report,
    run_demo,
)
from recorder.demo_janus import run_janus_demo
from recorder.embedded_room.control import DEFAULT_WORKER_COMMAND
from recorder.errors import ExitCode
from recorder.presets import Mode, Quality
from recorder.testing.janus import JanusUnavailableError

HELP = (
    "record a demo room end to end on 127.0.0.1: synthetic participants over WebRTC, "
    "startRecording/stopRecording, the file and its manifest"
)

E = TypeVar("E", bound=StrEnum)
_DEFAULTS = DemoOptions()
# The libraries' own chatter (ICE, DTLS, the room's joins) would bury the status line.
QUIET_LOGGERS = ("aioice", "aiortc", "aiohttp", "recorder")
# The worker's own log goes to a file of its own per run (demos may run side by side) unless -v
# (then it shares the terminal).
WORKER_LOG_NAME = "worker.log"
ROOM_KINDS = ("embedded", "janus")


def _enum(enum: type[E]) -> Callable[[str], E]:
    """An argparse type matching an enum's values case-insensitively, as the contract does."""
    by_lower = {member.value.lower(): member for member in enum}

    def parse(text: str) -> E:
        try:
            return by_lower[text.lower()]
        except KeyError:
            allowed = ", ".join(member.value for member in enum)
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {allowed}") from None

    parse.__name__ = enum.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", type=_enum(LayoutType), default=_DEFAULTS.layout,
                        help="GRID, SPOTLIGHT or SIDEBAR (default %(default)s)")  # fmt: skip
    parser.add_argument("--theme", type=_enum(Theme), default=_DEFAULTS.theme,
                        help="DARK, LIGHT or DEFAULT (default %(default)s)")  # fmt: skip
    parser.add_argument("--mode", type=_enum(Mode), default=_DEFAULTS.mode,
                        help="video-and-audio or audio (default %(default)s)")  # fmt: skip
    parser.add_argument("--quality", type=_enum(Quality), default=_DEFAULTS.quality,
                        help="low, med or high (default %(default)s)")  # fmt: skip
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION_S,
        metavar="SECONDS",
        help="how long to record, from RECORDING_STARTED to stopRecording (default %(default)s)",
    )
    parser.add_argument("--webhook-url", help="where the worker POSTs each status (default: none)")
    parser.add_argument(
        "--aws-dir-path", help="the key prefix (folder) the files go under (default: the root)"
    )
    parser.add_argument(
        "--participants",
        type=int,
        choices=PARTICIPANT_COUNTS,
        default=DEFAULT_PARTICIPANTS,
        help="how many synthetic participants join (default %(default)s)",
    )
    parser.add_argument(
        "--room",
        choices=ROOM_KINDS,
        default=ROOM_KINDS[0],
        help="embedded: the project's own room (default); janus: a Janus VideoRoom, recorded "
        "through the Janus connector",
    )
    parser.add_argument(
        "--janus-url",
        metavar="URL",
        help="with --room janus: the WebSocket API of a Janus to use (default: start Janus here "
        "with the project's configuration, in a sealed network namespace; needs root)",
    )
    parser.add_argument(
        "--worker-command",
        help="what startRecording launches, the job on its standard input (default: "
        f"{shlex.join(DEFAULT_WORKER_COMMAND)}, with its control endpoint for the status line)",
    )


def run(args: argparse.Namespace) -> int:
    if args.duration < MIN_DURATION_S:
        print(f"recorder demo: --duration must be at least {MIN_DURATION_S:g} s", file=sys.stderr)
        return ExitCode.INVALID_JOB
    worker_command = None
    if args.worker_command is not None:
        worker_command = tuple(shlex.split(args.worker_command))
        if not worker_command:
            print("recorder demo: --worker-command must name a program", file=sys.stderr)
            return ExitCode.INVALID_JOB
    verbose = bool(getattr(args, "verbose", False))
    worker_log = None
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        worker_log = Path(tempfile.mkdtemp(prefix="recorder-demo-")) / WORKER_LOG_NAME
    options = DemoOptions(
        layout=args.layout,
        theme=args.theme,
        mode=args.mode,
        quality=args.quality,
        duration_s=args.duration,
        webhook_url=args.webhook_url,
        aws_dir_path=args.aws_dir_path,
        participants=args.participants,
        worker_command=worker_command,
        worker_log=worker_log,
    )
    if args.room == "janus":
        return asyncio.run(_demo(options, janus_url=args.janus_url, janus=True))
    return asyncio.run(_demo(options))


async def _demo(options: DemoOptions, *, janus_url: str | None = None, janus: bool = False) -> int:
    # Ctrl-C (or SIGTERM) stops the recording early; it is still stored and reported.
    stop_early = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_early.set)
    if janus:
        try:
            outcome = await run_janus_demo(
                options, janus_url=janus_url, out=sys.stdout, stop_early=stop_early
            )
        except JanusUnavailableError as error:
            print(f"recorder demo: {error}", file=sys.stderr)
            return ExitCode.FAILED
    else:
        outcome = await run_demo(options, out=sys.stdout, stop_early=stop_early)
    report(outcome, sys.stdout)
    return ExitCode.OK if outcome.succeeded else ExitCode.FAILED
