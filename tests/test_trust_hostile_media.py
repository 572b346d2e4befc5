"""Absurd media and malicious names through the real timeline and compositor: the recording goes on.

What a remote publisher controls reaches the media thread through the timeline (frames of any
size and pixel format, audio of any rate and layout) and the layout (its display name). None of
it may raise on the media thread (that ends the recording) or draw outside its own tile.
tests/test_compositor.py::test_any_room_composes already draws random names (up to 40 characters)
over random frame sizes from 1 to 300 pixels; tests/test_draw.py checks `clean_text` itself;
tests/test_timeline.py switches one feed from 44.1 to 48 kHz. Here: frames with no pixels, 8K,
one-pixel and extreme strips, other pixel formats, several rate and layout changes in a row, and
names that are very long, reversed by a bidi override, only emoji, or control characters.
Everything runs on a `ManualClock`: no sleeps, deterministic.
"""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
import pytest

from layouts.model import LayoutSpec, LayoutType, ParticipantView, Size, Theme
from layouts.scene import plan_frame
from recorder.media.clock import ManualClock, RecordingClock
from recorder.media.compositor import Compositor
from recorder.media.timeline import Timeline
from recorder.testing.audio import Tone
from recorder.testing.sources import AudioFormat, SyntheticParticipant

FPS = 30
RATE = 48_000
ORIGIN_S = 500.0
CANVAS = Size(854, 480)
VIDEO_TB = Fraction(1, 90_000)
# A frame of any size is scaled once per tick: even an 8K one stays well inside a tick's budget.
COMPOSE_BUDGET_S = 0.5
TONE_HZ = 1000.0


def _clock_and_timeline() -> tuple[ManualClock, Timeline]:
    clock = ManualClock(ORIGIN_S)
    recording_clock = RecordingClock(clock, FPS)
    recording_clock.start()
    return clock, Timeline(recording_clock)


def _frame(width: int, height: int, pixel_format: str, index: int) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, pixel_format)
    for plane in frame.planes:  # a mid-grey picture: whatever the format, no garbage memory
        np.frombuffer(memoryview(plane), np.uint8)[:] = 128
    frame.pts = round(index / FPS / VIDEO_TB)
    frame.time_base = VIDEO_TB
    return frame


ABSURD_FRAMES = [
    (64, 36, "yuv420p"),  # an ordinary one first
    (0, 0, "yuv420p"),  # no pixels at all
    (0, 36, "yuv420p"),
    (64, 0, "yuv420p"),
    (7680, 4320, "yuv420p"),  # 8K
    (1, 1, "rgb24"),
    (4001, 2, "rgb24"),  # a strip far wider than any tile
    (3, 2999, "gray"),  # and one far taller
    (33, 17, "rgba"),
    (65, 37, "yuv444p"),
    (64, 36, "nv12"),
    (63, 35, "yuv420p"),  # odd sides
]


def _views(names: list[str]) -> list[ParticipantView]:
    return [
        ParticipantView(
            id=f"p{i}",
            name=name,
            video_on=True,
            muted=False,
            speaking=i == 0,
            joined_at=float(i),
            screen_of=None,
        )
        for i, name in enumerate(names)
    ]


def test_absurd_frames_are_composed_or_refused_and_the_feed_goes_on() -> None:
    clock, timeline = _clock_and_timeline()
    feed = timeline.add_video_feed("p0")
    views = _views(["Absurd", "Other"])
    compositor = Compositor(CANVAS)
    selection = None
    last_tick = 0
    for index, (width, height, pixel_format) in enumerate(ABSURD_FRAMES):
        feed.push(_frame(width, height, pixel_format, index), arrival_s=ORIGIN_S + index / FPS)
        for tick in range(last_tick, index * 2 + 8):  # a few ticks for each frame
            clock.set(ORIGIN_S + tick / FPS)
            selection, scene = plan_frame(
                selection, views, LayoutSpec(type=LayoutType.GRID), CANVAS, tick / FPS
            )
            pictures = timeline.pictures(tick / FPS)
            frames = {feed_id: None if p.stale else p.frame for feed_id, p in pictures.items()}
            began = time.perf_counter()
            out = compositor.compose(scene, frames)
            assert time.perf_counter() - began < COMPOSE_BUDGET_S, (width, height)
            assert (out.width, out.height, out.format.name) == (854, 480, "yuv420p")
            shown = pictures["p0"].frame
            assert shown is None or (shown.width > 0 and shown.height > 0)
        last_tick = index * 2 + 8
    stats = timeline.video_stats()["p0"]
    assert stats.refused == 3  # the three frames with no pixels, counted, never queued
    assert stats.received == len(ABSURD_FRAMES)
    assert stats.shown + stats.skipped + stats.dropped == len(ABSURD_FRAMES) - 3


def test_audio_that_changes_rate_and_layout_again_and_again_plays_on() -> None:
    """48 kHz stereo, then 22.05 kHz mono, 96 kHz stereo, 8 kHz mono, 44.1 kHz stereo: one tone
    throughout, half a second each. The feed converts each to 48 kHz and leaves no hole."""
    clock, timeline = _clock_and_timeline()
    feed = timeline.add_audio_feed("p0")
    formats = [
        AudioFormat(48_000, "stereo", "fltp"),
        AudioFormat(22_050, "mono", "s16"),
        AudioFormat(96_000, "stereo", "s16"),
        AudioFormat(8_000, "mono", "s16"),
        AudioFormat(44_100, "stereo", "fltp"),
    ]
    tone = Tone(TONE_HZ, 0.5)
    frames = []
    for part, fmt in enumerate(formats):
        source = SyntheticParticipant("p0", signal=tone, audio_format=fmt)
        frames += source.audio_frames(part * 0.5, (part + 1) * 0.5)
    total_s = len(formats) * 0.5
    heard = []
    pending = iter(frames)
    upcoming = next(pending, None)
    for tick in range(round((total_s + 0.5) * FPS)):
        now_s = tick / FPS
        clock.set(ORIGIN_S + now_s)
        while upcoming is not None and float(upcoming.pts * upcoming.time_base) <= now_s:
            feed.push(upcoming, arrival_s=ORIGIN_S + float(upcoming.pts * upcoming.time_base))
            upcoming = next(pending, None)
        span = timeline.recording_clock.audio_span(tick)
        heard.append(timeline.read_audio(*span)["p0"])
    mono = np.concatenate([span.mean(axis=0) for span in heard])  # (channels, count) each
    stats = timeline.audio_stats()["p0"]
    # Every part arrived as about half a second at 48 kHz (each resampler may keep a few ms).
    assert stats.received_samples == pytest.approx(total_s * RATE, abs=0.01 * RATE)
    # And it plays as one tone: every 20 ms window of the middle of each part is loud, at 1 kHz.
    loud = np.abs(mono).max()
    assert loud > 0.2
    start = int(np.argmax(np.abs(mono) > loud / 4))
    window = RATE // 50
    for part in range(len(formats)):
        middle = mono[start + int((part * 0.5 + 0.1) * RATE) : start + int((part + 1) * 0.5 * RATE)]
        middle = middle[: (middle.size // window) * window - window]
        rms = np.sqrt((middle.reshape(-1, window) ** 2).mean(axis=1))
        assert rms.min() > 0.25 * rms.max(), f"a hole in part {part} ({formats[part]})"
        spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
        peak = float(np.fft.rfftfreq(middle.size, 1 / RATE)[spectrum.argmax()])
        assert peak == pytest.approx(TONE_HZ, abs=15), part


HOSTILE_NAMES = [
    "A" * 100_000,  # very long
    "\u202eevil.exe\u202c is here",  # right-to-left override
    "\u2066\u2067\u2068" * 50 + "isolates",
    "🎥🙂👩\u200d👩\u200d👧🏳️\u200d🌈",  # emoji only, with joiners
    "\x1b[2J\x00\x07\r\n\t\x7f",  # control characters only
    "Z" + "\u0336\u0337\u0338" * 200,  # "Zalgo"
    "\ufdfd" * 300,  # one of the widest glyphs there is, many times
    "\u200b" * 10_000,  # nothing visible at all
]


@pytest.mark.parametrize("layout", list(LayoutType))
def test_malicious_names_draw_inside_their_own_tiles(layout: LayoutType) -> None:
    """The same room with hostile names and with plain ones: the frames may differ only inside
    the tiles (where the labels are), the labels never spill onto the canvas around them."""
    plain = [f"P{i}" for i in range(len(HOSTILE_NAMES))]
    spec = LayoutSpec(type=layout, theme=Theme.DARK)
    frames: dict[str, av.VideoFrame | None] = {f"p{i}": None for i in range(len(HOSTILE_NAMES))}
    outputs = []
    for names in (plain, HOSTILE_NAMES):
        began = time.perf_counter()
        _, scene = plan_frame(None, _views(names), spec, CANVAS, 0.0)
        out = Compositor(CANVAS).compose(scene, frames)
        assert time.perf_counter() - began < COMPOSE_BUDGET_S * 4  # the text is cut, not all drawn
        outputs.append((scene, out.to_ndarray(format="rgb24")))
    (scene, plain_rgb), (hostile_scene, hostile_rgb) = outputs
    assert [t.tile.rect for t in scene.tiles] == [t.tile.rect for t in hostile_scene.tiles]
    inside = np.zeros(plain_rgb.shape[:2], bool)
    for plan in scene.tiles:
        rect = plan.tile.rect
        inside[rect.y : rect.bottom, rect.x : rect.right] = True
    changed = np.abs(plain_rgb.astype(int) - hostile_rgb.astype(int)).max(axis=2) > 0
    assert changed[inside].any()  # the names are drawn (differently from the plain ones)
    assert not changed[~inside].any()  # and nothing of them outside the tiles
