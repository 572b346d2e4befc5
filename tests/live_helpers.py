"""Helpers for the live end-to-end tests: a real room, real publishers, the real worker process.

The tests record the embedded room through `startRecording`/`stopRecording`, with the worker the
control service launches (`python -m recorder run -`), and check the file with the content checker
(`recorder.inspect`). Helpers here: publishing the project's synthetic participants, every
participant's statuses with the time each arrived, the layout's expected tiles (computed with the
layouts package's own `select` and `arrange`), mapping wall-clock moments to file time through the
manifest's `startedAt`, and sampling the decoded file at chosen times.

Run as a script, `publisher URL NAME INDEX` is a participant in its own process that publishes
synthetic participant INDEX (camera and tone), prints `READY <participant id>`, and then waits to
be stopped or killed: the publisher that vanishes without a goodbye.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import av
import numpy as np

from layouts.geometry import arrange
from layouts.model import LayoutSpec, LayoutType, ParticipantView, Rect, Size
from layouts.selection import Selection, select
from recorder.client import RecordingState, RoomParticipant, join
from recorder.client.media import paced_tracks
from recorder.inspect import iter_video_frames, region_colour
from recorder.lifecycle import Status
from recorder.rooms.base import TrackKind, feed_id
from recorder.testing.sources import (
    AudioFormat,
    ParticipantSource,
    Sound,
    VideoFormat,
    synthetic_participant,
)
from recorder.testing.video import nearest_participant

# Small cameras at 30 fps: the canvas, not the sources, is what the recording's cost follows, and
# the clapper's 0.1 s flash needs 30 fps to be three frames long.
LIVE_CAMERA = VideoFormat(320, 180, 30)
MICROPHONE = AudioFormat()
STATUS_ORDER = [Status.STARTING, Status.STARTED, Status.STOPPING, Status.STOPPED]
# Launching the worker (a Python process: imports, joining, the first frame in the file) on two
# shared cores; the contract's own target is 1.5 s on an idle machine.
STARTED_TIMEOUT_S = 20.0
STOPPED_TIMEOUT_S = 30.0  # closing the file, storing it and the manifest
EVENT_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.02
# A region matches a palette colour at most this far away (the checker's own tolerance).
COLOUR_MATCH_MAX_DISTANCE = 50.0


@dataclass(slots=True)
class SeenStatus:
    status: Status
    wall_s: float  # time.time(): comparable with the manifest's startedAt
    monotonic_s: float


@dataclass(slots=True)
class StatusLog:
    """Every participant's `recordingStateChanged`, as they received them."""

    seen: dict[str, list[SeenStatus]] = field(default_factory=dict)

    def attach(self, participant: RoomParticipant) -> None:
        received = self.seen.setdefault(participant.name, [])

        def on_change(state: RecordingState) -> None:
            received.append(SeenStatus(state.status, time.time(), time.monotonic()))

        participant.on_recording_state_changed = on_change

    def statuses(self, name: str) -> list[Status]:
        return [s.status for s in self.seen[name]]

    def first(self, name: str, status: Status) -> SeenStatus:
        return next(s for s in self.seen[name] if s.status is status)

    def everyone_saw(self, status: Status) -> bool:
        return all(any(s.status is status for s in log) for log in self.seen.values())

    def anyone_saw_final(self) -> bool:
        return any(s.status.is_final for log in self.seen.values() for s in log)


async def until(predicate: Callable[[], bool], timeout_s: float = EVENT_TIMEOUT_S) -> None:
    """Wait until `predicate()` holds, polling; `TimeoutError` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(POLL_INTERVAL_S)


async def recording_time(seconds: float, log: StatusLog) -> None:
    """Let the recording run for `seconds` of wall time (inherent: live media takes its time);
    returns early, so the test fails at once, if the recording ends by itself."""
    with_end = time.monotonic() + seconds
    while time.monotonic() < with_end:
        if log.anyone_saw_final():
            raise AssertionError(f"the recording ended early: {log.seen}")
        await asyncio.sleep(min(POLL_INTERVAL_S * 5, max(0.0, with_end - time.monotonic())))


async def join_publishing(url: str, source: ParticipantSource) -> RoomParticipant:
    """A participant named after `source`, publishing its camera and microphone."""
    participant = await join(url, source.name)
    for kind, track in paced_tracks(source).items():
        await participant.publish(kind, track)
    return participant


def tone_participant(index: int, name: str, camera: VideoFormat = LIVE_CAMERA) -> ParticipantSource:
    """Palette colour `index` on camera, a steady tone of its own on the microphone."""
    return synthetic_participant(index, name, camera, MICROPHONE, sound=Sound.TONE)


def camera_feed(participant_id: str) -> str:
    return feed_id(participant_id, TrackKind.CAMERA)


# --- the layout the recording should show ------------------------------------------------------


class LayoutReplay:
    """The layouts package's own selection, replayed over the room's states, for expected tiles.

    Feeds are given in join order; the recording's selection is stable (a feed keeps its slot),
    so the expected tiles of a state depend on the states before it: replay them in order.
    """

    def __init__(self, spec: LayoutSpec, canvas: Size) -> None:
        self.spec = spec
        self.canvas = canvas
        self._previous: Selection | None = None
        self._now = 0.0

    def tiles(self, feeds: Sequence[ParticipantView]) -> dict[str, Rect]:
        """The next state's tiles by feed id."""
        self._now += 1.0
        self._previous = select(self._previous, feeds, self.spec, self._now)
        tiles = arrange(self._previous, feeds, self.spec.type, self.canvas)
        return {tile.feed_id: tile.rect for tile in tiles}


def views(
    feed_ids: Sequence[str], *, screens: dict[str, str] | None = None
) -> list[ParticipantView]:
    """Cameras in join order (and screen shares: share feed id -> presenter's camera feed)."""
    result = [ParticipantView(id=f, name=f, joined_at=float(i)) for i, f in enumerate(feed_ids)]
    for i, (share, presenter) in enumerate((screens or {}).items()):
        result.append(
            ParticipantView(id=share, name=share, joined_at=len(feed_ids) + i, screen_of=presenter)
        )
    return result


def grid(canvas: Size) -> LayoutReplay:
    return LayoutReplay(LayoutSpec(type=LayoutType.GRID), canvas)


# --- the file --------------------------------------------------------------------------------


def manifest_of(media: Path) -> dict[str, object]:
    return json.loads(media.with_suffix(".json").read_text(encoding="utf-8"))


def file_time(manifest: dict[str, object], wall_s: float) -> float:
    """Where a wall-clock moment (time.time()) falls in the file: seconds after its first frame."""
    started = datetime.fromisoformat(str(manifest["startedAt"]))
    return wall_s - started.timestamp()


def frames_at(path: Path, times_s: Sequence[float]) -> dict[float, av.VideoFrame]:
    """For each time, the first decoded frame at or after it (times past the end are left out)."""
    wanted = sorted(times_s)
    found: dict[float, av.VideoFrame] = {}
    index = 0
    for frame in iter_video_frames(path):
        time_s = float(frame.time) if frame.time is not None else 0.0
        while index < len(wanted) and wanted[index] <= time_s + 1e-6:
            found[wanted[index]] = frame
            index += 1
        if index == len(wanted):
            break
    return found


def seen_in(frame: av.VideoFrame, rect: Rect) -> int | None:
    """The palette index whose colour fills the inner part of `rect`, if any."""
    return nearest_participant(region_colour(frame, rect), COLOUR_MATCH_MAX_DISTANCE)


def shows_colour(
    frame: av.VideoFrame, rect: Rect, rgb: tuple[int, int, int], within: float
) -> bool:
    """Whether the inner part of `rect` is `rgb` (median, Euclidean distance at most `within`)."""
    measured = region_colour(frame, rect)
    return math.dist(measured, rgb) <= within


def tone_amplitude(
    samples: np.ndarray, start_s: float, rate: int, frequency_hz: float, span_s: tuple[float, float]
) -> float:
    """The amplitude of one frequency in the mix over a span of file time (a one-bin DFT over
    whole periods, so the other participants' tones, 150 Hz apart, cancel out)."""
    mono = samples.mean(axis=0, dtype=np.float64)
    first = max(0, round((span_s[0] - start_s) * rate))
    periods = math.floor((span_s[1] - span_s[0]) * frequency_hz)
    count = min(round(periods * rate / frequency_hz), mono.size - first)
    if count <= 0:
        return 0.0
    chunk = mono[first : first + count]
    n = np.arange(first, first + count)
    return float(2.0 * np.abs(np.mean(chunk * np.exp(-2j * np.pi * frequency_hz * n / rate))))


# --- a publisher in its own process ----------------------------------------------------------


async def spawn_publisher(
    url: str, name: str, index: int
) -> tuple[asyncio.subprocess.Process, str]:
    """This module as a publishing participant in its own process; `(process, participant id)`
    once it has joined and published."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "publisher", url, name, str(index),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    if process.stdout is None:
        raise RuntimeError("the publisher's standard output is not a pipe")
    line = await asyncio.wait_for(process.stdout.readline(), STARTED_TIMEOUT_S)
    words = line.decode().split()
    if len(words) != 2 or words[0] != "READY":
        process.kill()
        await process.wait()
        raise RuntimeError(f"the publisher did not start: {line!r}")
    return process, words[1]


async def _publisher(url: str, name: str, index: int) -> None:
    participant = await join_publishing(url, tone_participant(index, name))
    print("READY", participant.id, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] != "publisher":
        sys.exit(f"unknown mode {sys.argv[1]!r}")
    asyncio.run(_publisher(sys.argv[2], sys.argv[3], int(sys.argv[4])))
