"""`recorder upload SPOOL`: finish the delivery of a recording that could not be stored.

When the store was unreachable (or the worker died), the spool stays on disk with a sidecar
(`SPOOL.job.json`) that says where it goes and holds its manifest; the failure webhook and the
log name the spool. This command stores it like the worker would have (media, verification,
manifest) into the sink the environment configures, then removes the spool. It is idempotent: run
again after a failure it tries again; run again after success it finds the objects and exits 0.
Without a sidecar, `--job` (the recording's job) or `--key` (the media key) says where it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from recorder.errors import ExitCode, InvalidJobError, RecorderError
from recorder.job import load_job
from recorder.storage.delivery import recover_spool
from recorder.storage.from_env import sink_from_env
from recorder.storage.keys import DeliveryTarget, UnsafeKeyError

HELP = "store a recording left on disk (a spool) at its final place"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spool", metavar="SPOOL", type=Path, help="the spool file left behind")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--job", metavar="JOB", help="the recording's job file: its keys say where it goes"
    )
    where.add_argument("--key", metavar="KEY", help="the media key, e.g. 'folder/recording-1.mp4'")


def _target(args: argparse.Namespace) -> DeliveryTarget | None:
    if args.job is not None:
        return DeliveryTarget.for_job(load_job(args.job))
    if args.key is not None:
        return DeliveryTarget.for_media_key(args.key)
    return None


def run(args: argparse.Namespace) -> int:
    try:
        target = _target(args)
    except InvalidJobError as error:
        for problem in error.problems:
            print(f"invalid job: {problem}", file=sys.stderr)
        return ExitCode.INVALID_JOB
    except UnsafeKeyError as error:
        print(f"invalid key: {error.message}", file=sys.stderr)
        return ExitCode.INVALID_JOB
    try:
        sink = sink_from_env()
        delivered = asyncio.run(recover_spool(sink, args.spool, target=target))
    except RecorderError as error:
        print(f"upload failed: {error.message}", file=sys.stderr)
        return error.exit_code
    if delivered is None:
        print(json.dumps({"alreadyDelivered": True, "spool": str(args.spool)}))
        return ExitCode.OK
    print(
        json.dumps(
            {
                "mediaKey": delivered.media.key,
                "mediaUrl": delivered.media.url,
                "sizeBytes": delivered.media.size_bytes,
                "sha256": delivered.media.sha256_hex,
                "manifestKey": delivered.manifest.key,
                "verified": list(delivered.media.verified),
            },
            indent=2,
        )
    )
    return ExitCode.OK
