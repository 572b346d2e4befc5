"""The worker delivering a live recording: statuses, webhooks, the file and its manifest.

The real worker (`python -m recorder run -`) is launched by the embedded room's control service
from a participant's `start_recording`; participants publish synthetic streams over real WebRTC
on 127.0.0.1. What is checked is what a caller relies on (CONTRACT.md §3-§5): every participant
receives the statuses in order; each status is POSTed to the webhook once, in order, signed; the
file lands under `awsDirPath` (in the output directory, or in the S3 bucket with parts sent while
recording), equals the spool it was made from, passes the checker (codecs, duration, each
participant's colour in their tile) and comes with a manifest that describes it.

Duration: the file starts at the first tick (the manifest's `startedAt`) and ends at the stop, so
its length is the span from `startedAt` to RECORDING_STOPPING; STARTED comes later than the first
tick by the encoder's pipeline (the first frames are in the file only then, ~0.35 s), so the
length is also within the contract's half second of the span from STARTED to STOPPING. Both
spans are taken from the webhooks' timestamps: the worker's own clock, no delivery delays.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from live_helpers import (
    LIVE_CAMERA,
    STATUS_ORDER,
    StatusLog,
    camera_feed,
    grid,
    join_publishing,
    recording_time,
    tone_participant,
    views,
)
from servers import S3Env, WebhookReceiver, free_port
from worker_helpers import (
    FINISHED_TIMEOUT_S,
    STARTED_TIMEOUT_S,
    WEBHOOK_SECRET,
    noisy_participant,
    statuses_of,
    until,
    webhook_bodies,
)

from recorder.client import RoomParticipant
from recorder.embedded_room.server import RoomServer
from recorder.inspect import presence, probe
from recorder.lifecycle import Status
from recorder.presets import PRESETS, Quality
from recorder.storage.s3 import MIN_PART_SIZE_BYTES

ALICE, BOB = 1, 2  # palette indexes
RECORD_S = 3.0  # wall time recorded between STARTED and stopRecording
# The file's duration against the span from its first tick (`startedAt`) to STOPPING: the stop
# ends the tick loop within a frame; half a second is the contract's own tolerance.
DURATION_TOLERANCE_S = 0.5
# The first frames are in the file this long after the first tick at most: the encoder's
# pipeline (x264's lookahead and frame threads, ~0.35 s), slower on busy cores.
MAX_STARTED_LAG_S = 1.5
# Tiles are checked from this file time on: both participants joined (about 0.3 s) and their
# first frames are due (the playout delay) well before it.
PRESENCE_FROM_S = 1.0
PRESENCE_EVERY_S = 0.5
# The manifest's duration counts ticks; the container's also holds the audio's last AAC frame.
MANIFEST_DURATION_SLACK_S = 0.1


def _iso_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _leave_all(participants: list[RoomParticipant]) -> None:
    await asyncio.gather(*(p.leave() for p in participants), return_exceptions=True)


def _check_tiles(media: Path, alice: RoomParticipant, bob: RoomParticipant, canvas: Any) -> None:
    """Each participant's palette colour in the tile the layouts package gives them."""
    alice_feed, bob_feed = camera_feed(alice.id), camera_feed(bob.id)
    tiles = grid(canvas).tiles(views([alice_feed, bob_feed]))
    samples = [
        sample
        for sample in presence(media, tiles, every_s=PRESENCE_EVERY_S)
        if sample.time_s >= PRESENCE_FROM_S
    ]
    assert len(samples) >= 3
    for sample in samples:
        assert sample.seen == {alice_feed: ALICE, bob_feed: BOB}, sample


async def test_a_room_recording_reaches_everyone_the_webhook_and_the_output_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook_receiver: WebhookReceiver
) -> None:
    out, spool = tmp_path / "out", tmp_path / "spool"
    monkeypatch.setenv("RECORDER_OUTPUT_DIR", str(out))
    monkeypatch.setenv("RECORDER_SPOOL_DIR", str(spool))
    monkeypatch.setenv("RECORDER_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("RECORDER_WEBHOOK_ALLOW_PRIVATE", "1")
    monkeypatch.delenv("RECORDER_S3_BUCKET", raising=False)
    log = StatusLog()
    everyone: list[RoomParticipant] = []
    async with RoomServer() as server:
        try:
            alice = await join_publishing(server.url, tone_participant(ALICE, "Alice"))
            bob = await join_publishing(server.url, tone_participant(BOB, "Bob"))
            everyone += [alice, bob]
            for participant in everyone:
                log.attach(participant)
            recording_id = await alice.start_recording(
                webhook_url=webhook_receiver.url,
                aws_dir_path="/tenant-a/2026/",
                config={"quality": "low", "layout": {"type": "grid"}},
            )
            await until(lambda: log.everyone_saw(Status.STARTED), STARTED_TIMEOUT_S, "STARTED")
            await recording_time(RECORD_S, log)
            await bob.stop_recording()
            await until(lambda: log.everyone_saw(Status.STOPPED), FINISHED_TIMEOUT_S, "STOPPED")
            await webhook_receiver.wait_for(len(STATUS_ORDER), FINISHED_TIMEOUT_S)
        finally:
            await _leave_all(everyone)

    for participant in everyone:
        assert log.statuses(participant.name) == STATUS_ORDER, participant.name

    # Webhooks: one request per status (the receiver answered 200 each time), in order, signed.
    bodies = webhook_bodies(webhook_receiver.received)
    assert statuses_of(bodies) == [str(status) for status in STATUS_ORDER]
    assert [body["webhookType"] for body in bodies] == [s.webhook_type for s in STATUS_ORDER]
    assert [body["data"]["sequence"] for body in bodies] == [1, 2, 3, 4]
    for body in bodies:
        assert body["data"]["recordingId"] == recording_id
        assert body["data"]["meetingId"] == "default"
    stopping, stopped = bodies[2]["data"], bodies[3]["data"]
    assert stopping["stopReason"] == stopped["stopReason"] == "signal"

    # The file and the manifest under awsDirPath; nothing left in the spool directory.
    key = f"tenant-a/2026/{recording_id}.mp4"
    media = out / key
    manifest = json.loads((out / f"tenant-a/2026/{recording_id}.json").read_text())
    assert list(spool.iterdir()) == []
    content = media.read_bytes()
    assert stopped["filePath"] == key and stopped["manifestKey"] == key[:-4] + ".json"
    assert stopped["fileSize"] == len(content) == manifest["output"]["sizeBytes"]
    assert stopped["sha256"] == hashlib.sha256(content).hexdigest() == manifest["output"]["sha256"]
    assert stopped["format"] == "mp4"
    assert stopped["codecs"] == {"video": "h264", "audio": "aac"}
    canvas = PRESETS[Quality.LOW].landscape
    assert stopped["resolution"] == {"width": canvas.width, "height": canvas.height}

    report = probe(media)
    assert report.video is not None and report.audio is not None
    assert (report.video.codec, report.audio.codec) == ("h264", "aac")
    assert (report.video.width, report.video.height) == (canvas.width, canvas.height)
    assert report.damage is None and report.duration_s is not None
    started_at = _iso_s(manifest["startedAt"])
    stopping_at = _iso_s(stopping["timestamp"])
    started_status_at = _iso_s(bodies[1]["data"]["timestamp"])
    assert report.duration_s == pytest.approx(stopping_at - started_at, abs=DURATION_TOLERANCE_S)
    assert report.duration_s == pytest.approx(
        stopping_at - started_status_at, abs=DURATION_TOLERANCE_S
    )
    assert 0.0 < started_status_at - started_at <= MAX_STARTED_LAG_S
    assert manifest["durationS"] == pytest.approx(report.duration_s, abs=MANIFEST_DURATION_SLACK_S)
    _check_tiles(media, alice, bob, canvas)

    # The manifest: who was there, config as applied, the stop.
    assert manifest["recordingId"] == recording_id and manifest["stopReason"] == "signal"
    assert manifest["awsDirPath"] == "tenant-a/2026"
    assert manifest["config"]["layout"] == {"type": "GRID", "priority": "SPEAKER", "gridSize": 4}
    assert manifest["config"]["quality"] == "low"
    people = {p["name"]: p for p in manifest["participants"]}
    assert set(people) == {"Alice", "Bob"}
    for person in people.values():
        (present,) = person["present"]
        assert present[0] < 0.5 and present[1] == manifest["durationS"]
        (visible,) = person["visible"]
        assert visible[0] < PRESENCE_FROM_S and visible[1] == manifest["durationS"]
        assert person["speaking"], person  # a steady tone speaks, after the mixer's hysteresis


async def test_a_recording_streams_into_s3_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_env: S3Env
) -> None:
    """At `high`, a camera of fresh noise makes the spool grow at the bitrate cap: with the
    smallest part size S3 allows, the first part is stored while the recording runs."""
    spool = tmp_path / "spool"
    monkeypatch.setenv("RECORDER_SPOOL_DIR", str(spool))
    monkeypatch.setenv("RECORDER_S3_PART_SIZE_BYTES", str(MIN_PART_SIZE_BYTES))
    port = free_port()
    worker = (sys.executable, "-m", "recorder", "run", "--control-port", str(port), "-")
    kept = tmp_path / "spool-copy.mp4"  # a second name for the spool, which is removed at the end
    log = StatusLog()
    everyone: list[RoomParticipant] = []
    async with RoomServer(worker_command=worker) as server:
        try:
            noisy = await join_publishing(
                server.url, noisy_participant(ALICE, "Noisy", LIVE_CAMERA)
            )
            everyone.append(noisy)
            log.attach(noisy)
            recording_id = await noisy.start_recording(
                aws_dir_path="tenant-b", config={"quality": "high"}
            )
            await until(lambda: log.everyone_saw(Status.STARTED), STARTED_TIMEOUT_S, "STARTED")
            (spool_file,) = list(spool.glob(f"{recording_id}.*.mp4"))
            os.link(spool_file, kept)
            status = await _status_when(
                f"http://127.0.0.1:{port}/status",
                lambda s: s["storedBytes"] >= MIN_PART_SIZE_BYTES,
            )
            assert status["state"] == "RECORDING_STARTED"  # a part is stored, still recording
            await noisy.stop_recording()
            await until(lambda: log.everyone_saw(Status.STOPPED), FINISHED_TIMEOUT_S, "STOPPED")
        finally:
            await _leave_all(everyone)

    assert log.statuses("Noisy") == STATUS_ORDER
    key = f"tenant-b/{recording_id}.mp4"
    stored = s3_env.client.get_object(Bucket=s3_env.bucket, Key=key)
    body = stored["Body"].read()
    assert stored["ContentType"] == "video/mp4"
    assert body == kept.read_bytes() and len(body) > MIN_PART_SIZE_BYTES
    assert not spool_file.exists()
    manifest = json.loads(
        s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"tenant-b/{recording_id}.json")[
            "Body"
        ].read()
    )
    assert manifest["output"]["key"] == key
    assert manifest["output"]["sizeBytes"] == len(body)
    assert manifest["output"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert manifest["output"]["url"].endswith(f"/{s3_env.bucket}/{key}")
    assert [p["name"] for p in manifest["participants"]] == ["Noisy"]
    media = tmp_path / "stored.mp4"
    media.write_bytes(body)
    report = probe(media)
    canvas = PRESETS[Quality.HIGH].landscape
    assert report.video is not None and report.audio is not None
    assert (report.video.width, report.video.height) == (canvas.width, canvas.height)
    assert report.damage is None
    assert report.duration_s == pytest.approx(manifest["durationS"], abs=MANIFEST_DURATION_SLACK_S)
    (tile,) = grid(canvas).tiles(views([camera_feed(noisy.id)])).values()
    # The tile shows the noisy camera once the spool grows at the cap (the start of a 1080p
    # recording on two busy cores may show the avatar while the first frames come in).
    samples = presence(media, {"noisy": tile}, every_s=1.0)[-3:]
    assert all(sample.seen == {"noisy": ALICE} for sample in samples), samples


async def _status_when(url: str, condition: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    """GET the worker's `/status` until `condition(status)` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as response:
                status = await response.json()
            if condition(status):
                return status
            if loop.time() > deadline:
                raise AssertionError(f"/status never met the condition: {status}")
            await asyncio.sleep(0.2)
