"""Draining a received track into the frame sink, always, whether its tile is visible or not.

aiortc decodes each received track on its own thread and queues every decoded frame for `recv()`
in an unbounded queue (aiortc issue 554): a track nobody reads grows without limit. So every track
a connector accepts gets one `TrackConsumer` from the moment it arrives until it ends, and the
bounding (latest frame, bounded audio buffer) happens in the sink, which never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from recorder.rooms.base import FrameSink, MonotonicNow

log = logging.getLogger(__name__)

CONSUMER_STOP_TIMEOUT_S = 2.0  # a cancelled recv() returns at once; this bounds a stuck sink


@dataclass(slots=True)
class FeedStats:
    """What one consumer received: summarised in the run's last log line and checked by tests."""

    frames: int = 0
    first_arrival_s: float | None = None
    last_arrival_s: float | None = None
    sink_errors: int = 0

    def frame_rate(self) -> float:
        """Frames per second between the first and the last frame (0 with fewer than two)."""
        if self.first_arrival_s is None or self.last_arrival_s is None or self.frames < 2:
            return 0.0
        span_s = self.last_arrival_s - self.first_arrival_s
        return (self.frames - 1) / span_s if span_s > 0 else 0.0


class TrackConsumer:
    """One named task that loops on `track.recv()` and hands each frame to the sink.

    It ends by itself when the track ends (its peer connection closed), or when `stop()` cancels
    it. A sink that raises is logged and counted, and draining goes on: a bug downstream must not
    turn into an unbounded queue upstream.
    """

    def __init__(
        self,
        track: MediaStreamTrack,
        feed_id: str,
        sink: FrameSink,
        *,
        clock: MonotonicNow = time.monotonic,
        stats: FeedStats | None = None,
    ) -> None:
        """`stats` lets a feed whose track is replaced (a reconnected publisher) keep counting."""
        self.track = track
        self.feed_id = feed_id
        self.stats = FeedStats() if stats is None else stats
        self._sink = sink
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start draining; call once, right when the track is received."""
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"drain {self.feed_id}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_ended(self) -> None:
        """Wait until the track has ended and the consumer stopped (bound it with a timeout)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self, timeout_s: float = CONSUMER_STOP_TIMEOUT_S) -> None:
        """Cancel the drain and wait for it, at most `timeout_s`; idempotent."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        if not task.done():
            log.warning("feed %s: the drain did not stop within %.1f s", self.feed_id, timeout_s)

    async def _drain(self) -> None:
        push = self._sink.push_audio if self.track.kind == "audio" else self._sink.push_video
        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    break
                arrival_s = self._clock()
                stats = self.stats
                stats.frames += 1
                if stats.first_arrival_s is None:
                    stats.first_arrival_s = arrival_s
                stats.last_arrival_s = arrival_s
                try:
                    push(self.feed_id, frame, arrival_s)  # type: ignore[arg-type]
                except Exception:
                    stats.sink_errors += 1
                    if stats.sink_errors == 1:
                        log.exception(
                            "feed %s: the sink refused a frame; draining goes on", self.feed_id
                        )
        finally:
            try:
                self._sink.end_feed(self.feed_id)
            except Exception:
                log.exception("feed %s: the sink failed to end the feed", self.feed_id)
            log.debug("feed %s: drained %d frames", self.feed_id, self.stats.frames)
