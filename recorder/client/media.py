"""Publishing generated media: a stream of timestamped frames as a live aiortc track.

Test participants publish the project's synthetic sources (`recorder/testing/`), which yield
`av.VideoFrame`/`av.AudioFrame`s with pts and time base for as long as asked. `PacedTrack` releases
each frame when its time comes on a monotonic clock, as a camera or microphone would. When nobody
has read it for a while (the microphone was muted, the camera was off: the sender sent nothing),
it re-anchors instead of catching up, so it never bursts; its output timestamps follow the wall
clock across such pauses, so the receiver sees a gap in time, not a jump back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from recorder.rooms.base import Clock

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
        clock: Clock = time.monotonic,
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
