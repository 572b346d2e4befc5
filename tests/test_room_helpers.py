"""Helpers for the embedded room's tests, and the processes they launch.

Run as a script, this module is either a stand-in worker (`worker REPORT_PATH [crash]`: what the
control service launches instead of `recorder run` in these tests, a real process that reads the
job from standard input, joins hidden with the loopback connector and announces statuses) or a
publishing participant (`participant URL NAME`) that a test kills without a goodbye.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from recorder.client.media import PacedTrack
from recorder.rooms.base import RoomConnector, RoomEvent

EVENT_TIMEOUT_S = 10.0  # generous for 2 shared cores; every wait is bounded by it
POLL_INTERVAL_S = 0.02
TEST_VIDEO_SIZE = (160, 120)  # small: the tests check presence, rate and colour, not detail
TEST_FPS = 15
AUDIO_RATE_HZ = 48_000
AUDIO_FRAME_SAMPLES = 960  # 20 ms


def video_frames(rgb: tuple[int, int, int], fps: int = TEST_FPS) -> Iterator[av.VideoFrame]:
    """Endless solid frames of one colour, stamped at 1/fps: each feed is told apart by colour."""
    width, height = TEST_VIDEO_SIZE
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = rgb
    index = 0
    while True:
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = index, Fraction(1, fps)
        yield frame
        index += 1


def audio_frames(frequency_hz: float) -> Iterator[av.AudioFrame]:
    """An endless mono tone in 20 ms frames of s16 at 48 kHz."""
    index = 0
    while True:
        t = (np.arange(AUDIO_FRAME_SAMPLES) + index * AUDIO_FRAME_SAMPLES) / AUDIO_RATE_HZ
        samples = (0.3 * 32767 * np.sin(2 * np.pi * frequency_hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE_HZ
        frame.pts, frame.time_base = index * AUDIO_FRAME_SAMPLES, Fraction(1, AUDIO_RATE_HZ)
        yield frame
        index += 1


def camera(rgb: tuple[int, int, int]) -> PacedTrack:
    return PacedTrack("video", video_frames(rgb))


def microphone(frequency_hz: float) -> PacedTrack:
    return PacedTrack("audio", audio_frames(frequency_hz))


async def until(predicate: Callable[[], bool], timeout_s: float = EVENT_TIMEOUT_S) -> None:
    """Wait until `predicate()` holds, polling; `TimeoutError` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(POLL_INTERVAL_S)


class EventLog:
    """Reads a connector's events and keeps them, so tests can wait for one and look back."""

    def __init__(self, connector: RoomConnector) -> None:
        self.connector = connector
        self.events: list[RoomEvent] = []

    async def wait_for(
        self,
        kind: type,
        predicate: Callable[[RoomEvent], bool] = lambda _event: True,
        timeout_s: float = EVENT_TIMEOUT_S,
    ) -> RoomEvent:
        """The first event (already read or next) of `kind` that satisfies `predicate`."""
        for event in self.events:
            if isinstance(event, kind) and predicate(event):
                return event
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            event = await asyncio.wait_for(self.connector.next_event(), max(remaining, 0.001))
            self.events.append(event)
            if isinstance(event, kind) and predicate(event):
                return event


class CountingSink:
    """A frame sink that counts frames per feed and keeps each video feed's last mean colour."""

    def __init__(self) -> None:
        self.frames: collections.Counter[str] = collections.Counter()
        self.arrivals: dict[str, list[float]] = collections.defaultdict(list)
        self.colors: dict[str, np.ndarray] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        self.ended: list[str] = []

    def push_video(self, feed_id: str, frame: av.VideoFrame, arrival_s: float) -> None:
        self.frames[feed_id] += 1
        self.arrivals[feed_id].append(arrival_s)
        self.sizes[feed_id] = (frame.width, frame.height)
        self.colors[feed_id] = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)

    def push_audio(self, feed_id: str, frame: av.AudioFrame, arrival_s: float) -> None:
        self.frames[feed_id] += 1
        self.arrivals[feed_id].append(arrival_s)

    def end_feed(self, feed_id: str) -> None:
        self.ended.append(feed_id)

    def rate_since(self, feed_id: str, since_s: float) -> float:
        """Frames per second that arrived for a feed after `since_s` (the sink's clock)."""
        arrivals = [t for t in self.arrivals[feed_id] if t >= since_s]
        if len(arrivals) < 2:
            return 0.0
        return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


# --- processes -----------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.write_text(text)


async def _stand_in_worker(report_path: str, crash: bool) -> int:
    """Join hidden as the job says, announce statuses, stop on SIGTERM or when the room ends."""
    from recorder.job import load_job
    from recorder.lifecycle import Status
    from recorder.rooms import connector_for
    from recorder.rooms.base import RoomEnded

    job = load_job("-")
    _write(Path(report_path), job.to_canonical_json(include_secrets=True))
    connector = connector_for(job.room, CountingSink())
    await connector.join()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def until_room_ends() -> None:
        while not isinstance(await connector.next_event(), RoomEnded):
            pass
        stop.set()

    watcher = asyncio.create_task(until_room_ends(), name="stand-in: room events")
    rid = job.recording_id
    await connector.announce_status(Status.STARTING, recording_id=rid)
    await connector.announce_status(Status.STARTED, recording_id=rid)
    if crash:
        return 70  # exits without a final status, as a crashed worker would
    await stop.wait()
    watcher.cancel()
    await connector.announce_status(Status.STOPPING, recording_id=rid)
    await connector.announce_status(Status.STOPPED, recording_id=rid)
    await connector.close()
    return 0


async def _publishing_participant(url: str, name: str) -> None:
    """Join, publish a camera and a microphone, print READY, then wait to be killed."""
    from recorder.client import join
    from recorder.rooms.base import TrackKind

    participant = await join(url, name)
    await participant.publish(TrackKind.CAMERA, camera((0, 0, 255)))
    await participant.publish(TrackKind.AUDIO, microphone(660.0))
    print("READY", participant.id, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "worker":
        sys.exit(asyncio.run(_stand_in_worker(sys.argv[2], crash="crash" in sys.argv[3:])))
    elif mode == "participant":
        asyncio.run(_publishing_participant(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown mode {mode!r}")
