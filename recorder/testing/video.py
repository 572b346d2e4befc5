"""Deterministic synthetic video: what test participants publish, and what checkers look for.

A camera (`SyntheticVideo`) is a solid background in the participant's palette colour with the
participant's number drawn large and their name under it, a square that moves along a track near
the bottom, and a running clock in the top-left corner. A screen share (`SyntheticScreen`) is a
white "slide" with a title bar in the presenter's colour and grey text lines, plus the same
moving square and clock. `frame_at(t)` is a pure function of t: the same t gives the same pixels
(so goldens rendered at t=0 are stable) and frames carry pts on the 90 kHz RTP video clock.

How a checker finds a participant: camera `i` (0-based) has background `PALETTE[i % len(PALETTE)]`
and the number `i + 1`. Text, clock and square together cover less than a fifth of the frame
(`MAX_MARKED_FRACTION`), so over any region that is at least half of a camera frame the
per-channel median is the palette colour, within codec noise; `nearest_participant` maps a
measured colour back to its palette index. The palette is the six saturated corners of the
colour cube (red, green, blue, yellow, magenta, cyan) plus orange and purple, each pulled in from
its corner, so that all eight are at least `PALETTE_MIN_DISTANCE` apart (Euclidean, 8-bit RGB) and
far from the themes' greys: far more than H.264 at our bitrates moves a flat area's colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from layouts.model import Size
from layouts.text import clean_text, text_mask
from layouts.themes import RGB, contrast_ratio

# Participant colours, by participant index (see the module docstring).
PALETTE: tuple[RGB, ...] = (
    (230, 30, 30),  # red
    (30, 200, 40),  # green
    (40, 70, 230),  # blue
    (250, 230, 40),  # yellow
    (220, 40, 220),  # magenta
    (40, 210, 220),  # cyan
    (250, 125, 0),  # orange
    (120, 40, 170),  # purple
)
PALETTE_MIN_DISTANCE = 100.0  # the least Euclidean RGB distance between two palette colours
# The most of a camera frame drawn over the background: number, name, clock and moving square.
MAX_MARKED_FRACTION = 0.2
SCREEN_BACKGROUND: RGB = (250, 250, 250)
SCREEN_TEXT: RGB = (150, 150, 150)

# Frames carry pts on the RTP video clock, as WebRTC sources do.
VIDEO_CLOCK_HZ = 90_000
DEFAULT_SIZE = Size(1280, 720)
SCREEN_SIZE = Size(1440, 900)  # 16:10, so a share is letterboxed in a 16:9 tile
# The moving square crosses the frame and comes back in this time.
MOTION_PERIOD_S = 4.0
# Sizes as fractions of the frame's short side.
NUMBER_FRACTION = 0.30
NAME_FRACTION = 0.08
CLOCK_FRACTION = 0.06
SQUARE_FRACTION = 0.08


def participant_color(index: int) -> RGB:
    """The background colour of participant `index` (0-based)."""
    return PALETTE[index % len(PALETTE)]


def nearest_participant(
    color: tuple[float, float, float], max_distance: float = 40.0
) -> int | None:
    """The palette index whose colour is nearest to `color`, if within `max_distance` (RGB)."""
    distances = [
        sum((float(c) - float(p)) ** 2 for c, p in zip(color, entry, strict=True)) ** 0.5
        for entry in PALETTE
    ]
    best = int(np.argmin(distances))
    return best if distances[best] <= max_distance else None


def _ink_for(background: RGB) -> RGB:
    """Black or white, whichever reads better on `background`."""
    black, white = (0, 0, 0), (255, 255, 255)
    return (
        black if contrast_ratio(black, background) >= contrast_ratio(white, background) else white
    )


def _stamp(rgb: np.ndarray, mask: np.ndarray, color: RGB, x: int = 0, y: int = 0) -> None:
    """Lay `color` over `rgb` at (x, y) weighted by the coverage `mask` (in place, clipped)."""
    height = min(mask.shape[0], rgb.shape[0] - y)
    width = min(mask.shape[1], rgb.shape[1] - x)
    if height <= 0 or width <= 0:
        return
    region = rgb[y : y + height, x : x + width]
    weight = mask[:height, :width, None].astype(np.uint16)
    ink = np.array(color, dtype=np.uint16)
    region[...] = ((ink * weight + region * (255 - weight) + 127) // 255).astype(np.uint8)


def _text(
    rgb: np.ndarray, text: str, size_px: int, center: tuple[float, float], color: RGB
) -> None:
    height, width = rgb.shape[:2]
    _stamp(rgb, text_mask(text, size_px, (width, height), center, "mm"), color)


@lru_cache(maxsize=32)
def _camera_base(index: int, name: str, size: Size) -> np.ndarray:
    color = participant_color(index)
    ink = _ink_for(color)
    rgb = np.empty((size.height, size.width, 3), dtype=np.uint8)
    rgb[...] = color
    short = min(size.width, size.height)
    _text(
        rgb,
        str(index + 1),
        round(short * NUMBER_FRACTION),
        (size.width / 2, size.height * 0.42),
        ink,
    )
    _text(
        rgb,
        clean_text(name)[:24],
        round(short * NAME_FRACTION),
        (size.width / 2, size.height * 0.64),
        ink,
    )
    rgb.setflags(write=False)
    return rgb


@lru_cache(maxsize=32)
def _screen_base(index: int, name: str, size: Size) -> np.ndarray:
    rgb = np.empty((size.height, size.width, 3), dtype=np.uint8)
    rgb[...] = SCREEN_BACKGROUND
    short = min(size.width, size.height)
    bar = round(size.height * 0.16)
    color = participant_color(index)
    rgb[:bar] = color
    _text(
        rgb,
        clean_text(name)[:32],
        round(short * NAME_FRACTION),
        (size.width / 2, bar / 2),
        _ink_for(color),
    )
    line_h = max(2, round(size.height * 0.035))
    left = round(size.width * 0.1)
    for row in range(6):
        top = bar + round(size.height * 0.08) + row * line_h * 3
        right = round(size.width * (0.85 - 0.1 * (row % 3)))
        rgb[top : top + line_h, left:right] = SCREEN_TEXT
    rgb.setflags(write=False)
    return rgb


def _animate(
    base: np.ndarray, t: float, ink: RGB, clock_ink: RGB, pixel_format: str
) -> av.VideoFrame:
    """The base picture plus the moving square and the clock at time t, as a video frame."""
    rgb = base.copy()
    height, width = rgb.shape[:2]
    short = min(width, height)
    side = max(2, round(short * SQUARE_FRACTION))
    phase = (t % MOTION_PERIOD_S) / MOTION_PERIOD_S
    travel = 1 - abs(2 * phase - 1)  # 0 -> 1 -> 0 over one period
    x = round(travel * (width - side))
    y = round(height * 0.9 - side)
    rgb[y : y + side, x : x + side] = ink

    clock_px = max(6, round(short * CLOCK_FRACTION))
    millis = round(max(t, 0.0) * 1000)
    clock = f"{millis // 60000:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"
    box = (round(clock_px * 6), round(clock_px * 1.4))
    region_w, region_h = min(box[0], width), min(box[1], height)
    _stamp(
        rgb,
        text_mask(clock, clock_px, (region_w, region_h), (clock_px * 0.3, region_h / 2), "lm"),
        clock_ink,
        x=0,
        y=0,
    )

    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    if pixel_format != "rgb24":
        frame = frame.reformat(
            format=pixel_format,
            dst_colorspace=Colorspace.ITU601,
            dst_color_range=ColorRange.MPEG,
            threads=1,
        )
    frame.pts = round(t * VIDEO_CLOCK_HZ)
    frame.time_base = Fraction(1, VIDEO_CLOCK_HZ)
    return frame


@dataclass(frozen=True, slots=True)
class SyntheticVideo:
    """A participant's camera: palette colour, number and name, moving square, clock."""

    index: int  # 0-based participant index: picks the colour; the number drawn is index + 1
    name: str
    size: Size = DEFAULT_SIZE
    pixel_format: str = "yuv420p"

    @property
    def color(self) -> RGB:
        return participant_color(self.index)

    def frame_at(self, t: float) -> av.VideoFrame:
        """The frame at `t` seconds: a pure function of t."""
        return _animate(
            _camera_base(self.index, self.name, self.size),
            t,
            _ink_for(self.color),
            _ink_for(self.color),
            self.pixel_format,
        )


@dataclass(frozen=True, slots=True)
class SyntheticScreen:
    """A presenter's screen share: a white slide with a title bar in the presenter's colour."""

    index: int  # the presenter's participant index
    name: str  # the title shown in the bar
    size: Size = SCREEN_SIZE
    pixel_format: str = "yuv420p"

    def frame_at(self, t: float) -> av.VideoFrame:
        """The frame at `t` seconds: a pure function of t."""
        return _animate(
            _screen_base(self.index, self.name, self.size),
            t,
            SCREEN_TEXT,
            _ink_for(participant_color(self.index)),  # the clock sits on the title bar
            self.pixel_format,
        )
