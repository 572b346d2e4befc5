"""`recorder dashboard`: a web page listing the stored recordings, with thumbnails and a player.

    recorder dashboard                       # the store the environment configures (as the worker)
    recorder dashboard --dir ./recordings    # a local output directory
    recorder dashboard --prefix team-a       # only the recordings under one awsDirPath

It reads the same environment as the worker: `RECORDER_S3_BUCKET` (with boto3's region,
endpoint and credential chain) for S3, else `RECORDER_OUTPUT_DIR` (default `./recordings`).
It prints `dashboard: http://HOST:PORT` once it listens and serves until SIGINT or SIGTERM.
The page has no authentication: it binds 127.0.0.1 unless `--host` names another address,
which also takes `--expose` (put an authenticating proxy in front of it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from recorder.control_settings import is_loopback
from recorder.dashboard.server import dashboard_app
from recorder.dashboard.stores import LocalStore, RecordingStore, S3Store
from recorder.dashboard.thumbnails import ThumbnailCache
from recorder.errors import ExitCode, StorageError
from recorder.storage.from_env import DEFAULT_OUTPUT_DIR, OUTPUT_DIR_ENV_VAR
from recorder.storage.keys import UnsafeKeyError
from recorder.storage.sink import S3_BUCKET_ENV_VAR

HELP = "serve a web page listing the stored recordings, with thumbnails and a player"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_CACHE_DIRNAME = "room-recorder-dashboard"  # under the system's temporary directory
SHUTDOWN_TIMEOUT_S = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help=f"a local output directory (default: ${S3_BUCKET_ENV_VAR} if set, else "
        f"${OUTPUT_DIR_ENV_VAR}, else {DEFAULT_OUTPUT_DIR})",
    )
    parser.add_argument("--prefix", default="", help="only the recordings under this awsDirPath")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks one"
    )
    parser.add_argument(
        "--expose",
        action="store_true",
        help="allow a --host beyond this machine (the page has no authentication)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help=f"where thumbnails are kept (default <temp dir>/{DEFAULT_CACHE_DIRNAME})",
    )


def run(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.expose:
        print(
            f"recorder dashboard: --host {args.host} serves every recording to the network "
            "without authentication; add --expose if it sits behind an authenticating proxy",
            file=sys.stderr,
        )
        return ExitCode.INVALID_JOB
    try:
        store = store_from(args.dir, args.prefix)
    except (StorageError, UnsafeKeyError) as error:
        print(f"recorder dashboard: {error.message}", file=sys.stderr)
        return ExitCode.INVALID_JOB
    cache_dir = args.cache_dir or Path(tempfile.gettempdir()) / DEFAULT_CACHE_DIRNAME
    asyncio.run(_serve(store, cache_dir, args.host, args.port))
    return ExitCode.OK


def store_from(directory: Path | None, prefix: str) -> RecordingStore:
    """The store `--dir` names, else the one the environment configures, as the worker's."""
    if directory is None and os.environ.get(S3_BUCKET_ENV_VAR, "").strip():
        from recorder.storage.s3 import S3Settings, make_s3_client  # noqa: PLC0415 - boto3

        return S3Store(make_s3_client(), S3Settings.from_env().bucket, prefix)
    root = directory or Path(os.environ.get(OUTPUT_DIR_ENV_VAR) or DEFAULT_OUTPUT_DIR)
    return LocalStore(root, prefix)


async def _serve(store: RecordingStore, cache_dir: Path, host: str, port: int) -> None:
    app = await dashboard_app(store, ThumbnailCache(cache_dir))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    print(f"dashboard: http://{shown}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
