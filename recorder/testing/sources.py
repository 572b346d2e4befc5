"""The common shape of a test participant: timestamped frames for a time range.

A `ParticipantSource` yields `av.VideoFrame`s and `av.AudioFrame`s whose `pts`/`time_base` look
like a real decoder's (video at the RTP clock, 1/90000; audio counting samples at its own rate),
for any `[start_s, end_s)`. The offline pipeline pushes them into the timeline, the demo's WebRTC
publishers wrap them as aiortc tracks, and tests check them, all from the same objects.

Formats cover what rooms send: 15/24/30 fps, 360p to 1080p, portrait, 8/16/44.1/48 kHz, mono or
stereo, s16 or fltp.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Protocol

import av
import numpy as np

from layouts.model import Size
from recorder.testing.audio import (
    Signal,
    Silence,
    SpeechBursts,
    Tone,
    participant_tone_hz,
    participant_voice_hz,
)
from recorder.testing.video import SyntheticVideo

VIDEO_TIME_BASE = Fraction(1, 90_000)  # the RTP video clock: what live decoders stamp
AUDIO_FRAME_S = 0.02  # 20 ms per audio frame, like Opus in WebRTC

VIDEO_SIZES: dict[str, Size] = {
    "360p": Size(640, 360),
    "480p": Size(854, 480),
    "720p": Size(1280, 720),
    "1080p": Size(1920, 1080),
    "360p-portrait": Size(360, 640),
    "720p-portrait": Size(720, 1280),
    "1080p-portrait": Size(1080, 1920),
}
VIDEO_RATES_FPS = (15, 24, 30)
AUDIO_RATES_HZ = (8_000, 16_000, 44_100, 48_000)

SYNTHETIC_LAYOUTS = ("mono", "stereo")
SYNTHETIC_SAMPLE_FORMATS = ("s16", "s16p", "flt", "fltp")


@dataclass(frozen=True, slots=True)
class VideoFormat:
    """What a video source sends: size, constant frame rate, pixel format, pts time base."""

    width: int
    height: int
    fps: int = 30
    pix_fmt: str = "yuv420p"
    time_base: Fraction = VIDEO_TIME_BASE

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(
                f"video size must be positive and even, got {self.width}x{self.height}"
            )
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    @classmethod
    def named(cls, size_name: str, fps: int = 30) -> VideoFormat:
        """A format from `VIDEO_SIZES` ("720p", "1080p-portrait", ...)."""
        size = VIDEO_SIZES[size_name]
        return cls(size.width, size.height, fps)

    @property
    def size(self) -> Size:
        return Size(self.width, self.height)

    def frame_time_s(self, index: int) -> float:
        return index / self.fps

    def pts(self, index: int) -> int:
        """Frame `index`'s pts in `time_base` (exact for the usual rates at 1/90000)."""
        return round(Fraction(index, self.fps) / self.time_base)

    def first_index(self, time_s: float) -> int:
        """The first frame at or after `time_s`."""
        return math.ceil(time_s * self.fps - 1e-9)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """What an audio source sends: rate, layout, sample format, samples per frame.

    Synthetic sources send mono or stereo in s16, s16p, flt or fltp; a media file reports
    whatever its decoder gives (any FFmpeg layout and sample format).
    """

    sample_rate_hz: int = 48_000
    layout: str = "mono"
    sample_format: str = "s16"
    frame_samples: int = field(default=0)  # 0: AUDIO_FRAME_S worth at the rate

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample rate must be positive, got {self.sample_rate_hz}")
        try:
            av.AudioLayout(self.layout)
            av.AudioFormat(self.sample_format)
        except ValueError as error:
            raise ValueError(f"unknown audio layout or format: {error}") from error
        if self.frame_samples < 0:
            raise ValueError(f"frame_samples must not be negative, got {self.frame_samples}")

    @property
    def channels(self) -> int:
        return av.AudioLayout(self.layout).nb_channels

    @property
    def samples_per_frame(self) -> int:
        return self.frame_samples or round(self.sample_rate_hz * AUDIO_FRAME_S)

    @property
    def time_base(self) -> Fraction:
        return Fraction(1, self.sample_rate_hz)


def audio_frame(mono: np.ndarray, audio_format: AudioFormat, start_sample: int) -> av.AudioFrame:
    """Mono float samples as an `av.AudioFrame` of `audio_format`, pts = `start_sample`.

    Stereo repeats the signal in both channels; s16 scales to the full int16 range. Synthetic
    sources use mono or stereo and s16, s16p, flt or fltp.
    """
    if audio_format.layout not in SYNTHETIC_LAYOUTS:
        raise ValueError(f"synthetic audio is mono or stereo, not {audio_format.layout!r}")
    if audio_format.sample_format not in SYNTHETIC_SAMPLE_FORMATS:
        raise ValueError(f"synthetic audio cannot be {audio_format.sample_format!r}")
    channels = np.repeat(np.asarray(mono, dtype=np.float32)[None, :], audio_format.channels, 0)
    if audio_format.sample_format.startswith("s16"):
        data = np.round(np.clip(channels, -1.0, 1.0) * 32767.0).astype(np.int16)
    else:
        data = channels
    if not audio_format.sample_format.endswith("p"):
        data = data.T.reshape(1, -1)  # packed: samples interleaved in one plane
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data), format=audio_format.sample_format, layout=audio_format.layout
    )
    frame.sample_rate = audio_format.sample_rate_hz
    frame.pts = start_sample
    frame.time_base = audio_format.time_base
    return frame


def frame_time_s(frame: av.VideoFrame | av.AudioFrame) -> float:
    """A source frame's time in seconds (`pts * time_base`); sources always stamp both."""
    if frame.pts is None or frame.time_base is None:
        raise ValueError("frame has no pts/time_base")
    return float(frame.pts * frame.time_base)


class ParticipantSource(Protocol):
    """A participant's media as frames for a time range; `None` formats: no such track."""

    name: str

    @property
    def video_format(self) -> VideoFormat | None: ...

    @property
    def audio_format(self) -> AudioFormat | None: ...

    def video_frames(
        self, start_s: float = 0.0, end_s: float | None = None
    ) -> Iterator[av.VideoFrame]:
        """Frames whose time is in `[start_s, end_s)` (`None`: no end), in pts order."""
        ...

    def audio_frames(
        self, start_s: float = 0.0, end_s: float | None = None
    ) -> Iterator[av.AudioFrame]:
        """Frames whose first sample's time is in `[start_s, end_s)`, in pts order."""
        ...


# A picture as a pure function of time, already at the source's size.
Picture = Callable[[float], av.VideoFrame]


class SyntheticParticipant:
    """A participant made of a picture function and a `Signal`, stamped like a decoder would.

    Video frame i is `picture(i / fps)` with pts i/fps at the format's time base. Audio frame j
    holds samples `[j * n, (j + 1) * n)` of `signal` at the format's rate, pts in samples.
    """

    def __init__(
        self,
        name: str,
        picture: Picture | None = None,
        video_format: VideoFormat | None = None,
        signal: Signal | None = None,
        audio_format: AudioFormat | None = None,
    ) -> None:
        if (picture is None) != (video_format is None):
            raise ValueError("a video track needs both a picture and a video format")
        if (signal is None) != (audio_format is None):
            raise ValueError("an audio track needs both a signal and an audio format")
        self.name = name
        self.picture = picture
        self.signal = signal
        self._video_format = video_format
        self._audio_format = audio_format

    @property
    def video_format(self) -> VideoFormat | None:
        return self._video_format

    @property
    def audio_format(self) -> AudioFormat | None:
        return self._audio_format

    def video_frame(self, index: int) -> av.VideoFrame:
        """Frame `index`, stamped."""
        if self.picture is None or self._video_format is None:
            raise ValueError(f"participant {self.name!r} has no video")
        fmt = self._video_format
        frame = self.picture(fmt.frame_time_s(index))
        if (frame.width, frame.height) != (fmt.width, fmt.height):
            raise ValueError(
                f"picture of {self.name!r} is {frame.width}x{frame.height}, "
                f"the format says {fmt.width}x{fmt.height}"
            )
        if frame.format.name != fmt.pix_fmt:
            frame = frame.reformat(format=fmt.pix_fmt)
        frame.pts = fmt.pts(index)
        frame.time_base = fmt.time_base
        return frame

    def video_frames(
        self, start_s: float = 0.0, end_s: float | None = None
    ) -> Iterator[av.VideoFrame]:
        if self._video_format is None:
            return
        index = self._video_format.first_index(start_s)
        while end_s is None or self._video_format.frame_time_s(index) < end_s - 1e-9:
            yield self.video_frame(index)
            index += 1

    def audio_frame(self, index: int) -> av.AudioFrame:
        """Audio frame `index` (samples `[index * n, (index + 1) * n)`), stamped."""
        if self.signal is None or self._audio_format is None:
            raise ValueError(f"participant {self.name!r} has no audio")
        fmt = self._audio_format
        n = fmt.samples_per_frame
        samples = self.signal.render(index * n, n, fmt.sample_rate_hz)
        return audio_frame(samples, fmt, index * n)

    def audio_frames(
        self, start_s: float = 0.0, end_s: float | None = None
    ) -> Iterator[av.AudioFrame]:
        if self._audio_format is None:
            return
        fmt = self._audio_format
        n = fmt.samples_per_frame
        index = math.ceil(start_s * fmt.sample_rate_hz / n - 1e-9)
        while end_s is None or index * n < end_s * fmt.sample_rate_hz - 1e-6:
            yield self.audio_frame(index)
            index += 1


def interleaved(
    source: ParticipantSource, start_s: float = 0.0, end_s: float | None = None
) -> Iterator[tuple[float, av.VideoFrame | av.AudioFrame]]:
    """Both tracks' frames merged in time order, each with its time in seconds.

    What an offline driver pushes into the timeline, as if each frame arrived at its time.
    """
    video = ((frame_time_s(f), 0, f) for f in source.video_frames(start_s, end_s))
    audio = ((frame_time_s(f), 1, f) for f in source.audio_frames(start_s, end_s))
    for time_s, _, frame in heapq.merge(video, audio, key=lambda item: (item[0], item[1])):
        yield time_s, frame


class Sound(StrEnum):
    """What a synthetic participant's microphone sends."""

    TONE = "tone"  # a steady sine at the participant's own frequency
    SPEECH = "speech"  # seeded bursts and pauses at the participant's own pitch
    SILENCE = "silence"  # a live but silent microphone


def participant_signal(index: int, sound: Sound = Sound.TONE, seed: int | None = None) -> Signal:
    """Participant `index`'s microphone signal; speech bursts are seeded by `seed` or the index."""
    if sound is Sound.TONE:
        return Tone(participant_tone_hz(index))
    if sound is Sound.SPEECH:
        return SpeechBursts(
            seed=index if seed is None else seed, pitch_hz=participant_voice_hz(index)
        )
    return Silence()


def synthetic_participant(
    index: int,
    name: str,
    video_format: VideoFormat | None = None,
    audio_format: AudioFormat | None = None,
    *,
    sound: Sound = Sound.TONE,
    seed: int | None = None,
) -> SyntheticParticipant:
    """Participant `index` (0-based) as the room sees them: camera from `SyntheticVideo` (palette
    colour, number, name, moving square, clock) and a microphone of `sound`.

    Pass `VideoFormat`/`AudioFormat` to pick sizes, rates and sample formats; either may be left
    out for a participant without that track.
    """
    picture = None
    if video_format is not None:
        picture = SyntheticVideo(index, name, video_format.size, video_format.pix_fmt).frame_at
    signal = participant_signal(index, sound, seed) if audio_format is not None else None
    return SyntheticParticipant(name, picture, video_format, signal, audio_format)
