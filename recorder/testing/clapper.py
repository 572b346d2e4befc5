"""The clapper: a participant that flashes white and beeps at the same instant once a second.

Between claps its video is dark and its audio silent, so a checker can find each flash in the
recorded video (mean luma jumps) and each beep in the recorded audio (1 kHz energy appears) and
measure the A/V offset of the whole pipeline. The detectors live here next to the generator, so
what is sent and what is looked for cannot disagree.
"""

from __future__ import annotations

import av
import numpy as np

from recorder.testing.audio import Beeps
from recorder.testing.sources import AudioFormat, Picture, SyntheticParticipant, VideoFormat

CLAPPER_PERIOD_S = 1.0  # one clap per second
CLAPPER_OFFSET_S = 0.0  # the first clap is at this source time, then every period
CLAPPER_FLASH_S = 0.1  # white for this long (3 frames at 30 fps)
CLAPPER_BEEP_S = 0.1  # 1 kHz for this long
CLAPPER_BEEP_HZ = 1000.0
CLAPPER_BEEP_AMPLITUDE = 0.5
LUMA_WHITE = 235  # limited-range (studio swing) Y of white, what decoders and encoders assume
LUMA_DARK = 16  # limited-range black
CHROMA_NEUTRAL = 128
FLASH_LUMA_THRESHOLD = (LUMA_WHITE + LUMA_DARK) / 2  # a frame above this mean luma is a flash
BEEP_DETECT_WINDOW_S = 0.001  # envelope resolution of the beep detector
BEEP_DETECT_THRESHOLD = 0.1  # RMS (full scale 1) above which a window is part of a beep
ONSET_TIME_EPSILON_S = 1e-9  # float slack when deciding whether a frame time is inside a flash


def is_flash(time_s: float) -> bool:
    """Whether the clapper's picture is white at source time `time_s`."""
    into = (time_s - CLAPPER_OFFSET_S) % CLAPPER_PERIOD_S
    return time_s >= CLAPPER_OFFSET_S - ONSET_TIME_EPSILON_S and (
        into < CLAPPER_FLASH_S - ONSET_TIME_EPSILON_S
        or into > CLAPPER_PERIOD_S - ONSET_TIME_EPSILON_S
    )


def clapper_picture(width: int, height: int) -> Picture:
    """A picture function (`time_s -> av.VideoFrame`, yuv420p) for the clapper at a size."""
    chroma_rows = height // 2

    def picture(time_s: float) -> av.VideoFrame:
        planes = np.empty((height + chroma_rows, width), dtype=np.uint8)
        planes[:height] = LUMA_WHITE if is_flash(time_s) else LUMA_DARK
        planes[height:] = CHROMA_NEUTRAL
        return av.VideoFrame.from_ndarray(planes, format="yuv420p")

    return picture


def clapper_beeps() -> Beeps:
    """The clapper's audio signal: beeps aligned with the flashes."""
    return Beeps(
        frequency_hz=CLAPPER_BEEP_HZ,
        duration_s=CLAPPER_BEEP_S,
        period_s=CLAPPER_PERIOD_S,
        offset_s=CLAPPER_OFFSET_S,
        amplitude=CLAPPER_BEEP_AMPLITUDE,
    )


def clapper_participant(
    name: str = "clapper",
    video_format: VideoFormat | None = None,
    audio_format: AudioFormat | None = None,
) -> SyntheticParticipant:
    """A clapper with the given formats (default 640x360 at 30 fps, 48 kHz mono s16)."""
    video_format = video_format or VideoFormat(640, 360, 30)
    audio_format = audio_format or AudioFormat()
    return SyntheticParticipant(
        name,
        picture=clapper_picture(video_format.width, video_format.height),
        video_format=video_format,
        signal=clapper_beeps(),
        audio_format=audio_format,
    )


def _rising_edges(on: np.ndarray) -> np.ndarray:
    """Indices where a boolean series turns on (index 0 counts if it starts on)."""
    on = np.asarray(on, dtype=bool)
    previous = np.concatenate([[False], on[:-1]])
    return np.flatnonzero(on & ~previous)


def flash_onsets(times_s: np.ndarray, mean_luma: np.ndarray) -> np.ndarray:
    """The times of the first bright frame of each flash, from per-frame mean luma."""
    times_s = np.asarray(times_s, dtype=np.float64)
    return times_s[_rising_edges(np.asarray(mean_luma) > FLASH_LUMA_THRESHOLD)]


def beep_onsets(samples: np.ndarray, sample_rate_hz: int, start_s: float = 0.0) -> np.ndarray:
    """The start times of the beeps in mono `samples`, to within `BEEP_DETECT_WINDOW_S`.

    The envelope is the RMS of consecutive 1 ms windows; an onset is the first window above
    `BEEP_DETECT_THRESHOLD`, refined to the first sample in it that reaches the threshold.
    """
    samples = np.asarray(samples, dtype=np.float64)
    window = max(1, round(BEEP_DETECT_WINDOW_S * sample_rate_hz))
    usable = samples[: samples.size // window * window].reshape(-1, window)
    loud = np.sqrt(np.mean(np.square(usable), axis=1)) > BEEP_DETECT_THRESHOLD
    onsets = []
    for index in _rising_edges(loud):
        # Refine within the window before: the first sample whose magnitude reaches the threshold.
        lo = max(0, (index - 1) * window)
        hit = np.flatnonzero(np.abs(samples[lo : (index + 1) * window]) >= BEEP_DETECT_THRESHOLD)
        onsets.append(lo + (int(hit[0]) if hit.size else window))
    return start_s + np.asarray(onsets, dtype=np.float64) / sample_rate_hz


def av_offsets_s(flashes_s: np.ndarray, beeps_s: np.ndarray, max_pair_s: float = 0.4) -> np.ndarray:
    """Audio minus video time for each flash that has a beep within `max_pair_s`.

    Positive: the audio is late. `max_pair_s` stays under half the clap period so a clap is never
    paired with its neighbour.
    """
    flashes_s, beeps_s = np.asarray(flashes_s, np.float64), np.asarray(beeps_s, np.float64)
    if flashes_s.size == 0 or beeps_s.size == 0:
        return np.zeros(0)
    nearest = np.abs(beeps_s[None, :] - flashes_s[:, None]).argmin(axis=1)
    offsets = beeps_s[nearest] - flashes_s
    return offsets[np.abs(offsets) <= max_pair_s]
