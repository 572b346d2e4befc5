"""`recorder bench --stop-latency`: how long a stop takes, against uploading the file after it.

A recording streams its spool to S3 while it runs (`recorder.storage.s3`), so at the stop only
the encoder's flush, the tail (less than one part), the verification and the manifest are left.
This measures that claim on one run: a `high` recording (`--quality` to change it) of
`--record-seconds` (default 300: five minutes) into a local S3 server (moto, in its own process
on 127.0.0.1), then

* **stop latency**: from the stop request to RECORDING_STOPPED (the file and manifest verified
  at their final place), and how it splits (media thread stopped and file closed; the rest:
  tail, verification, manifest);
* **upload after the stop**: the same file (read back from the store) uploaded again by the same
  sink, as a recorder that uploads only after recording would have to;
* their **ratio** (stop latency / upload after the stop), measured in one run.

The room is fed offline, in this process: four participants with camera-like (textured) 720p
cameras and speech-like microphones, paced in real time by the same `PacedTrack`s the test
participants publish and drained by the same `TrackConsumer`s the room connectors use, into the
real `Recording` (media thread, encoder, roster, delivery, S3 sink). What is left out is WebRTC
(ICE, DTLS, SRTP, VP8/Opus decoding): five minutes of four live 720p streams over loopback would
mostly measure the publishers, on a machine with two cores, and none of it is on the stop path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3

from recorder.bench.pipeline import PARTICIPANTS, TEXTURED, CyclingCamera
from recorder.client.media import paced_tracks
from recorder.job import RoomConfig, validate_job
from recorder.lifecycle import Status, StopReason, Transition
from recorder.presets import Quality
from recorder.recording import Recording, RecordingOptions
from recorder.rooms.base import (
    FrameSink,
    MonotonicNow,
    ParticipantJoined,
    RoomConnector,
    TrackPublished,
    feed_id,
)
from recorder.rooms.consumer import TrackConsumer
from recorder.storage.s3 import PART_SIZE_BYTES, S3Settings, S3Sink
from recorder.storage.spool import SpoolProgress

HELP = "time a stop (to RECORDING_STOPPED) against uploading the same file after it, on local S3"

log = logging.getLogger(__name__)

DEFAULT_RECORD_S = 300.0  # `recorder bench --record-seconds` (its default is this)
DEFAULT_QUALITY = Quality.HIGH
BUCKET = "stop-latency-bench"
MOTO_START_TIMEOUT_S = 30.0
STARTED_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05
BYTES_PER_MIB = 1024 * 1024


class BenchRoomConnector(RoomConnector):
    """A room without a network: the bench's participants are present at the join and publish
    paced tracks, drained by `TrackConsumer`s into the recording's sink as a live connector's."""

    def __init__(
        self, sources: list[CyclingCamera], sink: FrameSink, *, clock: MonotonicNow
    ) -> None:
        super().__init__(sink, clock=clock)
        self._sources = sources
        self._consumers: list[TrackConsumer] = []

    async def join(self) -> None:
        for number, source in enumerate(self._sources, start=1):
            pid = f"p{number}"
            await self._emit(ParticipantJoined(pid, source.name, at_s=self._clock()))
            for kind, track in paced_tracks(source).items():
                consumer = TrackConsumer(track, feed_id(pid, kind), self._sink, clock=self._clock)
                consumer.start()
                self._consumers.append(consumer)
                await self._emit(TrackPublished(pid, kind, track, at_s=self._clock()))

    async def announce_status(
        self, status: Status, *, recording_id: str, reason: dict[str, object] | None = None
    ) -> None:
        log.debug("bench room: recording %s is %s", recording_id, status)

    async def close(self) -> None:
        for consumer in self._consumers:
            consumer.track.stop()
            await consumer.stop()
        self._close_events()


@dataclass(slots=True)
class StopLatencyResult:
    quality: str
    recorded_s: float  # the file's duration
    file_bytes: int
    parts: int
    stored_before_stop_bytes: int  # already at the final place when the stop was asked
    stop_to_stopped_s: float  # the stop request to RECORDING_STOPPED
    media_close_s: float  # of which: the media thread stopping, the encoder's flush
    upload_after_stop_s: float  # the same file, uploaded whole after the stop
    late_ticks: int  # frames the live media thread skipped (a busy machine)
    media_summary: str  # the media engine's counters and time per stage

    @property
    def ratio(self) -> float:
        return self.stop_to_stopped_s / self.upload_after_stop_s

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 in its own process on 127.0.0.1 (so it does not share this one's CPU and GIL);
    its endpoint URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + MOTO_START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the local S3 server (moto) did not start")
            time.sleep(POLL_INTERVAL_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()


def _use_store(endpoint: str) -> None:
    """Point this process's S3 configuration (boto3 reads it from the environment) at moto."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
        RECORDER_S3_BUCKET=BUCKET,
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "RECORDER_S3_PART_SIZE_BYTES"):
        os.environ.pop(name, None)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)


async def _measure(quality: Quality, record_s: float, workdir: Path) -> StopLatencyResult:
    sources = [CyclingCamera(number, TEXTURED) for number in range(1, PARTICIPANTS + 1)]
    job = validate_job(
        {
            "recordingId": f"stop-latency-{quality}",
            "awsDirPath": "bench",
            "config": {"quality": str(quality)},
            "room": {"connector": "loopback", "url": "bench://in-process", "roomId": "bench"},
            "limits": {"emptyRoomTimeoutSec": 0},
        }
    )

    def connector(room: RoomConfig, sink: FrameSink, clock: MonotonicNow) -> RoomConnector:
        return BenchRoomConnector(sources, sink, clock=clock)

    options = RecordingOptions(spool_dir=workdir / "spool", connector_factory=connector)
    recording = Recording(job, options)
    reached: dict[Status, float] = {}

    def note(transition: Transition) -> None:
        reached.setdefault(transition.status, time.monotonic())

    recording.lifecycle.add_listener(note)
    running = asyncio.create_task(recording.run(), name="bench recording")
    deadline = time.monotonic() + STARTED_TIMEOUT_S
    while Status.STARTED not in reached:
        if running.done() or time.monotonic() > deadline:
            raise RuntimeError(f"the recording did not start: {recording.summary()}")
        await asyncio.sleep(POLL_INTERVAL_S)
    print(f"stop-latency: recording {record_s:g} s at {quality}...", file=sys.stderr, flush=True)
    await asyncio.sleep(record_s)  # the recording's length: what it is made of
    stored_before = recording.progress.stored_bytes
    asked = time.monotonic()
    recording.request_stop(StopReason.CONTROL)
    await running
    delivered = recording.delivered
    if Status.STOPPED not in reached or delivered is None:
        raise RuntimeError(f"the recording did not stop cleanly: {recording.summary()}")
    stop_to_stopped_s = reached[Status.STOPPED] - asked
    engine = recording.engine
    media_close_s = engine.stats.close_s if engine is not None else 0.0

    # The same bytes, uploaded whole after the stop by the same sink.
    again = workdir / "again.mp4"
    client = boto3.client("s3")
    await asyncio.to_thread(client.download_file, BUCKET, delivered.media.key, str(again))
    sink = S3Sink(S3Settings.from_env())
    started = time.monotonic()
    await sink.store_spool(
        again,
        SpoolProgress.complete(again.stat().st_size),
        "bench/uploaded-after-the-stop.mp4",
        content_type=delivered.media.content_type,
    )
    upload_after_stop_s = time.monotonic() - started
    size = delivered.media.size_bytes
    return StopLatencyResult(
        quality=str(quality),
        recorded_s=float(delivered.manifest_document.get("durationS") or 0.0),
        file_bytes=size,
        parts=-(-size // PART_SIZE_BYTES),
        stored_before_stop_bytes=stored_before,
        stop_to_stopped_s=stop_to_stopped_s,
        media_close_s=media_close_s,
        upload_after_stop_s=upload_after_stop_s,
        late_ticks=engine.stats.skipped if engine is not None else 0,
        media_summary=engine.stats.summary() if engine is not None else "",
    )


def run(args: argparse.Namespace) -> dict[str, object]:
    """One recording of `--record-seconds` at the first `--quality` (default high)."""
    quality = (args.quality or [DEFAULT_QUALITY])[0]
    record_s = float(getattr(args, "record_seconds", DEFAULT_RECORD_S))
    if record_s <= 0:
        raise ValueError("--record-seconds must be positive")
    with tempfile.TemporaryDirectory(prefix="recorder-bench-stop-") as folder, moto_server() as s3:
        _use_store(s3)
        result = asyncio.run(_measure(quality, record_s, Path(folder)))
    return {
        "room": f"{PARTICIPANTS} participants, textured 720p cameras, GRID, fed in-process",
        "store": "moto S3 in its own process on 127.0.0.1",
        "part_size_bytes": PART_SIZE_BYTES,
        "result": result.as_dict(),
    }


def format_table(report: dict[str, Any]) -> str:
    """The report for a terminal."""
    r = report["result"]
    mib = r["file_bytes"] / BYTES_PER_MIB
    stored = r["stored_before_stop_bytes"] / BYTES_PER_MIB
    return "\n".join(
        [
            f"stop-latency: {report['room']}; {report['store']}",
            f"  {r['quality']}: {r['recorded_s']:.1f} s recorded, {mib:.1f} MiB in {r['parts']} "
            f"parts, {stored:.1f} MiB stored before the stop; {r['late_ticks']} late ticks",
            f"  stop -> RECORDING_STOPPED: {r['stop_to_stopped_s']:.3f} s "
            f"(media thread and file close {r['media_close_s']:.3f} s)",
            f"  the same file uploaded after the stop: {r['upload_after_stop_s']:.3f} s",
            f"  ratio (stop latency / upload after the stop): {r['ratio']:.3f}",
            f"  media: {r['media_summary']}",
        ]
    )
