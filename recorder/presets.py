"""Output presets per quality (CONTRACT.md §5): canvas, frame rate, bitrates.

One table, read by the compositor (canvas), the encoder (rates) and the manifest (what was applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from layouts.model import Orientation, Size

AUDIO_SAMPLE_RATE_HZ = 48_000
KEYFRAME_INTERVAL_S = 2.0


class Quality(StrEnum):
    LOW = "low"
    MED = "med"
    HIGH = "high"


class Mode(StrEnum):
    VIDEO_AND_AUDIO = "video-and-audio"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class Preset:
    quality: Quality
    landscape: Size
    fps: int
    video_bitrate_bps: int
    audio_bitrate_bps: int

    def canvas(self, orientation: Orientation) -> Size:
        """The canvas for an orientation: portrait is the landscape canvas transposed."""
        if orientation is Orientation.PORTRAIT:
            return Size(self.landscape.height, self.landscape.width)
        return self.landscape


PRESETS: dict[Quality, Preset] = {
    Quality.LOW: Preset(Quality.LOW, Size(854, 480), 30, 1_000_000, 96_000),
    Quality.MED: Preset(Quality.MED, Size(1280, 720), 30, 2_500_000, 128_000),
    Quality.HIGH: Preset(Quality.HIGH, Size(1920, 1080), 30, 4_500_000, 160_000),
}
