"""A media file as a participant: PyAV demuxes and decodes any file with audio and/or video.

Frames keep the stream's time base and have their pts shifted so the file starts at 0 (and, when
looping, each pass continues where the last ended), so they look like a decoder's output and fit
the `ParticipantSource` shape. Each call to `video_frames`/`audio_frames` opens its own container,
so a video and an audio track can be read at the same time from different threads.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import av

from recorder.testing.sources import AudioFormat, VideoFormat

DEFAULT_FILE_FPS = 30  # assumed when a file does not state its video frame rate


class MediaFileParticipant:
    """A participant that sends the first video and the first audio stream of a file."""

    def __init__(self, path: str | Path, name: str | None = None, loop: bool = False) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.loop = loop
        with av.open(str(self.path)) as container:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            if video is None and audio is None:
                raise ValueError(f"{self.path} has neither video nor audio")
            self._video_format: VideoFormat | None = None
            self._audio_format: AudioFormat | None = None
            if video is not None:
                rate = video.average_rate or video.guessed_rate
                self._video_format = VideoFormat(
                    width=video.codec_context.width,
                    height=video.codec_context.height,
                    fps=round(rate) if rate else DEFAULT_FILE_FPS,
                    pix_fmt=video.codec_context.pix_fmt or "yuv420p",
                    time_base=video.time_base,
                )
            if audio is not None:
                context = audio.codec_context
                self._audio_format = AudioFormat(
                    sample_rate_hz=context.sample_rate,
                    layout=context.layout.name,
                    sample_format=context.format.name,
                    frame_samples=context.frame_size or 0,
                )
            self.duration_s = (
                container.duration / av.time_base if container.duration is not None else None
            )
        if loop and not self.duration_s:
            raise ValueError(f"{self.path}: cannot loop a file of unknown duration")

    @property
    def video_format(self) -> VideoFormat | None:
        return self._video_format

    @property
    def audio_format(self) -> AudioFormat | None:
        return self._audio_format

    def video_frames(
        self, start_s: float = 0.0, end_s: float | None = None
    ) -> Iterator[av.VideoFrame]:
        if self._video_format is None:
            return iter(())
        return self._frames("video", start_s, end_s)  # type: ignore[return-value]

    def audio_frames(
        self, start_s: float = 0.0, end_s: float | None = None
    ) -> Iterator[av.AudioFrame]:
        if self._audio_format is None:
            return iter(())
        return self._frames("audio", start_s, end_s)  # type: ignore[return-value]

    def _frames(
        self, kind: Literal["video", "audio"], start_s: float, end_s: float | None
    ) -> Iterator[av.VideoFrame | av.AudioFrame]:
        period_s = self.duration_s if self.loop else None
        first_pass = math.floor(start_s / period_s) if period_s else 0
        passes = range(first_pass, 1 << 62) if period_s else range(1)
        for pass_index in passes:
            offset_s = pass_index * period_s if period_s else 0.0
            if end_s is not None and offset_s >= end_s:
                return
            for frame in self._one_pass(kind, start_s - offset_s, offset_s):
                time_s = float(frame.pts * frame.time_base)
                if time_s < start_s:
                    continue
                if end_s is not None and time_s >= end_s:
                    return
                yield frame

    def _one_pass(
        self, kind: Literal["video", "audio"], seek_s: float, offset_s: float
    ) -> Iterator[av.VideoFrame | av.AudioFrame]:
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
            stream.thread_type = "AUTO"
            time_base = stream.time_base
            origin = stream.start_time or 0
            offset = round(offset_s / time_base)
            if seek_s > 0:
                container.seek(origin + math.floor(seek_s / time_base), stream=stream)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                frame.pts = frame.pts - origin + offset
                frame.time_base = time_base
                yield frame
