"""Track consumers: every frame of an accepted track reaches the sink, whatever is downstream."""

from __future__ import annotations

import asyncio
import itertools
from fractions import Fraction

import av
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from test_room_helpers import EVENT_TIMEOUT_S, CountingSink, audio_frames

from recorder.rooms.consumer import TrackConsumer


class FiniteTrack(MediaStreamTrack):
    """`count` frames as fast as they are read, then the end (a closed peer connection)."""

    def __init__(self, kind: str, count: int) -> None:
        super().__init__()
        self.kind = kind
        self._left = count
        self._audio = audio_frames(440.0)
        self._pts = itertools.count()

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        if self._left == 0:
            raise MediaStreamError
        self._left -= 1
        if self.kind == "audio":
            return next(self._audio)
        frame = av.VideoFrame(16, 16, "rgb24")
        frame.pts, frame.time_base = next(self._pts), Fraction(1, 30)
        return frame


class EndlessTrack(MediaStreamTrack):
    """Never sends: a publisher that is muted forever."""

    kind = "video"

    async def recv(self) -> av.VideoFrame:
        await asyncio.Event().wait()
        raise AssertionError("not reached")


class Ticks:
    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        self.value += 0.5
        return self.value


@pytest.mark.parametrize("kind", ["audio", "video"])
async def test_every_frame_reaches_the_sink_with_its_arrival_time(kind: str) -> None:
    sink = CountingSink()
    consumer = TrackConsumer(FiniteTrack(kind, 40), "p1/x", sink, clock=Ticks())
    consumer.start()
    await asyncio.wait_for(consumer.wait_ended(), EVENT_TIMEOUT_S)
    assert sink.frames["p1/x"] == 40
    assert sink.arrivals["p1/x"] == [0.5 * (i + 1) for i in range(40)]
    assert sink.ended == ["p1/x"]
    assert consumer.stats.frames == 40
    assert consumer.stats.frame_rate() == pytest.approx(2.0)
    assert not consumer.running


async def test_a_sink_that_raises_does_not_stop_the_draining() -> None:
    class Refusing(CountingSink):
        def push_video(self, feed_id: str, frame: av.VideoFrame, arrival_s: float) -> None:
            super().push_video(feed_id, frame, arrival_s)
            if self.frames[feed_id] % 2:
                raise RuntimeError("downstream bug")

    sink = Refusing()
    consumer = TrackConsumer(FiniteTrack("video", 10), "p1/camera", sink)
    consumer.start()
    await asyncio.wait_for(consumer.wait_ended(), EVENT_TIMEOUT_S)
    assert sink.frames["p1/camera"] == 10
    assert consumer.stats.sink_errors == 5


async def test_stop_is_bounded_and_ends_the_feed() -> None:
    sink = CountingSink()
    consumer = TrackConsumer(EndlessTrack(), "p2/camera", sink)
    consumer.start()
    await asyncio.sleep(0)
    assert consumer.running
    await consumer.stop(timeout_s=1.0)
    assert not consumer.running
    assert sink.ended == ["p2/camera"]
    await consumer.stop()  # idempotent
