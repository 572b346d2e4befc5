"""`recorder room`: the embedded room for local runs, the demo and development.

It serves the signalling protocol of docs/room-protocol.md on 127.0.0.1 and is the control service
of its rooms: a participant's `startRecording` launches one worker (`recorder run -` unless
`--worker-command` says otherwise) and `stopRecording` sends it SIGTERM. It runs until SIGINT or
SIGTERM, then ends every room (each running recording is stopped and waited for).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal

from recorder.embedded_room.control import DEFAULT_WORKER_COMMAND
from recorder.embedded_room.protocol import DEFAULT_ROOM_ID
from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode

HELP = "run the embedded room (WebSocket signalling + recording control) on 127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=0, help="the port on 127.0.0.1; 0 (default) picks a free one"
    )
    parser.add_argument(
        "--worker-command",
        default=shlex.join(DEFAULT_WORKER_COMMAND),
        help="what startRecording launches, the job on its standard input (default: %(default)s)",
    )


async def _serve(port: int, worker_command: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with RoomServer(port=port, worker_command=worker_command) as server:
        # One line a launcher or a developer can read the URL from.
        print(f"room: {server.url} (room id {DEFAULT_ROOM_ID!r} unless a client names another)")
        print("stop with Ctrl-C", flush=True)
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    worker_command = shlex.split(args.worker_command)
    if not worker_command:
        print("--worker-command must name a program")
        return ExitCode.INVALID_JOB
    asyncio.run(_serve(args.port, worker_command))
    return ExitCode.OK
