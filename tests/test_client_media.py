"""Publishing generated frames: real-time pacing without bursts, and switchable sender sources."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from test_room_helpers import EVENT_TIMEOUT_S, audio_frames, video_frames

from recorder.client.media import RESYNC_AFTER_S, PacedTrack, SendStats, SwitchableTrack


class FakeTime:
    """A clock whose sleeps advance it, so pacing is checked exactly and instantly."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_s += seconds


async def test_frames_are_released_at_their_time() -> None:
    fake = FakeTime()
    track = PacedTrack("video", video_frames((1, 2, 3), fps=10), clock=fake, sleep=fake.sleep)
    released = []
    for _ in range(5):
        frame = await track.recv()
        released.append((fake.now_s, frame.pts))
    assert [round(t - 100.0, 6) for t, _ in released] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert [pts for _, pts in released] == [0, 1, 2, 3, 4]


async def test_a_pause_reanchors_without_a_burst_and_shifts_timestamps() -> None:
    fake = FakeTime()
    track = PacedTrack("audio", audio_frames(440.0), clock=fake, sleep=fake.sleep)
    first = await track.recv()
    second = await track.recv()  # 20 ms later
    assert second.pts - first.pts == 960
    fake.now_s += 5.0  # nobody read it for 5 s (muted)
    resumed = await track.recv()
    next_one = await track.recv()
    assert track.resyncs == 1
    assert track.shift_s == pytest.approx(5.0 - 0.02)  # how far its timestamps moved ahead
    # Released at once, then paced again: no catching up on the 5 s missed.
    assert fake.slept[-1] == pytest.approx(0.02)
    # Its timestamps follow the wall clock across the pause, and stay contiguous after it.
    gap_s = float((resumed.pts - second.pts) * resumed.time_base)
    assert gap_s == pytest.approx(5.0, abs=0.03)
    assert next_one.pts - resumed.pts == 960


async def test_small_lateness_is_absorbed_not_reanchored() -> None:
    fake = FakeTime()
    track = PacedTrack("video", video_frames((0, 0, 0), fps=10), clock=fake, sleep=fake.sleep)
    await track.recv()
    fake.now_s += RESYNC_AFTER_S / 2  # a busy loop, not a pause
    frame = await track.recv()
    assert track.resyncs == 0 and frame.pts == 1


async def test_the_track_ends_with_its_frames() -> None:
    def three_frames():
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 1000)
            yield frame

    fake = FakeTime()
    track = PacedTrack("video", three_frames(), clock=fake, sleep=fake.sleep)
    for _ in range(3):
        await track.recv()
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert track.readyState == "ended"


class Source(MediaStreamTrack):
    """Frames only when the test puts them: a source that can block forever."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.VideoFrame] = asyncio.Queue()

    async def recv(self) -> av.VideoFrame:
        return await self.queue.get()

    def put(self, pts: int) -> None:
        frame = av.VideoFrame(8, 8, "rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        self.queue.put_nowait(frame)


async def test_a_switch_releases_a_reader_blocked_on_the_old_source() -> None:
    old, new = Source(), Source()
    output = SwitchableTrack("video")
    output.switch(old)
    reading = asyncio.ensure_future(output.recv())
    await asyncio.sleep(0)  # the reader now waits on `old`, which never sends
    output.switch(new)
    new.put(7)
    frame = await asyncio.wait_for(reading, EVENT_TIMEOUT_S)
    assert frame.pts == 7
    old.put(1)  # the old source is no longer read
    new.put(8)
    assert (await asyncio.wait_for(output.recv(), EVENT_TIMEOUT_S)).pts == 8


async def test_with_no_source_nothing_is_sent_until_one_is_switched_in() -> None:
    source = Source()
    output = SwitchableTrack("video")
    reading = asyncio.ensure_future(output.recv())
    source.put(3)
    await asyncio.sleep(0)
    assert not reading.done()
    output.switch(source)
    assert (await asyncio.wait_for(reading, EVENT_TIMEOUT_S)).pts == 3
    output.stop()
    with pytest.raises(MediaStreamError):
        await output.recv()


async def test_what_the_sender_took_is_counted_with_its_first_and_last_time() -> None:
    """A bench compares these with real time: did the sender keep up."""
    source = Source()
    output = SwitchableTrack("video")
    assert output.sent == SendStats()
    output.switch(source)
    for pts in (1, 2, 3):
        source.put(pts)
        await asyncio.wait_for(output.recv(), EVENT_TIMEOUT_S)
    sent = output.sent
    assert sent.frames == 3
    assert sent.first_s is not None and sent.last_s is not None
    assert sent.first_s <= sent.last_s


def test_send_stats_of_two_periods_merge() -> None:
    first, second = SendStats(10, 5.0, 6.0), SendStats(4, 8.0, 9.0)
    assert first.merged(second) == SendStats(14, 5.0, 9.0)
    assert SendStats().merged(first) == first
