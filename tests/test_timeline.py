"""The recording clock and the timeline: where frames land, what each tick shows and hears.

Every test runs on a `ManualClock`: arrival times are given explicitly, so jitter, stalls and late
joiners are exact and nothing sleeps.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.media.clock import ManualClock, MonotonicClock, RecordingClock
from recorder.media.timeline import (
    AUDIO_SNAP_TOLERANCE_S,
    LATE_REANCHOR_AFTER_S,
    PLAYOUT_DELAY_S,
    REANCHOR_THRESHOLD_S,
    VIDEO_STALE_AFTER_S,
    AudioFeed,
    Picture,
    PlayoutSettings,
    Timeline,
    VideoFeed,
    _AudioRing,
)
from recorder.testing.audio import Signal, Tone, participant_tone_hz
from recorder.testing.clapper import LUMA_WHITE, clapper_participant
from recorder.testing.sources import AudioFormat, SyntheticParticipant, VideoFormat, audio_frame

FPS = 30
RATE = 48_000
ORIGIN_S = 1000.0  # the clock reading at the first tick: arbitrary, far from zero
RTP_VIDEO_TB = Fraction(1, 90_000)
RTP_START = 3_000_000_000  # RTP timestamps start at a random offset, not 0
# One output tick: the resolution at which a video frame can appear.
TICK_S = 1 / FPS
TICK_SAMPLES = RATE // FPS
# Sample positions: the resampler and rounding may move a span by a sample or two.
SAMPLE_TOLERANCE = 2


def make_timeline(settings_: PlayoutSettings | None = None) -> tuple[ManualClock, Timeline]:
    clock = ManualClock(ORIGIN_S)
    recording_clock = RecordingClock(clock, FPS)
    recording_clock.start()
    return clock, Timeline(recording_clock, settings_)


def numbered_frame(
    number: int, pts: int | None, time_base: Fraction = RTP_VIDEO_TB
) -> av.VideoFrame:
    """A tiny yuv420p frame whose raw luma value is `number`, so a test can tell frames apart."""
    planes = np.full((24, 16), 128, dtype=np.uint8)
    planes[:16] = number % 256
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    frame.pts = pts
    frame.time_base = time_base
    return frame


def number_of(frame: av.VideoFrame | None) -> int | None:
    if frame is None:
        return None
    return int(frame.to_ndarray()[0, 0])  # the raw Y plane


@dataclass
class Run:
    """What the ticks of a `LiveDriver.run` saw and heard."""

    pictures: list[dict[str, Picture]]
    heard: list[dict[str, np.ndarray]]

    def numbers(self, feed_id: str) -> list[int | None]:
        return [number_of(p[feed_id].frame) if feed_id in p else None for p in self.pictures]

    def audio(self, feed_id: str, channel: int = 0) -> np.ndarray:
        """One feed's samples over the whole run, zeros where it was absent."""
        return np.concatenate(
            [h[feed_id][channel] if feed_id in h else np.zeros(TICK_SAMPLES) for h in self.heard]
        )


class LiveDriver:
    """Plays scheduled arrivals against the ticks on the manual clock, as the live system does.

    Before each tick the clock moves to the tick's time and everything that has arrived by then
    is pushed (with its exact arrival time); then the tick reads pictures and its audio span.
    """

    def __init__(self, clock: ManualClock, timeline: Timeline) -> None:
        self.clock, self.timeline = clock, timeline
        self._events: list[tuple[float, int, Callable[[], None]]] = []

    def at(self, time_s: float, action: Callable[[], None]) -> None:
        """Run `action` once the recording time reaches `time_s`."""
        self._events.append((time_s, len(self._events), action))

    def arrive(self, time_s: float, feed: VideoFeed | AudioFeed, frame: av.frame.Frame) -> None:
        """`frame` reaches `feed` at recording time `time_s`."""
        self.at(time_s, lambda: feed.push(frame, arrival_s=ORIGIN_S + time_s))

    def send(
        self, feed: VideoFeed | AudioFeed, frames: Iterable[av.frame.Frame], delay_s: float = 0.0
    ) -> None:
        """Each frame arrives `delay_s` after its own pts time (pts measured from the first)."""
        first: float | None = None
        for frame in frames:
            t = float(frame.pts * frame.time_base)
            first = t if first is None else first
            self.arrive(t - first + delay_s, feed, frame)

    def run(self, ticks: range) -> Run:
        events = sorted(self._events, key=lambda e: (e[0], e[1]))
        index, pictures, heard = 0, [], []
        for tick in ticks:
            now_s = tick / FPS
            self.clock.set(max(self.clock.now(), ORIGIN_S + now_s))
            while index < len(events) and events[index][0] <= now_s + 1e-9:
                events[index][2]()
                index += 1
            pictures.append(self.timeline.pictures(now_s))
            heard.append(self.timeline.read_audio(*self.timeline.recording_clock.audio_span(tick)))
        self._events = [e for e in events[index:]]
        return Run(pictures, heard)


# --- the recording clock ---------------------------------------------------------------


def test_recording_clock_ticks_and_audio_spans() -> None:
    clock = ManualClock(5.0)
    rc = RecordingClock(clock, 30)
    with pytest.raises(RuntimeError):
        _ = rc.origin_s
    assert rc.start() == 5.0
    with pytest.raises(RuntimeError):
        rc.start()
    assert rc.tick_due_s(30) == pytest.approx(6.0)
    assert rc.tick_at(1.0) == 30  # exactly on a tick despite float rounding
    assert rc.tick_at(1.0 - 1e-6) == 29
    # 30 fps: 1600 samples per tick, every tick, with no drift after an hour.
    assert rc.audio_span(0) == (0, 1600)
    assert rc.audio_span(108_000) == (108_000 * 1600, 1600)
    # 24 fps divides 48 kHz too; a rate that does not still covers every sample exactly once.
    rc7 = RecordingClock(clock, 7)
    spans = [rc7.audio_span(i) for i in range(7)]
    assert spans[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert spans[-1][0] + spans[-1][1] == RATE


def test_manual_clock_jumps_and_never_goes_back() -> None:
    clock = ManualClock(1.0)
    assert clock.sleep_until(3.5) is True
    assert clock.now() == 3.5
    clock.sleep_until(2.0)  # in the past: no change
    assert clock.now() == 3.5
    with pytest.raises(ValueError):
        clock.set(3.0)
    with pytest.raises(ValueError):
        clock.advance(-0.1)
    stop = threading.Event()
    stop.set()
    assert clock.sleep_until(10.0, stop) is False
    assert clock.now() == 3.5


def test_monotonic_clock_is_interrupted_by_its_event() -> None:
    clock = MonotonicClock()
    stop = threading.Event()
    stop.set()
    assert clock.sleep_until(clock.now() + 60.0, stop) is False  # returns at once
    assert clock.sleep_until(clock.now() - 1.0) is True  # a past deadline does not wait


# --- video -----------------------------------------------------------------------------

DELAY_TICKS = round(PLAYOUT_DELAY_S * FPS)  # 6 ticks at 30 fps


def rtp_frames(count: int, fps: int, first_pts: int = RTP_START) -> list[av.VideoFrame]:
    """Frames numbered 0..count-1 at `fps`, stamped on the 90 kHz RTP clock."""
    return [numbered_frame(k, first_pts + k * 90_000 // fps) for k in range(count)]


def test_first_frame_is_anchored_at_arrival_and_shown_after_the_playout_delay() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    driver.send(timeline.add_video_feed("cam"), rtp_frames(60, FPS))
    run = driver.run(range(20))
    assert run.numbers("cam") == [None] * DELAY_TICKS + list(range(20 - DELAY_TICKS))
    picture = run.pictures[DELAY_TICKS]["cam"]
    assert picture.due_s == pytest.approx(PLAYOUT_DELAY_S)
    assert not picture.stale
    assert run.pictures[0]["cam"].stale  # nothing yet: the caller draws the placeholder


def test_a_frame_is_held_until_the_next_is_due() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    driver.send(timeline.add_video_feed("cam"), rtp_frames(15, 15))  # 15 fps into 30 fps
    run = driver.run(range(36))
    assert run.numbers("cam")[DELAY_TICKS:] == [k // 2 for k in range(30)]
    stats = timeline.video_stats()["cam"]
    assert (stats.received, stats.shown, stats.skipped, stats.dropped) == (15, 15, 0, 0)


def test_faster_input_skips_frames_and_counts_them() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    driver.send(timeline.add_video_feed("cam"), rtp_frames(60, 60))  # 60 fps into 30 fps
    run = driver.run(range(36))
    assert run.numbers("cam")[DELAY_TICKS:] == [2 * k for k in range(30)]
    stats = timeline.video_stats()["cam"]
    assert stats.shown == 30
    assert stats.skipped == 29  # every odd frame but the last, which is still queued
    assert stats.dropped == 0


def test_a_full_buffer_drops_the_oldest_and_counts_it() -> None:
    clock, timeline = make_timeline(PlayoutSettings(video_buffer_frames=4))
    driver = LiveDriver(clock, timeline)
    cam = timeline.add_video_feed("cam")
    for frame in rtp_frames(10, FPS):  # a burst: ten frames arrive at once
        driver.arrive(0.0, cam, frame)
    run = driver.run(range(DELAY_TICKS, DELAY_TICKS + 6))
    assert timeline.video_stats()["cam"].dropped == 6
    # All ten were due at once (their pts were anchored to one arrival), so the newest wins.
    assert run.numbers("cam") == [9] * 6


def test_arrival_jitter_below_the_threshold_does_not_disturb_playback() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    cam = timeline.add_video_feed("cam")
    rng = np.random.default_rng(7)
    jitter = rng.uniform(0.0, 0.1, size=90)  # up to 100 ms late, each frame differently
    arrivals = np.maximum.accumulate(np.arange(90) / FPS + jitter)  # in order, bunched
    for k, frame in enumerate(rtp_frames(90, FPS)):
        driver.arrive(float(arrivals[k]), cam, frame)
    numbers = driver.run(range(100)).numbers("cam")
    first = next(t for t, n in enumerate(numbers) if n is not None)
    assert numbers[first : first + 80] == list(range(80))  # one per tick: pts timing wins
    stats = timeline.video_stats()["cam"]
    assert stats.reanchors == 0
    assert stats.skipped == 0
    # Anchored on the fastest arrival, not later than the first frame's own jitter.
    assert DELAY_TICKS <= first <= DELAY_TICKS + np.ceil(jitter[0] * FPS)


def test_a_pts_jump_reanchors_and_playback_continues_on_time() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    cam = timeline.add_video_feed("cam")
    for k, frame in enumerate(rtp_frames(60, FPS)):
        if k >= 30:  # the sender restarts with a new random offset: pts jump 1000 s ahead
            frame.pts += 1000 * 90_000
        if k >= 45:  # and then restarts from 0
            frame.pts = (k - 45) * 3000
        driver.arrive(k / FPS, cam, frame)
    numbers = driver.run(range(66)).numbers("cam")[DELAY_TICKS:]
    # A jump ahead re-anchors at once: playback never waits 1000 s.
    assert numbers[:44] == list(range(44))
    # A jump back looks late until it has lasted LATE_REANCHOR_AFTER_S (it might have been a
    # stall): those frames are shown as they come, newest first, then the feed re-anchors and
    # plays on at its pace to the last frame.
    assert numbers == sorted(numbers) and numbers[-1] == 59
    assert timeline.video_stats()["cam"].skipped <= round(LATE_REANCHOR_AFTER_S * FPS)
    assert timeline.video_stats()["cam"].reanchors == 2


def test_lateness_that_lasts_reanchors_to_the_late_arrivals() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    cam = timeline.add_video_feed("cam")
    stall_s = 0.5
    assert stall_s > REANCHOR_THRESHOLD_S
    arrivals = [k / FPS + (stall_s if k >= 30 else 0.0) for k in range(60)]
    for k, frame in enumerate(rtp_frames(60, FPS)):  # the network holds every frame from 30 on
        driver.arrive(arrivals[k], cam, frame)
    numbers = driver.run(range(80)).numbers("cam")
    first_tick = {n: numbers.index(n) for n in range(60) if n in numbers}
    # Frame 29 stays up through the stall, and nothing is ever shown out of order.
    shown = [n for n in numbers if n is not None]
    assert shown == sorted(shown) and set(range(59)) <= set(shown)
    # While the lateness might still pass, late frames keep their pts timing: each is shown as
    # soon as it arrives (already due)...
    assert first_tick[30] == round(arrivals[30] * FPS)
    # ...and once it has lasted LATE_REANCHOR_AFTER_S the feed re-anchors: frames come one playout
    # delay after they arrive again, at their pace.
    after = 30 + math.ceil(LATE_REANCHOR_AFTER_S * FPS) + 1
    assert first_tick[after] == round((arrivals[after] + PLAYOUT_DELAY_S) * FPS)
    assert timeline.video_stats()["cam"].reanchors == 1


def test_a_passing_stall_keeps_the_pts_timing_and_the_lip_sync() -> None:
    # Our own process (or the network) stalls for longer than the re-anchor threshold but less
    # than the playout delay: the held-up frames arrive in one burst, then all is on time again.
    # Nothing may move: no re-anchor (it would shift this track, and its lip-sync, for good),
    # every video frame on its tick, every audio sample in place.
    stall_s = (REANCHOR_THRESHOLD_S + PLAYOUT_DELAY_S) / 2
    stall_from, stall_until = 1.0, 1.0 + stall_s
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)

    def arrival(media_s: float) -> float:
        return stall_until if stall_from <= media_s < stall_until else media_s

    cam = timeline.add_video_feed("cam")
    for k, frame in enumerate(rtp_frames(60, FPS)):
        driver.arrive(arrival(k / FPS), cam, frame)
    tone = Tone(1000.0, 0.5)
    mic = timeline.add_audio_feed("mic")
    for frame in audio_source(tone, AudioFormat()).audio_frames(0.0, 2.0):
        driver.arrive(arrival(float(frame.pts * frame.time_base)), mic, frame)
    run = driver.run(range(round(2.0 * FPS)))
    assert run.numbers("cam")[DELAY_TICKS:] == list(range(60 - DELAY_TICKS))
    samples = run.audio("mic")
    delay = round(PLAYOUT_DELAY_S * RATE)
    np.testing.assert_allclose(
        samples[delay:], tone.render(0, len(samples) - delay, RATE), atol=1e-4
    )  # s16 quantisation
    assert timeline.video_stats()["cam"].reanchors == 0
    assert timeline.audio_stats()["mic"].reanchors == 0
    assert timeline.audio_stats()["mic"].late_samples == 0


def test_a_late_joiner_appears_at_the_right_tick_and_a_silent_feed_goes_stale() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    driver.arrive(0.0, timeline.add_video_feed("early"), numbered_frame(1, RTP_START))
    join_s = 2.5  # recording time at which the late joiner's first frame arrives
    run_before = driver.run(range(round(join_s * FPS)))
    driver.send(timeline.add_video_feed("late"), rtp_frames(30, FPS, first_pts=777), join_s)
    run = driver.run(range(round(join_s * FPS), 4 * FPS))
    first_tick = round((join_s + PLAYOUT_DELAY_S) * FPS)
    numbers = run_before.numbers("late") + run.numbers("late")
    assert numbers[first_tick - 1] is None
    assert numbers[first_tick] == 0
    # "early" sent one frame and nothing since: it keeps its frame but goes stale.
    pictures = run_before.pictures + run.pictures
    early_due_tick = DELAY_TICKS
    stale_tick = early_due_tick + round(VIDEO_STALE_AFTER_S * FPS)
    assert not pictures[stale_tick]["early"].stale
    assert pictures[stale_tick + 1]["early"].stale
    assert number_of(pictures[stale_tick + 1]["early"].frame) == 1
    timeline.remove_video_feed("early")
    assert "early" not in timeline.pictures(4.0)


def test_frames_without_pts_are_placed_by_arrival() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    driver.arrive(1.0, timeline.add_video_feed("cam"), numbered_frame(5, None))
    numbers = driver.run(range(2 * FPS)).numbers("cam")
    assert numbers.index(5) == round((1.0 + PLAYOUT_DELAY_S) * FPS)


def test_duplicate_feed_ids_are_refused() -> None:
    _, timeline = make_timeline()
    timeline.add_video_feed("cam")
    with pytest.raises(ValueError, match="cam"):
        timeline.add_video_feed("cam")
    timeline.add_audio_feed("mic")
    with pytest.raises(ValueError, match="mic"):
        timeline.add_audio_feed("mic")


# --- audio -----------------------------------------------------------------------------


def audio_source(signal: Signal, fmt: AudioFormat) -> SyntheticParticipant:
    return SyntheticParticipant("p", signal=signal, audio_format=fmt)


def peak_frequency_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / RATE)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("rate", "layout", "sample_format"),
    [
        (8_000, "mono", "s16"),
        (8_000, "stereo", "fltp"),
        (16_000, "mono", "fltp"),
        (16_000, "stereo", "s16"),
        (44_100, "stereo", "fltp"),
        (44_100, "mono", "s16"),
        (48_000, "stereo", "s16"),
    ],
)
def test_audio_is_resampled_to_48k_with_its_duration_and_pitch(
    rate: int, layout: str, sample_format: str
) -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    feed = timeline.add_audio_feed("p")
    frequency_hz = participant_tone_hz(5)  # 1050 Hz: under 4 kHz, so 8 kHz input can carry it
    fmt = AudioFormat(rate, layout, sample_format, frame_samples=round(rate * 0.023))  # odd size
    frames = list(audio_source(Tone(frequency_hz, 0.5), fmt).audio_frames(0.0, 1.0))
    sent_s = sum(frame.samples for frame in frames) / rate  # whole frames: a bit over 1 s
    driver.send(feed, frames)
    driver.at(1.0, lambda: timeline.remove_audio_feed("p"))  # flushes the resampler's tail
    run = driver.run(range(round(1.5 * FPS)))
    assert run.heard[0]["p"].shape[0] == (1 if layout == "mono" else 2)
    samples = run.audio("p")
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    start_s, end_s = loud[0] / RATE, (loud[-1] + 1) / RATE
    # The tone plays from the playout delay for exactly as long as was sent (within 1 ms).
    assert start_s == pytest.approx(PLAYOUT_DELAY_S, abs=0.001)
    assert end_s - start_s == pytest.approx(sent_s, abs=0.001)
    assert peak_frequency_hz(samples[loud[0] : loud[-1]]) == pytest.approx(frequency_hz, abs=1.0)
    if layout == "stereo":
        np.testing.assert_allclose(run.audio("p", 1), samples, atol=1e-6)
    middle = samples[loud[0] + RATE // 10 : loud[-1] - RATE // 10]
    assert np.sqrt(np.mean(np.square(middle))) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert "p" not in timeline.audio_stats()  # drained after removal, then forgotten
    assert run.heard[-1] == {}


def two_tone_frame(layout: str, sample_format: str, start: int, count: int) -> av.AudioFrame:
    """48 kHz frame with a different tone in each channel (a swap or a downmix would show)."""
    t = np.arange(start, start + count) / RATE
    voices = [0.6 * np.sin(2 * np.pi * 700.0 * t), 0.3 * np.sin(2 * np.pi * 1900.0 * t)]
    data = np.asarray(voices[: av.AudioLayout(layout).nb_channels], dtype=np.float32)
    if sample_format.startswith("s16"):
        data = np.round(data * 32767.0).astype(np.int16)
    if not sample_format.endswith("p"):
        data = data.T.reshape(1, -1)  # packed: interleaved in one plane
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data), format=sample_format, layout=layout
    )
    frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
    return frame


@pytest.mark.parametrize("layout", ["mono", "stereo"])
@pytest.mark.parametrize("sample_format", ["s16", "s16p", "flt", "fltp"])
def test_48k_audio_skips_the_resampler_with_the_same_samples_at_the_same_places(
    layout: str, sample_format: str
) -> None:
    """Frames already at 48 kHz in the feed's layout are converted by numpy: the samples must
    be libswresample's, bit for bit, placed where its output would have been."""
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    feed = timeline.add_audio_feed("p")
    frames = [two_tone_frame(layout, sample_format, k * 960, 960) for k in range(25)]
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=RATE)
    expected = np.concatenate(
        [out.to_ndarray() for frame in frames for out in resampler.resample(frame)], axis=1
    )
    driver.send(feed, frames)
    run = driver.run(range(round(0.8 * FPS)))
    delay = round(PLAYOUT_DELAY_S * RATE)
    heard = np.stack([run.audio("p", c) for c in range(expected.shape[0])])
    assert heard.shape[0] == (1 if layout == "mono" else 2)
    np.testing.assert_array_equal(heard[:, delay : delay + expected.shape[1]], expected)
    assert np.all(heard[:, :delay] == 0.0)
    assert np.all(heard[:, delay + expected.shape[1] :] == 0.0)
    assert timeline.audio_stats()["p"].received_samples == 25 * 960


def test_a_feed_that_switches_to_48k_keeps_the_resampler_tail_without_a_gap() -> None:
    """44.1 kHz frames go through the resampler, then 48 kHz ones skip it: the resampler's tail
    is flushed first, so the tone runs on with no hole where the switch happened."""
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    feed = timeline.add_audio_feed("p")
    tone = Tone(1000.0, 0.5)
    slow = audio_source(tone, AudioFormat(44_100, "mono", "s16"))
    fast = audio_source(tone, AudioFormat(48_000, "mono", "s16"))
    frames = [*slow.audio_frames(0.0, 0.5), *fast.audio_frames(0.5, 1.0)]
    for frame in frames:
        driver.arrive(float(frame.pts * frame.time_base), feed, frame)
    samples = driver.run(range(round(1.4 * FPS))).audio("p")
    delay, edge = round(PLAYOUT_DELAY_S * RATE), 100  # away from the tone's own start and end
    # One continuous tone, on time: a lost tail would jump its phase (an error near 0.9).
    np.testing.assert_allclose(
        samples[delay + edge : delay + RATE - edge],
        tone.render(edge, RATE - 2 * edge, RATE),
        atol=0.005,  # the 44.1 kHz half: s16 quantisation and the resampler's filter
    )
    assert timeline.audio_stats()["p"].received_samples == RATE


def test_the_feed_does_not_keep_a_pushed_frames_buffer() -> None:
    """Float frames are read through a numpy view; what the feed keeps must be its own copy."""
    _, timeline = make_timeline()
    feed = timeline.add_audio_feed("p")
    frame = two_tone_frame("stereo", "fltp", 0, 960)
    before = frame.to_ndarray().copy()
    feed.push(frame, arrival_s=ORIGIN_S)
    for plane in frame.planes:  # the decoder reuses its buffer for the next frame
        np.frombuffer(plane, dtype=np.float32)[:] = 0.0
    delay = round(PLAYOUT_DELAY_S * RATE)
    np.testing.assert_array_equal(timeline.read_audio(0, delay + 960)["p"][:, delay:], before)


def test_audio_and_video_of_one_participant_stay_together() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    clapper = clapper_participant(
        video_format=VideoFormat(64, 36, 30), audio_format=AudioFormat(44_100, "stereo", "s16")
    )
    join_s, audio_lag_s = 0.37, 0.02  # a late joiner whose audio arrives 20 ms after its video
    video_frames = list(clapper.video_frames(0.0, 3.0))
    for frame in video_frames:
        frame.pts += RTP_START  # RTP timestamps start at offsets that differ per track
    audio_frames = list(clapper.audio_frames(0.0, 3.0))
    for frame in audio_frames:
        frame.pts += 12_345
    driver.send(timeline.add_video_feed("clap"), video_frames, join_s)
    driver.send(timeline.add_audio_feed("clap"), audio_frames, join_s + audio_lag_s)
    run = driver.run(range(4 * FPS))
    bright = [n is not None and n > LUMA_WHITE - 20 for n in run.numbers("clap")]
    flash_ticks = [t for t, b in enumerate(bright) if b and (t == 0 or not bright[t - 1])]
    heard = run.audio("clap")
    loud = np.abs(heard) > 0.05
    starts = np.flatnonzero(loud & ~np.concatenate([[False], loud[:-1]]))
    beep_starts = starts[np.diff(np.concatenate([[-RATE], starts])) > RATE // 2]
    assert len(flash_ticks) == 3
    assert len(beep_starts) == 3
    offsets_s = beep_starts / RATE - np.array(flash_ticks) / FPS
    # The audio's extra transit is the only offset, plus up to one tick of video rounding
    # (a frame shows at the first tick at or after it is due).
    assert np.all(offsets_s > audio_lag_s - TICK_S - 0.001)
    assert np.all(offsets_s < audio_lag_s + 0.001)


def test_gaps_read_as_silence() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    feed = timeline.add_audio_feed("p")
    tone = Tone(1000.0, 0.5)
    source = audio_source(tone, AudioFormat(48_000, "mono", "s16"))
    # 0.5 s of audio, then 0.5 s of nothing (pts and arrivals both skip), then 0.5 s more.
    for frame in [*source.audio_frames(0.0, 0.5), *source.audio_frames(1.0, 1.5)]:
        driver.arrive(float(frame.pts * frame.time_base), feed, frame)
    samples = driver.run(range(round(2.0 * FPS))).audio("p")
    delay = round(PLAYOUT_DELAY_S * RATE)
    expected = np.zeros_like(samples)
    expected[delay : delay + RATE // 2] = tone.render(0, RATE // 2, RATE)
    expected[delay + RATE : delay + 3 * RATE // 2] = tone.render(RATE, RATE // 2, RATE)
    np.testing.assert_allclose(samples, expected, atol=1e-4)  # s16 quantisation
    assert timeline.audio_stats()["p"].late_samples == 0


def test_audio_due_after_its_span_was_read_is_dropped_and_counted() -> None:
    # With the defaults a frame late enough to miss its span re-anchors instead (the threshold
    # is below the delay); a short playout delay lets lateness under the threshold miss it.
    clock, timeline = make_timeline(PlayoutSettings(playout_delay_s=0.04))
    driver = LiveDriver(clock, timeline)
    feed = timeline.add_audio_feed("p")
    frames = list(audio_source(Tone(1000.0, 0.5), AudioFormat()).audio_frames(0.0, 1.0))
    for k, frame in enumerate(frames):
        late_s = 0.1 if k == 25 else 0.0  # frame 25 (0.50 s) is held up 100 ms
        driver.arrive(k * 0.02 + late_s, feed, frame)
    samples = driver.run(range(round(1.2 * FPS))).audio("p")
    assert timeline.audio_stats()["p"].late_samples == 960
    assert timeline.audio_stats()["p"].reanchors == 0
    hole = samples[round(0.54 * RATE) : round(0.56 * RATE)]  # its span reads as silence
    assert np.all(hole == 0.0)
    assert np.count_nonzero(samples[round(0.56 * RATE) : round(1.0 * RATE)] == 0.0) < 0.05 * RATE


def test_small_audio_jitter_is_absorbed_without_gaps_or_overlaps() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    feed = timeline.add_audio_feed("p")
    tone = Tone(440.0, 0.5)
    rng = np.random.default_rng(3)
    last_s = 0.0
    for frame in audio_source(tone, AudioFormat(48_000, "mono", "fltp")).audio_frames(0.0, 2.0):
        last_s = max(last_s, float(frame.pts * frame.time_base) + rng.uniform(0.0, 0.08))
        driver.arrive(last_s, feed, frame)
    samples = driver.run(range(round(2.4 * FPS))).audio("p")
    start = np.flatnonzero(np.abs(samples) > 1e-3)[0] - 1  # the sine starts at 0
    np.testing.assert_allclose(
        samples[start : start + 2 * RATE], tone.render(0, 2 * RATE, RATE), atol=1e-6
    )
    # Placed within the first frame's jitter of the playout delay: no gap, no overlap after.
    assert 0 <= start / RATE - PLAYOUT_DELAY_S <= 0.08 + AUDIO_SNAP_TOLERANCE_S
    assert timeline.audio_stats()["p"].late_samples == 0


def test_audio_of_a_late_joiner_starts_at_its_arrival_plus_the_delay() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    fmt = AudioFormat(16_000, "mono", "s16")
    driver.send(
        timeline.add_audio_feed("early"),
        audio_source(Tone(500.0, 0.25), fmt).audio_frames(0.0, 3.0),
    )
    first_half = driver.run(range(round(1.5 * FPS)))
    late = timeline.add_audio_feed("late")
    late_frames = audio_source(Tone(1500.0, 0.25), fmt).audio_frames(0.0, 1.0)
    driver.send(late, late_frames, delay_s=1.5)
    second_half = driver.run(range(round(1.5 * FPS), 3 * FPS))
    assert all("late" not in h for h in first_half.heard)
    assert all(set(h) == {"early", "late"} for h in second_half.heard)
    late_samples = second_half.audio("late")
    first = round(1.5 * RATE) + np.flatnonzero(np.abs(late_samples) > 0.01)[0]
    assert abs(first - round((1.5 + PLAYOUT_DELAY_S) * RATE)) <= SAMPLE_TOLERANCE


def test_a_removed_feed_plays_out_its_buffer_and_can_rejoin() -> None:
    clock, timeline = make_timeline()
    driver = LiveDriver(clock, timeline)
    feed = timeline.add_audio_feed("p")
    driver.send(feed, audio_source(Tone(1000.0, 0.5), AudioFormat()).audio_frames(0.0, 0.5))
    driver.at(0.5, lambda: timeline.remove_audio_feed("p"))
    run = driver.run(range(round(0.8 * FPS)))
    with pytest.raises(RuntimeError):
        feed.push(audio_frame(np.zeros(960, np.float32), AudioFormat(), 0))
    loud = np.flatnonzero(np.abs(run.audio("p")) > 0.01)
    # Removed at 0.5 s, it was still read while it drained: all of its 0.5 s were heard.
    assert loud[0] / RATE == pytest.approx(PLAYOUT_DELAY_S, abs=0.001)
    assert (loud[-1] + 1) / RATE == pytest.approx(PLAYOUT_DELAY_S + 0.5, abs=0.001)
    assert run.heard[-1] == {}  # drained: forgotten
    again = timeline.add_audio_feed("p")  # a rejoin gets a fresh feed
    assert again is not feed


# --- the ring under arbitrary writes and reads ---------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(4, 24),
    operations=st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(0, 80), st.integers(1, 30)),
            st.tuples(st.just("read"), st.integers(0, 80), st.integers(0, 30)),
        ),
        max_size=25,
    ),
)
def test_audio_ring_matches_a_reference_model(
    capacity: int, operations: list[tuple[str, int, int]]
) -> None:
    """Reads return the newest write of each position that was neither late nor evicted."""
    ring = _AudioRing(1, capacity)
    model: dict[int, float] = {}
    read_pos: int | None = None
    newest_end: int | None = None
    serial = 0
    for op, pos, count in operations:
        if op == "write":
            values = np.arange(serial + 1, serial + count + 1, dtype=np.float32)
            serial += count
            ring.write(pos, values[None, :])
            kept = [
                (pos + i, float(v))
                for i, v in enumerate(values)
                if read_pos is None or pos + i >= read_pos
            ]
            if kept:
                model.update(kept)
                newest_end = max(newest_end or 0, pos + count)
                model = {p: v for p, v in model.items() if p >= newest_end - capacity}
        else:
            got = ring.read(pos, count)[0]
            expected = [
                model.get(p, 0.0) if read_pos is None or p >= read_pos else 0.0
                for p in range(pos, pos + count)
            ]
            np.testing.assert_array_equal(got, np.asarray(expected, dtype=np.float32))
            read_pos = pos + count if read_pos is None else max(read_pos, pos + count)
            model = {p: v for p, v in model.items() if p >= read_pos}


def test_pushing_from_another_thread_while_the_media_thread_reads() -> None:
    """Pusher and reader run at once, sharing only the per-feed locks: nothing lost or torn.

    They keep the pace live streams keep: the reader waits (bounded) until what a span needs
    has arrived, and the pusher stays no more than `ahead_s` ahead of the reader, so no bound
    is hit and the result is deterministic while the threads still interleave freely.
    """
    # Frames queued at most: (one tick + ahead + delay) at 50 fps = 14 < VIDEO_BUFFER_FRAMES.
    ahead_s = 0.05
    _, timeline = make_timeline()
    video, audio = timeline.add_video_feed("cam"), timeline.add_audio_feed("mic")
    fmt = AudioFormat(48_000, "mono", "s16")
    tone = Tone(1000.0, 0.5)
    frames = list(SyntheticParticipant("p", signal=tone, audio_format=fmt).audio_frames(0.0, 2.0))
    progress = threading.Condition()
    pushed, reader_s, pusher_waits = [0], [0.0], []

    def push() -> None:
        for k, frame in enumerate(frames):  # 50 frames a second of each kind
            with progress:
                pusher_waits.append(
                    progress.wait_for(lambda k=k: k * 0.02 <= reader_s[0] + ahead_s, timeout=10.0)
                )
            audio.push(frame, arrival_s=ORIGIN_S + k * 0.02)
            video.push(numbered_frame(k, RTP_START + k * 1800), arrival_s=ORIGIN_S + k * 0.02)
            with progress:
                pushed[0] = k + 1
                progress.notify_all()

    pusher = threading.Thread(target=push, name="test-pusher")
    pusher.start()
    spans = []
    for tick in range(round(2.2 * FPS)):
        # A tick at t reads audio up to t + TICK_S, which arrived up to a playout delay before.
        needed = min(len(frames), int(np.ceil((tick / FPS + TICK_S - PLAYOUT_DELAY_S) / 0.02)))
        with progress:
            assert progress.wait_for(lambda n=needed: pushed[0] >= n, timeout=10.0)
        spans.append(timeline.read_audio(*timeline.recording_clock.audio_span(tick))["mic"])
        picture = timeline.pictures(tick / FPS)["cam"]
        if tick >= round(PLAYOUT_DELAY_S * FPS):
            assert number_of(picture.frame) == int((tick / FPS - PLAYOUT_DELAY_S) / 0.02 + 1e-9)
        with progress:
            reader_s[0] = (tick + 1) / FPS
            progress.notify_all()
    pusher.join(timeout=10.0)
    assert not pusher.is_alive()
    assert all(pusher_waits)
    assert timeline.video_stats()["cam"].dropped == 0
    samples = np.concatenate(spans, axis=1)[0]
    delay = round(PLAYOUT_DELAY_S * RATE)
    np.testing.assert_allclose(
        samples[delay : delay + 2 * RATE], tone.render(0, 2 * RATE, RATE), atol=1e-4
    )
    assert timeline.audio_stats()["mic"].late_samples == 0
