"""The spool's file system fills up while recording: a clear FAILED, nothing stored as complete.

Two ways to run out of room, both on the real worker process:

* **a real full file system** (`ENOSPC`): the spool directory is a tmpfs of `TMPFS_SIZE_BYTES`.
  Mounting one needs CAP_SYS_ADMIN (root here, often not in CI); without it the test is skipped.
  A tmpfs inside an unprivileged user+mount namespace (`unshare -rm`) would not do: it vanishes
  with the worker, and with it the spool whose playable part must be kept.
* **a per-process file size limit** (`EFBIG`): `RLIMIT_FSIZE` set in the worker's `preexec_fn`,
  which needs no privilege and runs everywhere. Python ignores SIGXFSZ, so the write fails with
  "File too large" instead of killing the process. The limit applies to every file the worker
  writes, so this variant stores into S3 (moto, outside the worker) and the limit bites the spool.

Either way the worker must end RECORDING_FAILED with a reason that says what happened and names
the spool, exit 1, store no media object (a truncated file must never pass for a recording), and
keep the spool, whose playable prefix `recorder upload` then stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import S3Env, WebhookReceiver
from worker_helpers import (
    FINISHED_TIMEOUT_S,
    WorkerProcess,
    reap_workers,  # noqa: F401 - autouse fixture
    room_job,
    statuses_of,
    webhook_bodies,
    worker_env,
)

from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode
from recorder.inspect import probe
from recorder.lifecycle import Status
from recorder.media.fmp4 import durable_length
from recorder.storage.sidecar import sidecar_path

# An empty room at low quality writes ~7 kB/s: either limit is reached 1-2 s after STARTED.
FILE_SIZE_LIMIT_BYTES = 12_000
TMPFS_SIZE_BYTES = 16 * 1024  # four pages: the sidecar takes one, the spool gets the rest
RECORDING_ID = "disk-full"
AWS_DIR = "full"


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[None]:
    """A tmpfs of `size_bytes` mounted at `path`; skips the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _limit_file_size() -> None:
    """The worker's preexec_fn: no file it writes may grow past FILE_SIZE_LIMIT_BYTES."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES))


async def _launch(
    job: dict[str, object], env: dict[str, str], preexec_fn: Callable[[], None] | None
) -> WorkerProcess:
    """The worker as `WorkerProcess.launch` runs it, with a `preexec_fn` of the test's own."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recorder", "run", "-",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, preexec_fn=preexec_fn,
    )  # fmt: skip
    assert process.stdin is not None
    process.stdin.write(json.dumps(job).encode())
    await process.stdin.drain()
    process.stdin.close()
    return WorkerProcess(process)


async def _record_until_full(
    tmp_path: Path,
    env: dict[str, str],
    receiver: WebhookReceiver,
    preexec_fn: Callable[[], None] | None,
    expected_error: str,
) -> Path:
    """Run a worker into a full spool; check the failure; the spool it kept."""
    async with RoomServer() as server:
        job = room_job(
            server,
            recordingId=RECORDING_ID,
            awsDirPath=AWS_DIR,
            webhookUrl=receiver.url,
            config={"quality": "low"},
            limits={"emptyRoomTimeoutSec": 0},
        )
        worker = await _launch(job, env, preexec_fn)
        result = await worker.finish()  # it ends by itself: nobody stops it
    assert result.returncode == ExitCode.FAILED, result.stderr
    await receiver.wait_for(3)
    bodies = webhook_bodies(receiver.received)
    assert statuses_of(bodies) == [Status.STARTING, Status.STARTED, Status.FAILED]
    reason = bodies[-1]["data"]["reason"]
    assert reason["code"] == "MEDIA_FAILED"
    assert expected_error in reason["message"]  # says why, in the system's words
    (spool,) = sorted((tmp_path / "spool").glob("*.mp4"))
    assert reason["localPath"] == str(spool)
    assert f"the recording is kept at {spool}" in result.stderr
    assert sidecar_path(spool).exists()
    return spool


async def _upload(spool: Path, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recorder", "upload", str(spool), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), FINISHED_TIMEOUT_S)
    assert process.returncode == ExitCode.OK, err.decode()
    return json.loads(out)["sizeBytes"], err.decode()


def _check_playable(data: bytes, tmp_path: Path) -> None:
    copy = tmp_path / "recovered.mp4"
    copy.write_bytes(data)
    report = probe(copy)
    assert report.damage is None, report.damage
    assert report.video is not None and report.video.packets > 0


async def test_a_file_size_limit_fails_the_recording_and_stores_nothing_as_complete(
    tmp_path: Path, s3_env: S3Env, webhook_receiver: WebhookReceiver
) -> None:
    env = worker_env(tmp_path, RECORDER_S3_BUCKET=s3_env.bucket)
    spool = await _record_until_full(
        tmp_path, env, webhook_receiver, _limit_file_size, "File too large"
    )
    listed = s3_env.client.list_objects_v2(Bucket=s3_env.bucket, Prefix=f"{AWS_DIR}/")
    assert listed.get("KeyCount", 0) == 0  # no media object, no manifest
    assert spool.stat().st_size <= FILE_SIZE_LIMIT_BYTES
    playable = durable_length(spool)
    assert playable > 0
    expected = spool.read_bytes()[:playable]

    size, _ = await _upload(spool, env)  # later, with room to spare
    assert size == playable
    key = f"{AWS_DIR}/{RECORDING_ID}"
    stored = s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"{key}.mp4")["Body"].read()
    assert stored == expected
    _check_playable(stored, tmp_path)
    manifest = json.loads(
        s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"{key}.json")["Body"].read()
    )
    assert manifest["recovered"] is True and manifest["output"]["sizeBytes"] == playable


async def test_a_full_file_system_fails_the_recording_and_keeps_what_plays(
    tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    env = worker_env(tmp_path)
    out = tmp_path / "out"
    with tmpfs(tmp_path / "spool", TMPFS_SIZE_BYTES):
        spool = await _record_until_full(
            tmp_path, env, webhook_receiver, None, "No space left on device"
        )
        assert not any(p.is_file() for p in out.rglob("*"))  # no partial copy, no manifest
        playable = durable_length(spool)
        assert playable > 0
        expected = spool.read_bytes()[:playable]
        # Still full: the sidecar cannot be rewritten, which must not stop the upload.
        size, log = await _upload(spool, env)
        assert "No space left on device; storing the spool without updating it" in log
    assert size == playable
    stored = (out / AWS_DIR / f"{RECORDING_ID}.mp4").read_bytes()
    assert stored == expected
    _check_playable(stored, tmp_path)
    manifest = json.loads((out / AWS_DIR / f"{RECORDING_ID}.json").read_text())
    assert manifest["recovered"] is True and manifest["output"]["sizeBytes"] == playable
