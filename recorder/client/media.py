"""Publishing generated media: a stream of timestamped frames as a live aiortc track.

Test participants publish the project's synthetic sources (`recorder/testing/`), which yield
`av.VideoFrame`/`av.AudioFrame`s with pts and time base for as long as asked. `PacedTrack` releases
each frame when its time comes on a monotonic clock, as a camera or microphone would. When nobody
has read it for a while (the microphone was muted, the camera was off: the sender sent nothing),
it re-anchors instead of catching up, so it never bursts; its output timestamps follow the wall
clock across such pauses, so the receiver sees a gap in time, not a jump back. A process too busy
to keep real time looks the same to it (it is read late): each such re-anchor moves that track's
timestamps ahead on their own (`PacedTrack.shift_s`), which shifts the sender's own lip-sync, so
benches count them (`resyncs`) and what the senders took (`SwitchableTrack.sent`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from recorder.rooms.base import MonotonicNow, TrackKind

if TYPE_CHECKING:
    from recorder.testing.sources import ParticipantSource

RESYNC_AFTER_S = 0.25  # later than this behind schedule: re-anchor rather than burst

Frame = av.VideoFrame | av.AudioFrame
Sleep = Callable[[float], Awaitable[None]]


class PacedTrack(MediaStreamTrack):
    """A live track that sends `frames` in real time; it ends when they do."""

    def __init__(
        self,
        kind: str,
        frames: Iterator[Frame],
        *,
        clock: MonotonicNow = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._frames = frames
        self._clock = clock
        self._sleep = sleep
        self._anchor_s: float | None = None  # clock time of source time 0
        self._shift_s = 0.0  # how far output time is ahead of source time (pauses)
        self.resyncs = 0

    @property
    def shift_s(self) -> float:
        """How far the re-anchors moved this track's timestamps ahead of its source's, so far."""
        return self._shift_s

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            frame = next(self._frames)
        except StopIteration:
            self.stop()
            raise MediaStreamError from None
        if frame.pts is None or frame.time_base is None:
            raise ValueError("a paced source must give frames with pts and time_base")
        time_base: Fraction = frame.time_base
        source_s = float(frame.pts * time_base)
        now = self._clock()
        if self._anchor_s is None:
            self._anchor_s = now - source_s
        due_s = self._anchor_s + self._shift_s + source_s
        if now - due_s > RESYNC_AFTER_S:
            self._shift_s += now - due_s
            due_s = now
            self.resyncs += 1
        if due_s > now:
            await self._sleep(due_s - now)
        frame.pts += round(self._shift_s / time_base)
        return frame


@dataclass(frozen=True, slots=True)
class SendStats:
    """Frames a sender took from its track, and when it took the first and the last
    (`time.monotonic`); None before the first."""

    frames: int = 0
    first_s: float | None = None
    last_s: float | None = None

    def merged(self, other: SendStats) -> SendStats:
        """Both periods' frames, from the earlier first to the later last."""
        firsts = [t for t in (self.first_s, other.first_s) if t is not None]
        lasts = [t for t in (self.last_s, other.last_s) if t is not None]
        return SendStats(
            self.frames + other.frames,
            min(firsts) if firsts else None,
            max(lasts) if lasts else None,
        )


def paced_tracks(source: ParticipantSource) -> dict[TrackKind, PacedTrack]:
    """A test participant's (`recorder.testing`) audio and camera as live tracks, with no end."""
    tracks: dict[TrackKind, PacedTrack] = {}
    if source.audio_format is not None:
        tracks[TrackKind.AUDIO] = PacedTrack("audio", source.audio_frames())
    if source.video_format is not None:
        tracks[TrackKind.CAMERA] = PacedTrack("video", source.video_frames())
    return tracks


class SwitchableTrack(MediaStreamTrack):
    """What one sender sends: a source that can be switched at any moment, or nothing.

    A sender's track is this, set once; publishing, muting or stopping a share switches its
    source. A sender blocked in `recv()` on a source that was switched away (`replaceTrack` alone
    leaves it waiting on the old track forever when that track is a relay proxy that was stopped)
    is released at once, and with no source `recv()` simply waits, so nothing is sent.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._source: MediaStreamTrack | None = None
        self._switched = asyncio.Event()
        self.sent = SendStats()  # what the sender (its encoder) took: one frame per `recv`

    def switch(self, source: MediaStreamTrack | None) -> None:
        """Send `source` from now on (None: nothing)."""
        self._source = source
        self._switched.set()

    async def recv(self) -> Frame:
        while self.readyState == "live":
            source = self._source
            self._switched.clear()
            if source is None:
                await self._switched.wait()
                continue
            reading = asyncio.ensure_future(source.recv())
            switching = asyncio.ensure_future(self._switched.wait())
            try:
                await asyncio.wait({reading, switching}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                switching.cancel()
                if not reading.done():
                    reading.cancel()
            if reading.done() and not reading.cancelled():
                try:
                    frame = reading.result()
                except MediaStreamError:
                    if self._source is source:
                        self._source = None  # the source ended: send nothing until switched
                    continue
                now = time.monotonic()
                first_s = now if self.sent.first_s is None else self.sent.first_s
                self.sent = SendStats(self.sent.frames + 1, first_s, now)
                return frame
        raise MediaStreamError
