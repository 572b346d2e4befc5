"""`recorder validate`: check a job as a worker would, without joining a room.

A valid job is printed as applied (defaults filled in, enums canonical, the room token masked) on
standard output, so a launcher can see exactly what a worker would record; an invalid one gets
every problem on standard error and exit code 2, the code `recorder run` exits with for it.
"""

from __future__ import annotations

import argparse
import sys

from recorder.errors import ExitCode, InvalidJobError
from recorder.job import JOB_ENV_VAR, STDIN_SOURCE, load_job

HELP = "check a recording job and print it as applied"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "job",
        nargs="?",
        metavar="JOB",
        help=f"the job's JSON file, or '{STDIN_SOURCE}' for standard input; "
        f"absent: the JSON text in ${JOB_ENV_VAR}",
    )


def run(args: argparse.Namespace) -> int:
    try:
        job = load_job(args.job)
    except InvalidJobError as error:
        for problem in error.problems:
            print(f"invalid job: {problem}", file=sys.stderr)
        return ExitCode.INVALID_JOB
    print(job.to_canonical_json())
    return ExitCode.OK
