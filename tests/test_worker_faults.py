"""The worker when things go wrong, and when it stops on its own.

Each test runs the real worker process (`python -m recorder run -`, the job on standard input,
as a launcher runs it) against the embedded room on 127.0.0.1, the S3 store (moto) or the local
output directory, and the scripted webhook receiver. The rooms are empty, or hold participants
without media: what is under test is the worker's lifecycle, its exit codes (CONTRACT.md §6)
and where the recording ends up, not the pictures (tests/test_worker_delivery.py does those).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from servers import Reply, S3Env, WebhookReceiver, free_port
from worker_helpers import (
    FINISHED_TIMEOUT_S,
    STATUS_ORDER,
    FlakyS3Proxy,
    WorkerProcess,
    is_upload_part,
    reap_workers,  # noqa: F401 - autouse fixture
    room_job,
    statuses_of,
    webhook_bodies,
    worker_env,
)

from recorder.client import join
from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode
from recorder.inspect import probe
from recorder.lifecycle import Status
from recorder.storage.sidecar import sidecar_path

STARTED_LOG = "RECORDING_STARTED"
STOPPED_LOG = "RECORDING_STOPPED"
FINISH_AFTER_STOPPED_S = 30.0  # the teardown's own bounds are well under this
LATE_SIGNAL_INTERVAL_S = 0.002
# An empty room would end the recording after its default minute; most tests stop it themselves.
NO_EMPTY_ROOM_STOP = {"emptyRoomTimeoutSec": 0}
LOW = {"quality": "low"}
# How long the worker may take from the stop to its exit when nothing is slow: closing the file,
# storing it locally, the room's and the webhooks' last words.
QUICK_EXIT_S = 10.0


def _s3_env(tmp_path: Path, s3: S3Env, **overrides: str | None) -> dict[str, str]:
    return worker_env(tmp_path, RECORDER_S3_BUCKET=s3.bucket, **overrides)


def _spools(tmp_path: Path) -> list[Path]:
    spool_dir = tmp_path / "spool"
    return sorted(p for p in spool_dir.glob("*.mp4")) if spool_dir.exists() else []


async def _record_then_stop(worker: WorkerProcess) -> None:
    await worker.wait_for_log(STARTED_LOG)
    worker.signal(signal.SIGTERM)


async def test_a_malformed_job_exits_2_naming_each_field(tmp_path: Path) -> None:
    env = worker_env(tmp_path)
    job = {
        "room": {"connector": "loopback", "url": "ws://127.0.0.1:1/ws", "roomId": "r"},
        "config": {"quality": "ultra", "layout": {"gridSize": 9}},
        "webhookUrl": "ftp://example.com/hook",
    }
    worker = await WorkerProcess.launch(job, env)
    result = await worker.finish(QUICK_EXIT_S)
    assert result.returncode == ExitCode.INVALID_JOB
    assert "config.quality: 'ultra' is not one of low, med, high" in result.stderr
    assert "config.layout.gridSize: 9 is not an integer from 1 to 4" in result.stderr
    assert "webhookUrl:" in result.stderr
    not_json = await WorkerProcess.launch("{not json", env)
    result = await not_json.finish(QUICK_EXIT_S)
    assert result.returncode == ExitCode.INVALID_JOB
    assert "is not valid JSON" in result.stderr
    assert not (tmp_path / "spool").exists()  # refused before anything was set up


async def test_a_room_that_cannot_be_joined_exits_3(
    tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    env = worker_env(tmp_path)
    unreachable = {
        "room": {"connector": "loopback", "url": f"ws://127.0.0.1:{free_port()}/ws", "roomId": "r"},
        "webhookUrl": webhook_receiver.url,
        "config": LOW,
    }
    result = await (await WorkerProcess.launch(unreachable, env)).finish()
    assert result.returncode == ExitCode.JOIN_FAILED
    await webhook_receiver.wait_for(2)
    bodies = webhook_bodies(webhook_receiver.received)
    assert statuses_of(bodies) == [Status.STARTING, Status.FAILED]
    reason = bodies[1]["data"]["reason"]
    assert reason["code"] == "JOIN_FAILED" and "could not be reached" in reason["message"]
    assert "localPath" not in reason  # nothing of the room was recorded: nothing is kept
    assert _spools(tmp_path) == []

    async with RoomServer() as server:
        job = room_job(server, config=LOW)
        job["room"]["token"] = "not-a-token-of-this-room"
        result = await (await WorkerProcess.launch(job, env)).finish()
    assert result.returncode == ExitCode.JOIN_FAILED
    assert "refused the recorder" in result.stderr


async def test_max_duration_ends_the_recording_and_a_private_webhook_is_refused(
    tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    """The receiver is on 127.0.0.1 and the deployment does not allow private addresses: no
    webhook may reach it, and the recording does not care."""
    env = worker_env(tmp_path, RECORDER_WEBHOOK_ALLOW_PRIVATE=None)
    async with RoomServer() as server:
        job = room_job(
            server,
            webhookUrl=webhook_receiver.url,
            config=LOW,
            limits={"maxDurationSec": 2, **NO_EMPTY_ROOM_STOP},
        )
        worker = await WorkerProcess.launch(job, env)
        result = await worker.finish()
    assert result.returncode == ExitCode.OK, result.stderr
    assert webhook_receiver.received == []
    assert "refused" in result.stderr and "undelivered" in result.stderr
    manifest = json.loads((tmp_path / "out" / f"{_recording_id(result.stderr)}.json").read_text())
    assert manifest["stopReason"] == "max-duration"
    assert manifest["durationS"] == pytest.approx(2.0, abs=2 / 30)


async def test_an_empty_room_ends_the_recording(tmp_path: Path) -> None:
    env = worker_env(tmp_path)
    async with RoomServer() as server:
        eve = await join(server.url, "Eve")
        try:
            job = room_job(server, config=LOW, limits={"emptyRoomTimeoutSec": 1})
            worker = await WorkerProcess.launch(job, env)
            await worker.wait_for_log(STARTED_LOG)
            await eve.leave()
            left = time.monotonic()
            result = await worker.finish()
            stopped_after_s = time.monotonic() - left
        finally:
            await eve.leave()
    assert result.returncode == ExitCode.OK, result.stderr
    assert stopped_after_s >= 1.0
    manifest = json.loads((tmp_path / "out" / f"{_recording_id(result.stderr)}.json").read_text())
    assert manifest["stopReason"] == "empty-room-timeout"
    (person,) = manifest["participants"]
    (present,) = person["present"]
    assert person["name"] == "Eve"
    # She left a second before the stop (the timeout), give or take the stop's frame.
    assert manifest["durationS"] - present[1] == pytest.approx(1.0, abs=0.25)


async def test_storage_down_at_the_start_that_comes_back_during_the_stop(
    tmp_path: Path, s3_env: S3Env
) -> None:
    s3_env.server.stop()
    try:
        async with RoomServer() as server:
            job = room_job(server, awsDirPath="down", config=LOW, limits=NO_EMPTY_ROOM_STOP)
            worker = await WorkerProcess.launch(job, _s3_env(tmp_path, s3_env))
            await _record_then_stop(worker)
            await worker.wait_for_log("failed (EndpointConnectionError)")  # it retries...
            s3_env.server.start()  # ...and the store is back
            result = await worker.finish()
    finally:
        s3_env.server.start()
    assert result.returncode == ExitCode.OK, result.stderr
    recording_id = _recording_id(result.stderr)
    stored = s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"down/{recording_id}.mp4")
    body = stored["Body"].read()
    manifest = _stored_json(s3_env, f"down/{recording_id}.json")
    assert manifest["output"]["sizeBytes"] == len(body) > 0
    assert _spools(tmp_path) == []


async def test_storage_failing_in_the_middle_of_the_upload_is_retried(
    tmp_path: Path, s3_env: S3Env
) -> None:
    """The multipart upload is created, then the store answers 503 SlowDown to the next four
    part uploads (more than boto3's own tries): our retry takes over and the upload succeeds."""
    proxy = FlakyS3Proxy(s3_env.server.endpoint, fail_first=4, matching=is_upload_part)
    url = await proxy.start()
    try:
        async with RoomServer() as server:
            job = room_job(server, awsDirPath="flaky", config=LOW, limits=NO_EMPTY_ROOM_STOP)
            worker = await WorkerProcess.launch(
                job, _s3_env(tmp_path, s3_env, AWS_ENDPOINT_URL_S3=url)
            )
            await _record_then_stop(worker)
            result = await worker.finish()
    finally:
        await proxy.close()
    assert result.returncode == ExitCode.OK, result.stderr
    assert proxy.failed == 4
    assert "upload_part of" in result.stderr and "failed (SlowDown)" in result.stderr
    assert any("partNumber=1" in line and line.endswith("200") for line in proxy.forwarded)
    recording_id = _recording_id(result.stderr)
    body = s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"flaky/{recording_id}.mp4")[
        "Body"
    ].read()
    media = tmp_path / "stored.mp4"
    media.write_bytes(body)
    report = probe(media)
    assert report.damage is None and report.video is not None and report.audio is not None
    manifest = _stored_json(s3_env, f"flaky/{recording_id}.json")
    assert manifest["output"]["sizeBytes"] == len(body)


async def test_storage_that_never_comes_back_fails_keeping_the_spool_after_a_second_sigterm(
    tmp_path: Path, s3_env: S3Env, webhook_receiver: WebhookReceiver
) -> None:
    """The store is gone for good. The first SIGTERM stops the recording, which retries the
    store; the second (the launcher's patience ends) cuts the retries: FAILED at once with the
    spool kept and named, exit 1. Later, with the store back, `recorder upload` finishes it."""
    env = _s3_env(tmp_path, s3_env)
    s3_env.server.stop()
    try:
        async with RoomServer() as server:
            job = room_job(
                server,
                awsDirPath="lost",
                webhookUrl=webhook_receiver.url,
                config=LOW,
                limits=NO_EMPTY_ROOM_STOP,
            )
            worker = await WorkerProcess.launch(job, env)
            await _record_then_stop(worker)
            await worker.wait_for_log("failed (EndpointConnectionError)")
            hurried = time.monotonic()
            worker.signal(signal.SIGTERM)
            result = await worker.finish()
            hurried_s = time.monotonic() - hurried
    finally:
        s3_env.server.start()
    assert result.returncode == ExitCode.FAILED, result.stderr
    assert "finishing faster" in result.stderr
    assert hurried_s < QUICK_EXIT_S  # without the hurry, retries alone take about as long
    await webhook_receiver.wait_for(4)
    bodies = webhook_bodies(webhook_receiver.received)
    assert statuses_of(bodies) == [*STATUS_ORDER[:3], Status.FAILED]
    reason = bodies[3]["data"]["reason"]
    (spool,) = _spools(tmp_path)
    assert reason["code"] == "STORAGE_FAILED" and reason["localPath"] == str(spool)
    assert str(spool) in result.stderr
    assert sidecar_path(spool).exists()
    recorded = spool.read_bytes()

    upload = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recorder", "upload", str(spool), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(upload.communicate(), FINISHED_TIMEOUT_S)
    assert upload.returncode == 0, err.decode()
    recording_id = _recording_id(result.stderr)
    stored = s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"lost/{recording_id}.mp4")
    assert stored["Body"].read() == recorded
    manifest = _stored_json(s3_env, f"lost/{recording_id}.json")
    assert manifest["stopReason"] == "signal" and "recovered" not in manifest  # the final one
    assert json.loads(out)["mediaKey"] == f"lost/{recording_id}.mp4"
    assert not spool.exists() and not sidecar_path(spool).exists()


async def test_a_failing_then_slow_webhook_receiver_does_not_touch_the_recording(
    tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    """The receiver is down (503) for the first two requests, then slow (half a second per answer):
    every status still arrives, in order, and the recording's own timing does not move."""
    webhook_receiver.script = [Reply(status=503), Reply(status=503)]
    webhook_receiver.default = Reply(stall_s=0.5)
    env = worker_env(tmp_path)
    async with RoomServer() as server:
        job = room_job(
            server, webhookUrl=webhook_receiver.url, config=LOW, limits=NO_EMPTY_ROOM_STOP
        )
        worker = await WorkerProcess.launch(job, env)
        await _record_then_stop(worker)
        result = await worker.finish()
    assert result.returncode == ExitCode.OK, result.stderr
    accepted = webhook_bodies(webhook_receiver.accepted())
    assert statuses_of(accepted) == [str(status) for status in STATUS_ORDER]
    assert len(webhook_receiver.received) == len(STATUS_ORDER) + 2  # STARTING sent three times
    statuses = statuses_of(webhook_bodies(webhook_receiver.received))
    assert statuses[:3] == [Status.STARTING] * 3
    # The statuses' own times (when the recording reached them) show no wait for the receiver:
    # STARTED follows STARTING by the start-up alone, STOPPED follows STOPPING at once.
    times = {body["data"]["status"]: _iso_s(body["data"]["timestamp"]) for body in accepted}
    assert times[Status.STARTED] - times[Status.STARTING] < 3.0
    assert times[Status.STOPPED] - times[Status.STOPPING] < 1.0
    assert (tmp_path / "out" / f"{_recording_id(result.stderr)}.mp4").exists()


# --- helpers ---------------------------------------------------------------------------------


def _recording_id(log: str) -> str:
    """The recording id from the worker's log (`recording <id>: media running ...`)."""
    for line in log.splitlines():
        if ": media running" in line:
            return line.split("recording ", 1)[1].split(":", 1)[0]
    raise AssertionError(f"no recording id in the log:\n{log}")


def _stored_json(s3: S3Env, key: str) -> dict[str, Any]:
    return json.loads(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())


def _iso_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_sigterms_after_the_recording_ended_do_not_change_the_exit_code(
    tmp_path: Path,
) -> None:
    """A launcher may signal a worker that has already sent RECORDING_STOPPED (a room server
    shutting down, a pod being deleted): the process must still exit with the recording's code,
    not as killed by SIGTERM. Signals are sent every 2 ms from STOPPED until the exit, so some
    land in the exit's last stretch, after the loop's handlers are gone."""
    env = worker_env(tmp_path)
    async with RoomServer() as server:
        eve = await join(server.url, "Eve")
        try:
            worker = await WorkerProcess.launch(room_job(server, config=LOW), env)
            await worker.wait_for_log(STARTED_LOG)
            worker.signal()
            await worker.wait_for_log(STOPPED_LOG)
            deadline = time.monotonic() + FINISH_AFTER_STOPPED_S
            sent = 0
            while worker.process.returncode is None and time.monotonic() < deadline:
                with contextlib.suppress(ProcessLookupError):
                    worker.signal()
                    sent += 1
                await asyncio.sleep(LATE_SIGNAL_INTERVAL_S)
            result = await worker.finish()
        finally:
            await eve.leave()
    assert sent > 0
    assert result.returncode == ExitCode.OK, (result.returncode, result.stderr[-2000:])
