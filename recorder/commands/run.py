"""`recorder run [JOB|-]`: the worker. One recording per process; the exit code says how it went.

    recorder run job.json                  # the job from a file
    recorder run - < job.json              # from standard input (what the control service does)
    RECORDER_JOB='{...}' recorder run      # from the environment
    recorder run job.json --control-port 0 # with the local control endpoint on a free port

The job is read and validated first, before anything heavy is imported (start latency is part of
the contract): an invalid job prints one line per problem on standard error and exits 2, before
any room is joined. Then `recorder.recording.Recording` records it (see there for the order of
things); exit codes follow CONTRACT.md §6: 0 recorded and stored, 1 failed (the spool is kept and
named), 2 invalid job (or invocation), 3 could not join the room.

With `--control-port`, the endpoint's URL is printed on standard output as one line,
`control: http://HOST:PORT`, once it listens (port 0 picks a free one). It binds 127.0.0.1
unless `--control-host` says otherwise; any other host requires `RECORDER_CONTROL_TOKEN`.
The spool (the local file being recorded) goes to `--spool-dir`, else `RECORDER_SPOOL_DIR`,
else `<temp dir>/room-recorder`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from recorder.errors import ExitCode, InvalidJobError
from recorder.job import JOB_ENV_VAR, STDIN_SOURCE, load_job

HELP = "record one job: join its room, record, store the file and its manifest (the worker)"

SPOOL_DIR_ENV_VAR = "RECORDER_SPOOL_DIR"
DEFAULT_SPOOL_DIRNAME = "room-recorder"  # under the system's temporary directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "job",
        nargs="?",
        metavar="JOB",
        help=f"the job's JSON file, or '{STDIN_SOURCE}' for standard input; "
        f"absent: the JSON text in ${JOB_ENV_VAR}",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        metavar="PORT",
        help="serve the control endpoint (status, stop, layout, health, metrics) on this port; "
        "0 picks a free one. Off unless given",
    )
    parser.add_argument(
        "--control-host",
        metavar="HOST",
        help="where the control endpoint listens (default 127.0.0.1); any address beyond this "
        "machine requires $RECORDER_CONTROL_TOKEN, which callers send as a Bearer token",
    )
    parser.add_argument(
        "--spool-dir",
        type=Path,
        metavar="DIR",
        help=f"where the local file is recorded before it is stored (default ${SPOOL_DIR_ENV_VAR}"
        f", else <temp dir>/{DEFAULT_SPOOL_DIRNAME})",
    )


def spool_dir(args: argparse.Namespace) -> Path:
    """The spool directory: the flag, the environment, or one under the temporary directory."""
    if args.spool_dir is not None:
        return Path(args.spool_dir)
    configured = os.environ.get(SPOOL_DIR_ENV_VAR, "").strip()
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / DEFAULT_SPOOL_DIRNAME


def run(args: argparse.Namespace) -> int:
    try:
        job = load_job(args.job)
    except InvalidJobError as error:
        for problem in error.problems:
            print(f"invalid job: {problem}", file=sys.stderr)
        return ExitCode.INVALID_JOB
    # The job is valid: now the media, the room technology and the network stack.
    from recorder.control_settings import (  # noqa: PLC0415
        CONTROL_TOKEN_ENV_VAR,
        DEFAULT_CONTROL_HOST,
        ControlConfigError,
        ControlSettings,
    )
    from recorder.recording import Recording, RecordingOptions  # noqa: PLC0415

    control = None
    if args.control_port is not None:
        try:
            control = ControlSettings(
                port=args.control_port,
                host=args.control_host or DEFAULT_CONTROL_HOST,
                token=os.environ.get(CONTROL_TOKEN_ENV_VAR) or None,
            )
        except ControlConfigError as error:
            print(f"recorder run: {error}", file=sys.stderr)
            return ExitCode.INVALID_JOB

    def announce_control_url(url: str) -> None:
        print(f"control: {url}", flush=True)

    options = RecordingOptions(
        spool_dir=spool_dir(args),
        control=control,
        on_control_url=announce_control_url,
        ignore_stop_signals_when_done=True,
    )
    return int(asyncio.run(Recording(job, options).run()))
