"""The encoder/muxer: composited frames and mixed audio in, a fragmented MP4 spool file out.

Video-and-audio mode writes H.264 (libx264, yuv420p, High profile, constant frame rate: frame i
has pts i at 1/fps) and AAC-LC (48 kHz stereo) into a fragmented MP4; audio mode writes AAC only
into a fragmented M4A. Fragmentation is what makes the spool safe to stream and to lose: every
fragment is self-contained (`moof` + `mdat`) and written once, never rewritten, so

* a file cut anywhere (a crash, a full disk) plays up to its last complete fragment, and a
  fragment is never longer than `KEYFRAME_INTERVAL_S` (video: a fragment per keyframe; audio:
  one every `AUDIO_FRAGMENT_S`), so a crash loses at most that;
* the uploader can send the file while it grows: after each complete media fragment the encoder
  reports the durable size (`on_durable`, called on the encoder thread; `durable_bytes`), and
  bytes below it never change. The first report is also the moment the first frames are in the
  file; `close()` reports the final size (the trailing `mfra` index included).

Muxer flags, decided by test (tests/test_encoder.py): `frag_keyframe+delay_moov+default_base_moof`.
`empty_moov` writes the moov before any packet, so it cannot carry an edit list: the muxer then
shifts every track so the first dts is 0 and the first video frame lands at 2/fps (B-frame delay)
while the AAC priming packet is stretched to time 0, and the file's duration grows by two frames.
`delay_moov` writes the same sample-less moov, just at the first fragment, with edit lists that
trim B-frame delay and AAC priming: video and audio start at exactly 0 and keep sync to the
sample. It costs nothing in safety: before the first fragment there is no media to lose either
way. `default_base_moof` is what browsers' Media Source Extensions expect. Faststart is
impossible with fragments and unnecessary: the sample-less moov at the front is what lets a
browser start playing progressively.

Threads: `put_video`/`put_audio` are called on the media thread and hand items to one encoder
thread through a bounded queue. Policy when the queue is full (the encoder fell behind): wait up
to `QUEUE_MAX_WAIT_S`, counting the wait, then drop the item and count the drop. A recording
prefers a short, bounded wait to silent loss: x264 stalls briefly (lookahead, a burst of
complex frames, a slow disk write) and the queue plus a short wait absorbs that with nothing
lost, while the media thread, which ticks on the recording clock, catches up afterwards (compose
is faster than real time). Only an encoder that stays slower than real time makes drops, and
those are counted for the summary rather than letting the media thread (and the live inputs
behind it) fall ever further behind. Offline rendering passes `queue_max_wait_s=None`: wait as
long as it takes, drop nothing.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from layouts.model import Orientation, Size
from recorder.errors import MediaError
from recorder.media.fmp4 import BoxScanner
from recorder.presets import AUDIO_SAMPLE_RATE_HZ, KEYFRAME_INTERVAL_S, Mode, Preset, Quality

log = logging.getLogger(__name__)

VIDEO_CODEC = "libx264"
VIDEO_PIXEL_FORMAT = "yuv420p"
VIDEO_PROFILE = "high"  # every browser and player decodes High; it is ~10% smaller than Main
# The compositor's colour (recorder.media.compositor: BT.601 matrix, limited range), as FFmpeg's
# AVColorSpace / AVColorRange values written into the H.264 VUI.
VIDEO_COLORSPACE_BT601 = 6  # AVCOL_SPC_SMPTE170M, the BT.601 matrix
VIDEO_COLOR_RANGE_LIMITED = 1  # AVCOL_RANGE_MPEG, 16..235
AUDIO_CODEC = "aac"  # FFmpeg's native AAC-LC encoder
AUDIO_CHANNELS = 2
AUDIO_LAYOUT = "stereo"
# The x264 speed preset per quality, chosen by measurement (docs/performance.md, `recorder bench
# --presets`): at the same bitrate on camera-like content, veryfast gives 1.5-2 dB more PSNR than
# superfast for 1.7-1.9x the CPU, superfast 3-6 dB more than ultrafast for ~2x. veryfast where one
# core encodes it at 2x real time or more (low, med); superfast for 1080p, where veryfast leaves
# one core only 1.2x real time for everything else.
X264_PRESETS: dict[Quality, str] = {
    Quality.LOW: "veryfast",
    Quality.MED: "veryfast",
    Quality.HIGH: "superfast",
}
X264_PRESET_DEFAULT = "veryfast"  # settings made without a preset
# VBV cap on top of the average target: peaks may reach this multiple of the target bitrate...
VBV_MAXRATE_RATIO = 1.5
# ...over a decoder buffer this many seconds of the target bitrate long.
VBV_BUFFER_S = 2.0
# x264 frame threads. Not x264's own choice (0: 1.5 per core): every frame thread holds the
# output back by about a frame and keeps frames in memory, so on a 16-core host x264's 24 threads
# put the first frames in the file (RECORDING_STARTED) ~56 frames after the first tick instead of
# ~19, and cost ~250 MB more at 720p (measured: docs/performance.md, "Live recording"). Two
# threads let x264 use a second core when one is busy; a worker is sized per core anyway.
X264_THREADS = 2
# x264's latency is what the first frames wait for before they are in the file (the STARTED
# condition, and the file's lead over STARTED): a shorter rate-control lookahead and no separate
# lookahead thread cut it from 18 frames to 9 (0.6 s to 0.3 s at 30 fps). Measured at med on
# camera-like content (recorder.bench.presets, 150 frames, one core): 2187 -> 2200 kb/s, PSNR-Y
# 33.36 -> 33.48 dB, CPU 12.1 -> 12.7 ms/frame: no loss worth the wait.
X264_RC_LOOKAHEAD_FRAMES = 5
# Scene cuts (a layout change) may insert extra keyframes; x264 still forces one every keyint.
X264_SCENECUT = 40
# The first media fragment is cut short, so that the first frames are in the file (the STARTED
# condition, and the first part an uploader may send) after x264's lookahead, ~0.6 s at 30 fps,
# instead of a whole keyframe interval: keyframes are forced at these frame indexes. With
# `delay_moov` the first keyframe boundary writes only the moov (the muxer needs the first packets
# for the edit lists); the second closes a first fragment of two frames.
EARLY_KEYFRAME_INDEXES = frozenset({1, 2})
AUDIO_FRAGMENT_S = 1.0  # audio mode: a fragment per second (there are no video keyframes to cut at)

VIDEO_MOVFLAGS = "frag_keyframe+delay_moov+default_base_moof"
AUDIO_MOVFLAGS = "delay_moov+default_base_moof"
VIDEO_CONTAINER = "mp4"
AUDIO_CONTAINER = "ipod"  # the M4A flavour of the same muxer (ftyp M4A)

QUEUE_CAPACITY_ITEMS = 32  # video + audio items: ~0.5 s of both at 30 fps
QUEUE_MAX_WAIT_S = 0.5  # live: the longest a put waits for room before the item is dropped
QUEUE_POLL_S = 0.05  # how often a waiting put checks that the encoder thread is still alive
CLOSE_TIMEOUT_S = 30.0  # flushing x264's lookahead and writing the last fragment

FILE_SUFFIXES = {Mode.VIDEO_AND_AUDIO: ".mp4", Mode.AUDIO: ".m4a"}


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    """What the encoder produces; `for_preset` derives it from a quality preset."""

    mode: Mode
    canvas: Size  # ignored in audio mode
    fps: int
    video_bitrate_bps: int
    audio_bitrate_bps: int
    x264_preset: str = X264_PRESET_DEFAULT
    threads: int = X264_THREADS  # x264 frame threads; 0: x264 decides. The benchmark pins 1.
    keyframe_interval_s: float = KEYFRAME_INTERVAL_S
    queue_max_wait_s: float | None = QUEUE_MAX_WAIT_S  # None: never drop (offline rendering)

    @classmethod
    def for_preset(
        cls,
        preset: Preset,
        mode: Mode = Mode.VIDEO_AND_AUDIO,
        orientation: Orientation = Orientation.LANDSCAPE,
        **overrides: object,
    ) -> EncoderSettings:
        """The settings for a quality preset; portrait transposes the canvas."""
        settings = cls(
            mode=mode,
            canvas=preset.canvas(orientation),
            fps=preset.fps,
            video_bitrate_bps=preset.video_bitrate_bps,
            audio_bitrate_bps=preset.audio_bitrate_bps,
            x264_preset=X264_PRESETS[preset.quality],
        )
        return replace(settings, **overrides)  # type: ignore[arg-type]

    @property
    def has_video(self) -> bool:
        return self.mode is Mode.VIDEO_AND_AUDIO

    @property
    def keyframe_interval_frames(self) -> int:
        """x264's keyint: the most frames from one keyframe to the next."""
        return max(1, int(self.keyframe_interval_s * self.fps))

    @property
    def file_suffix(self) -> str:
        return FILE_SUFFIXES[self.mode]

    def x264_options(self) -> dict[str, str]:
        """libx264's options: preset, profile, closed GOP with a bounded keyframe interval, VBV."""
        keyint = self.keyframe_interval_frames
        maxrate_kbps = round(self.video_bitrate_bps * VBV_MAXRATE_RATIO / 1000)
        bufsize_kbps = round(self.video_bitrate_bps * VBV_BUFFER_S / 1000)
        params = [
            f"keyint={keyint}",
            f"scenecut={X264_SCENECUT}",
            "open-gop=0",
            "forced-idr=1",  # a forced keyframe (the first fragment's end) is an IDR
            f"rc-lookahead={X264_RC_LOOKAHEAD_FRAMES}",
            "sync-lookahead=0",
            f"vbv-maxrate={maxrate_kbps}",
            f"vbv-bufsize={bufsize_kbps}",
        ]
        return {
            "preset": self.x264_preset,
            "profile": VIDEO_PROFILE,
            "threads": str(self.threads),
            "x264-params": ":".join(params),
        }


@dataclass(slots=True)
class EncoderStats:
    """Counters for the run's summary line; a snapshot, safe to keep."""

    frames_in: int = 0  # video frames accepted by put_video
    frames_encoded: int = 0  # video packets written
    audio_samples_in: int = 0  # per channel, accepted by put_audio
    audio_packets_encoded: int = 0
    bytes_written: int = 0
    durable_bytes: int = 0
    fragments: int = 0
    queue_waits: int = 0  # puts that found the queue full and waited
    queue_wait_s: float = 0.0  # total time puts spent waiting
    queue_drops: int = 0  # items dropped after waiting QUEUE_MAX_WAIT_S
    queue_peak: int = 0  # the most items ever waiting in the queue
    encode_s: float = 0.0  # time the encoder thread spent encoding and muxing

    def summary(self) -> str:
        """One line for the run's log."""
        return (
            f"frames in={self.frames_in} encoded={self.frames_encoded} "
            f"audio samples={self.audio_samples_in} packets={self.audio_packets_encoded} "
            f"bytes={self.bytes_written} fragments={self.fragments} "
            f"queue waits={self.queue_waits} ({self.queue_wait_s:.3f} s) "
            f"drops={self.queue_drops} peak={self.queue_peak}"
        )


@dataclass(slots=True)
class _Item:
    kind: str  # "video" | "audio"
    frame: av.VideoFrame | av.AudioFrame = field(repr=False)


_STOP = object()


class _ScanningWriter:
    """The file object the muxer writes to: appends to the spool, follows fragment boundaries.

    It has no `seek`, so FFmpeg treats the output as a stream and can never go back and rewrite
    bytes the uploader may already have sent.
    """

    def __init__(self, file: BinaryIO, on_durable: Callable[[int], None]) -> None:
        self._file = file
        self._on_durable = on_durable
        self.scanner = BoxScanner()
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:  # an unbuffered file may write less than asked
            written = self._file.write(view)
            if written is None:
                raise MediaError("the spool file refused a write (non-blocking file?)")
            view = view[written:]
        self.bytes_written += len(data)
        fragments = self.scanner.fragments
        # Reported per media fragment: the init segment alone holds no media, so the first
        # report also means "the first frames are in the file" (the STARTED condition).
        if self.scanner.feed(data) and self.scanner.fragments > fragments:
            self._on_durable(self.scanner.durable_bytes)
        return len(data)

    def flush(self) -> None:
        self._file.flush()


class Encoder:
    """Encodes and muxes on its own thread; see the module docstring for the queue policy.

    Create it, `put_video`/`put_audio` in recording order, then `close()` (or use it as a
    context manager). Raises `MediaError` when the file cannot be created or encoding fails; once
    the encoder thread has failed, every later put and `close` raise the same error.
    """

    def __init__(
        self,
        path: Path,
        settings: EncoderSettings,
        on_durable: Callable[[int], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.settings = settings
        self._on_durable_callback = on_durable
        self._stats = EncoderStats()
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=QUEUE_CAPACITY_ITEMS)
        self._error: MediaError | None = None
        self._closed = False
        self._last_video_index = -1
        self._next_audio_sample = 0
        self._video_time_base = Fraction(1, settings.fps)
        self._audio_time_base = Fraction(1, AUDIO_SAMPLE_RATE_HZ)
        try:
            self._file = self.path.open("wb", buffering=0)
        except OSError as error:
            raise MediaError(f"cannot create the spool file {self.path}: {error}") from error
        self._writer = _ScanningWriter(self._file, self._durable)
        try:
            self._container, self._video, self._audio = self._open_container()
        except (av.FFmpegError, ValueError) as error:
            self._file.close()
            raise MediaError(f"cannot set up the encoder for {self.path}: {error}") from error
        self._thread = threading.Thread(target=self._run, name="encoder", daemon=True)
        self._thread.start()

    # -- the media thread's side ------------------------------------------------------------

    def put_video(self, frame: av.VideoFrame | np.ndarray, index: int) -> bool:
        """Queue output frame `index` (pts `index` at 1/fps); False if it was dropped.

        `frame` is the canvas, a yuv420p `VideoFrame` or its `(height * 3 // 2, width)` uint8
        array (copied here, so the caller may reuse its buffer). A `VideoFrame` is handed over:
        the caller must not change it afterwards. Indexes must increase; gaps are allowed (a
        player shows the previous frame until the next one).
        """
        if not self.settings.has_video:
            raise ValueError("this encoder records audio only: no video frames")
        if index <= self._last_video_index:
            raise ValueError(f"video frame {index} is not after frame {self._last_video_index}")
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(frame, format=VIDEO_PIXEL_FORMAT)
        canvas = self.settings.canvas
        if (frame.width, frame.height) != (canvas.width, canvas.height):
            raise ValueError(
                f"frame is {frame.width}x{frame.height}, the canvas {canvas.width}x{canvas.height}"
            )
        frame.pts = index
        frame.time_base = self._video_time_base
        if index in EARLY_KEYFRAME_INDEXES:
            frame.pict_type = av.video.frame.PictureType.I
        self._last_video_index = index
        queued = self._put(_Item("video", frame))
        if queued:
            with self._stats_lock:
                self._stats.frames_in += 1
        return queued

    def put_audio(self, audio: av.AudioFrame | np.ndarray, first_sample: int | None = None) -> bool:
        """Queue mixed audio; False if it was dropped.

        `audio` is one of the mixer's frames (48 kHz stereo fltp; handed over, not copied) or a
        `(2, n)` float32 array in [-1, 1] (copied). `first_sample` is its position on the
        recording clock in samples (the audio pts); default: the frame's own pts, else right
        after the previous call's samples. Positions must not overlap; a gap is silence.
        """
        if isinstance(audio, np.ndarray):
            if audio.ndim != 2 or audio.shape[0] != AUDIO_CHANNELS:
                raise ValueError(f"audio must be shaped ({AUDIO_CHANNELS}, n), not {audio.shape}")
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=AUDIO_LAYOUT
            )
            frame.sample_rate = AUDIO_SAMPLE_RATE_HZ
        else:
            frame = audio
            if (frame.sample_rate, frame.layout.nb_channels) != (
                AUDIO_SAMPLE_RATE_HZ,
                AUDIO_CHANNELS,
            ):
                raise ValueError(
                    f"audio must be {AUDIO_SAMPLE_RATE_HZ} Hz {AUDIO_LAYOUT}, not "
                    f"{frame.sample_rate} Hz {frame.layout.name}"
                )
            if first_sample is None and frame.pts is not None:
                first_sample = int(
                    frame.pts * (frame.time_base or self._audio_time_base) * AUDIO_SAMPLE_RATE_HZ
                )
        start = self._next_audio_sample if first_sample is None else first_sample
        if start < self._next_audio_sample:
            raise ValueError(
                f"audio at sample {start} overlaps audio up to {self._next_audio_sample}"
            )
        count = frame.samples
        if count == 0:
            return True
        frame.pts = start
        frame.time_base = self._audio_time_base
        self._next_audio_sample = start + count
        queued = self._put(_Item("audio", frame))
        if queued:
            with self._stats_lock:
                self._stats.audio_samples_in += count
        return queued

    def _put(self, item: _Item) -> bool:
        self._raise_if_failed()
        if self._closed:
            raise MediaError("the encoder is closed")
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            pass
        else:
            self._note_depth()
            return True
        max_wait_s = self.settings.queue_max_wait_s
        started = time.monotonic()
        deadline = None if max_wait_s is None else started + max_wait_s
        queued = False
        while True:
            timeout_s = QUEUE_POLL_S
            if deadline is not None:
                timeout_s = min(timeout_s, deadline - time.monotonic())
                if timeout_s <= 0:
                    break
            try:
                self._queue.put(item, timeout=timeout_s)
            except queue.Full:
                self._raise_if_failed()  # a dead encoder thread never makes room
                continue
            queued = True
            break
        waited_s = time.monotonic() - started
        with self._stats_lock:
            self._stats.queue_waits += 1
            self._stats.queue_wait_s += waited_s
            if not queued:
                self._stats.queue_drops += 1
        if not queued:
            log.warning("encoder: dropped a %s item after waiting %.3f s", item.kind, waited_s)
        self._note_depth()
        return queued

    def _note_depth(self) -> None:
        depth = self._queue.qsize()
        with self._stats_lock:
            self._stats.queue_peak = max(self._stats.queue_peak, depth)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> EncoderStats:
        """Flush the encoders, write the last fragment and close the file; the final counters.

        Idempotent. Raises `MediaError` if encoding failed or did not finish within `timeout_s`.
        """
        if not self._closed:
            self._closed = True
            deadline = time.monotonic() + timeout_s
            while self._thread.is_alive():
                try:
                    self._queue.put(_STOP, timeout=QUEUE_POLL_S)
                    break
                except queue.Full:
                    if time.monotonic() > deadline:
                        break
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                self._error = self._error or MediaError(
                    f"the encoder did not finish {self.path} within {timeout_s} s"
                )
        self._raise_if_failed()
        return self.stats

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.close()
        except MediaError:
            if exc_info[0] is None:
                raise  # otherwise the original error is the one worth seeing

    @property
    def stats(self) -> EncoderStats:
        """A snapshot of the counters."""
        with self._stats_lock:
            snapshot = replace(self._stats)
        snapshot.bytes_written = self._writer.bytes_written
        snapshot.durable_bytes = self._writer.scanner.durable_bytes
        snapshot.fragments = self._writer.scanner.fragments
        return snapshot

    @property
    def durable_bytes(self) -> int:
        """How many bytes from the start of the file are complete fragments (never shrinks)."""
        return self._writer.scanner.durable_bytes

    @property
    def failed(self) -> MediaError | None:
        return self._error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the encoder thread's side ----------------------------------------------------------

    def _open_container(
        self,
    ) -> tuple[av.container.OutputContainer, av.VideoStream | None, av.AudioStream]:
        settings = self.settings
        if settings.has_video:
            options = {"movflags": VIDEO_MOVFLAGS}
            container_format = VIDEO_CONTAINER
        else:
            fragment_us = round(AUDIO_FRAGMENT_S * 1_000_000)
            options = {"movflags": AUDIO_MOVFLAGS, "frag_duration": str(fragment_us)}
            container_format = AUDIO_CONTAINER
        container = av.open(self._writer, "w", format=container_format, options=options)
        video = None
        if settings.has_video:
            video = container.add_stream(VIDEO_CODEC, rate=settings.fps)
            video.width = settings.canvas.width
            video.height = settings.canvas.height
            video.pix_fmt = VIDEO_PIXEL_FORMAT
            video.time_base = self._video_time_base
            video.codec_context.time_base = self._video_time_base
            video.bit_rate = settings.video_bitrate_bps
            video.codec_context.gop_size = settings.keyframe_interval_frames
            # Frame threads (x264's default) compress better than the slice threads PyAV asks
            # for; their few frames of latency do not matter to a recording.
            video.codec_context.thread_type = "FRAME"
            # Say which matrix the compositor used (BT.601, limited range): untagged HD video is
            # taken to be BT.709 by browsers, which would shift every colour.
            video.codec_context.colorspace = VIDEO_COLORSPACE_BT601
            video.codec_context.color_range = VIDEO_COLOR_RANGE_LIMITED
            video.options = settings.x264_options()
        audio = container.add_stream(AUDIO_CODEC, rate=AUDIO_SAMPLE_RATE_HZ, layout=AUDIO_LAYOUT)
        audio.bit_rate = settings.audio_bitrate_bps
        audio.time_base = self._audio_time_base
        return container, video, audio

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if isinstance(item, _Item):
                    self._encode(item)
            self._finish()
        except (av.FFmpegError, OSError, ValueError, MediaError) as error:
            self._fail(error)
        except Exception as error:  # a bug of ours; the recording must still hear of it
            log.exception("encoder thread crashed")
            self._fail(error)

    def _encode(self, item: _Item) -> None:
        started = time.perf_counter()
        if item.kind == "video" and self._video is not None:
            packets = self._video.encode(item.frame)
            self._container.mux(packets)
            encoded_video, encoded_audio = len(packets), 0
        else:
            packets = self._audio.encode(item.frame)
            self._container.mux(packets)
            encoded_video, encoded_audio = 0, len(packets)
        with self._stats_lock:
            self._stats.frames_encoded += encoded_video
            self._stats.audio_packets_encoded += encoded_audio
            self._stats.encode_s += time.perf_counter() - started

    def _finish(self) -> None:
        started = time.perf_counter()
        encoded_video = 0
        if self._video is not None:
            packets = self._video.encode(None)
            self._container.mux(packets)
            encoded_video = len(packets)
        packets = self._audio.encode(None)
        self._container.mux(packets)
        self._container.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        with self._stats_lock:
            self._stats.frames_encoded += encoded_video
            self._stats.audio_packets_encoded += len(packets)
            self._stats.encode_s += time.perf_counter() - started
        self._durable(self._writer.bytes_written)

    def _fail(self, error: BaseException) -> None:
        self._error = MediaError(f"encoding {self.path} failed: {error}")
        log.error("encoder: %s", self._error.message)
        for closer in (self._container.close, self._file.close):
            try:
                closer()
            except Exception:  # already failing: the first error is the one to report
                log.debug("encoder: error while closing after a failure", exc_info=True)
        # Unblock any put waiting for room.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def _durable(self, durable_bytes: int) -> None:
        if self._on_durable_callback is not None:
            self._on_durable_callback(durable_bytes)
