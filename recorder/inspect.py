"""The content and sync checker: what is in one of our files, measured rather than trusted.

Used by the tests (every end-to-end test re-opens its output through here), by `recorder inspect`
and by anyone who wants to know whether a recording is what it claims to be:

* `probe`: container and streams from the packets alone (no decoding, so it is quick on an hour
  of video): codecs, sizes, duration (container and per stream), frame-rate regularity (pts
  deltas), keyframe spacing, audio rate and channels, bitrates, fragments and a damaged tail.
* `measure_sync`: for clapper inputs, when each flash is seen (mean luma of a region jumping to
  near white) and when each beep is heard (onset of the 1 kHz tone's envelope), paired into
  audio-minus-video offsets.
* `presence`: given the expected tile regions and the participants' colours, which participant
  appears in which region over time (median colour of the region against the palette).

Every tolerance is a named constant below with the reason for its value. A truncated file (a
crashed recording) is read up to where it stops decoding; what was lost is reported, not raised.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from layouts.model import Rect
from recorder.media.compositor import frame_to_rgb, plane_views
from recorder.media.fmp4 import BoxScanner
from recorder.testing.clapper import CLAPPER_BEEP_HZ, CLAPPER_PERIOD_S, flash_onsets
from recorder.testing.video import nearest_participant

log = logging.getLogger(__name__)

# -- tolerances -------------------------------------------------------------------------------
# A video pts delta within this fraction of one frame of the stream's nominal frame duration
# counts as regular: the mp4 time base (1/15360 at 30 fps) represents 1/30 s exactly, so any
# real irregularity (a dropped or duplicated frame) is a whole frame off; 1% only absorbs the
# rounding of time bases that are not multiples of the frame rate.
PTS_REGULARITY_TOLERANCE_FRAMES = 0.01
# Flashes: a frame whose mean luma (in the region) rises above the clapper's threshold, half-way
# between its dark and its white (`recorder.testing.clapper.flash_onsets`): compression moves a
# flat area's mean by a few levels, the threshold is ~110 levels from both.
# Beeps: the audio demodulated at the clapper's 1 kHz and averaged over a centred window of this
# length. 20 ms nulls every frequency 50 Hz from 1 kHz, which is where all the participants'
# test tones are (300 + 150 k Hz), and leaves the onset sharp; centred, the 50% crossing of a
# step stays at the step (no group delay to correct).
BEEP_ENVELOPE_WINDOW_S = 0.020
# A beep starts where its envelope first crosses this fraction of the loudest beep's envelope.
# Half-way is immune to AAC's pre-echo (a low-level smear up to one 1024-sample frame before
# the onset) and to the fade-in a tone generator may apply.
BEEP_ONSET_FRACTION = 0.5
# Envelope below this fraction of the loudest beep counts as "no beep": a beep must fall below
# it before the next onset is counted, so one beep is never counted twice.
BEEP_RELEASE_FRACTION = 0.2
# The quietest beep level (envelope, full scale 1.0) that is a beep at all; below, there is none.
BEEP_MIN_LEVEL = 0.01
# A flash and a beep belong to the same clap when they are at most this far apart: far more than
# any sync error worth measuring, under half the clapper's period so a flash never pairs with
# the neighbouring clap's beep.
CLAP_PAIRING_WINDOW_S = 0.4 * CLAPPER_PERIOD_S
# A region's median colour matches a palette colour at most this far away (Euclidean, 8-bit
# RGB). The palette's colours are >= 100 apart (`PALETTE_MIN_DISTANCE`), so half of that can
# never match the wrong one; H.264 at our bitrates moves a flat area's median by a few levels.
COLOUR_MATCH_MAX_DISTANCE = 50.0
TIME_EPSILON_S = 1e-6  # float slack when comparing frame times with sampling times
# The region is shrunk by this fraction of its size on each side before its median is taken:
# tile frames, name labels and mute marks sit at the edges and must not vote.
REGION_INSET_FRACTION = 0.15


SCAN_BLOCK_BYTES = 1 << 20
# x264 writes its settings as text in an SEI of the first frame, which is in the first fragment.
X264_SEI_SEARCH_BYTES = 4 << 20
X264_SEI_PATTERN = re.compile(rb"x264 - core \d+.*? - options: ([ -~]+)")


# -- probe ------------------------------------------------------------------------------------
@dataclass(slots=True)
class StreamReport:
    """One stream as its packets describe it; times in seconds."""

    index: int
    kind: str  # "video" | "audio"
    codec: str
    profile: str | None
    bitrate_bps: float
    packets: int
    start_s: float | None
    duration_s: float  # presented: from the first pts (or 0) to the end of the last packet
    # video
    width: int | None = None
    height: int | None = None
    pixel_format: str | None = None
    colorspace: int | None = None  # AVColorSpace of the VUI: 6 = BT.601, 1 = BT.709, 2 = unset
    color_range: int | None = None  # AVColorRange: 1 = limited (16..235), 2 = full
    frame_rate: float | None = None  # the nominal (average) rate
    pts_delta_min_s: float | None = None
    pts_delta_max_s: float | None = None
    irregular_deltas: int = 0  # pts deltas more than the tolerance away from 1/frame_rate
    keyframes: int = 0
    keyframe_spacing_max_s: float | None = None  # including the tail after the last keyframe
    # audio
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(slots=True)
class FileReport:
    """A whole file: what `recorder inspect` prints."""

    path: str
    format: str
    size_bytes: int
    duration_s: float | None  # as the container states it
    bitrate_bps: float | None
    fragments: int
    playable_bytes: int  # the prefix made of complete boxes (fmp4.BoxScanner)
    streams: list[StreamReport] = field(default_factory=list)
    damage: str | None = None  # why reading stopped early, if it did
    # The options libx264 wrote into the stream (its "x264 - core ... options:" SEI), if any.
    x264_options: dict[str, str] = field(default_factory=dict)

    @property
    def video(self) -> StreamReport | None:
        return next((s for s in self.streams if s.kind == "video"), None)

    @property
    def audio(self) -> StreamReport | None:
        return next((s for s in self.streams if s.kind == "audio"), None)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(slots=True)
class _PacketLog:
    pts: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)
    keyframe_pts: list[int] = field(default_factory=list)
    bytes: int = 0


def probe(path: Path) -> FileReport:
    """Describe the file from its boxes and packets (no decoding)."""
    path = Path(path)
    scanner = BoxScanner()
    x264_options: dict[str, str] = {}
    with path.open("rb") as file:
        while block := file.read(SCAN_BLOCK_BYTES):
            if not x264_options and scanner.position < X264_SEI_SEARCH_BYTES:
                x264_options = parse_x264_options(block)
            scanner.feed(block)
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        logs = {s.index: _PacketLog() for s in streams}
        damage = None
        try:
            for packet in container.demux(streams):
                if packet.pts is None or packet.size == 0:
                    continue
                entry = logs[packet.stream.index]
                entry.pts.append(packet.pts)
                entry.durations.append(packet.duration or 0)
                entry.bytes += packet.size
                if packet.is_keyframe:
                    entry.keyframe_pts.append(packet.pts)
        except (av.FFmpegError, EOFError) as error:
            damage = f"demuxing stopped: {error}"
        duration_s = None if container.duration is None else container.duration / 1_000_000
        report = FileReport(
            path=str(path),
            format=container.format.name,
            size_bytes=scanner.position,
            duration_s=duration_s,
            bitrate_bps=(scanner.position * 8 / duration_s) if duration_s else None,
            fragments=scanner.fragments,
            playable_bytes=scanner.durable_bytes,
            damage=damage,
            x264_options=x264_options,
        )
        if damage is None and scanner.durable_bytes < scanner.position:
            report.damage = (
                f"{scanner.position - scanner.durable_bytes} bytes after the last complete box"
            )
        report.streams = [_stream_report(s, logs[s.index]) for s in streams]
    return report


def parse_x264_options(data: bytes) -> dict[str, str]:
    """The `name=value` options of an x264 version SEI found in `data` ({} if none)."""
    match = X264_SEI_PATTERN.search(data)
    if match is None:
        return {}
    pairs = (item.split(b"=", 1) for item in match.group(1).split())
    return {k.decode(): v.decode(errors="replace") for k, v in (p for p in pairs if len(p) == 2)}


def _stream_report(stream: av.stream.Stream, entry: _PacketLog) -> StreamReport:
    time_base = float(stream.time_base)
    context = stream.codec_context
    pts = sorted(entry.pts)
    start_s = pts[0] * time_base if pts else None
    end_s = None
    if pts:
        last = max(range(len(entry.pts)), key=lambda i: entry.pts[i])
        end_s = (entry.pts[last] + entry.durations[last]) * time_base
    duration_s = 0.0
    if start_s is not None and end_s is not None:
        # Packets before 0 are encoder priming (AAC's first 1024 samples) that the edit list
        # trims: they are never presented, so the stream's duration starts at 0.
        duration_s = end_s - max(start_s, 0.0)
    report = StreamReport(
        index=stream.index,
        kind=stream.type,
        codec=context.name,
        profile=context.profile,
        bitrate_bps=entry.bytes * 8 / duration_s if duration_s > 0 else 0.0,
        packets=len(pts),
        start_s=start_s,
        duration_s=duration_s,
    )
    if stream.type == "video":
        report.width, report.height = context.width, context.height
        report.pixel_format = context.pix_fmt
        report.colorspace, report.color_range = context.colorspace, context.color_range
        # The rate the stream's timestamps are built on (r_frame_rate); the average rate drifts
        # with every dropped frame, so it is no yardstick for regularity.
        rate = stream.base_rate or stream.guessed_rate or stream.average_rate
        report.frame_rate = float(rate) if rate else None
        deltas = np.diff(np.asarray(pts, dtype=np.int64)) * time_base
        if len(deltas):
            report.pts_delta_min_s = float(deltas.min())
            report.pts_delta_max_s = float(deltas.max())
            frame_s = 1.0 / report.frame_rate if report.frame_rate else float(np.median(deltas))
            off = np.abs(deltas - frame_s) > PTS_REGULARITY_TOLERANCE_FRAMES * frame_s
            report.irregular_deltas = int(off.sum())
        keys = sorted(entry.keyframe_pts)
        report.keyframes = len(keys)
        if keys and end_s is not None:
            bounds = [*(k * time_base for k in keys), end_s]
            report.keyframe_spacing_max_s = float(max(np.diff(bounds)))
    else:
        report.sample_rate = context.sample_rate
        report.channels = context.channels
    return report


# -- decoding, tolerant of a damaged tail -----------------------------------------------------
def iter_video_frames(path: Path) -> Iterator[av.VideoFrame]:
    """Every decodable video frame in presentation order; stops quietly at a damaged tail."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for packet in container.demux(stream):
                yield from packet.decode()
        except (av.FFmpegError, EOFError) as error:
            log.info("inspect: video of %s stops early: %s", path, error)


def read_audio(path: Path) -> tuple[np.ndarray, float, int]:
    """`(samples (channels, n) float32, time of the first sample in s, sample rate)`.

    Decoded frames are placed at their pts, so a gap stays a gap (silence) and the times of
    what is heard are the times a player would play them. Stops quietly at a damaged tail.
    """
    chunks: list[tuple[int, np.ndarray]] = []
    rate = 0
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros((1, 0), np.float32), 0.0, 0
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", rate=rate)
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    start = round(frame.pts * frame.time_base * rate)
                    for out in resampler.resample(frame):
                        chunks.append((start, out.to_ndarray()))
                        start += out.samples
        except (av.FFmpegError, EOFError) as error:
            log.info("inspect: audio of %s stops early: %s", path, error)
    if not chunks:
        return np.zeros((1, 0), np.float32), 0.0, rate
    first = chunks[0][0]
    channels = chunks[0][1].shape[0]
    total = max(start + data.shape[1] for start, data in chunks) - first
    samples = np.zeros((channels, total), np.float32)
    for start, data in chunks:
        samples[:, start - first : start - first + data.shape[1]] = data
    return samples, first / rate, rate


# -- sync -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Clap:
    """One flash and its beep; `offset_s` is audio minus video (positive: the sound is late)."""

    flash_s: float | None
    beep_s: float | None

    @property
    def offset_s(self) -> float | None:
        if self.flash_s is None or self.beep_s is None:
            return None
        return self.beep_s - self.flash_s


@dataclass(slots=True)
class SyncReport:
    flashes_s: list[float]
    beeps_s: list[float]
    claps: list[Clap]
    frame_s: float | None  # one video frame, the unit sync is usually judged in

    @property
    def offsets_s(self) -> list[float]:
        return [c.offset_s for c in self.claps if c.offset_s is not None]

    @property
    def max_abs_offset_s(self) -> float | None:
        offsets = self.offsets_s
        return max(abs(o) for o in offsets) if offsets else None

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["offsets_s"] = self.offsets_s
        data["max_abs_offset_s"] = self.max_abs_offset_s
        return data


def find_flashes(path: Path, region: Rect | None = None) -> tuple[list[float], float | None]:
    """Times (s) of the frames where `region` (default: the whole frame) flashes to white.

    Also returns one frame's duration (the smallest pts step). Only the Y plane is read.
    """
    times: list[float] = []
    levels: list[float] = []
    for frame in iter_video_frames(path):
        if frame.pts is None:
            continue
        luma = plane_views(frame)[0]
        if region is not None:
            luma = luma[region.y : region.bottom, region.x : region.right]
        times.append(float(frame.time))
        levels.append(float(luma.mean()))
    steps = np.diff(times)
    frame_s = float(steps[steps > 0].min()) if np.any(steps > 0) else None
    onsets = flash_onsets(np.asarray(times), np.asarray(levels))
    # A flash already on in the first frame has no measurable onset (it may have started
    # before the file did); `find_beeps` drops a beep already sounding at the start likewise.
    return [float(t) for t in onsets if times and t > times[0]], frame_s


def beep_envelope(
    samples: np.ndarray, rate: int, frequency_hz: float = CLAPPER_BEEP_HZ
) -> tuple[np.ndarray, int]:
    """The amplitude of the `frequency_hz` tone in `samples` (channels, n), sample by sample.

    Only where the averaging window lies wholly inside the audio (near the ends the other tones
    are not cancelled): returns `(envelope, index of its first sample in samples)`.
    """
    mono = samples.mean(axis=0, dtype=np.float64)
    n = np.arange(mono.shape[0])
    baseband = mono * np.exp(-2j * math.pi * frequency_hz * n / rate)
    window = max(1, round(BEEP_ENVELOPE_WINDOW_S * rate))
    sums = np.cumsum(np.concatenate([[0.0], baseband]))
    # Window [i, i + window) averaged and attributed to its centre, i + window // 2.
    means = (sums[window:] - sums[:-window]) / window
    return 2.0 * np.abs(means), window // 2


def find_beeps(samples: np.ndarray, start_s: float, rate: int) -> list[float]:
    """Onset times (s) of the beeps in decoded audio whose first sample is at `start_s`."""
    if rate <= 0 or samples.shape[1] <= BEEP_ENVELOPE_WINDOW_S * rate:
        return []
    envelope, first = beep_envelope(samples, rate)
    peak = float(envelope.max())
    if peak < BEEP_MIN_LEVEL:
        return []
    onsets = _rising_edges(envelope >= BEEP_ONSET_FRACTION * peak)
    releases = _rising_edges(envelope < BEEP_RELEASE_FRACTION * peak)
    # Walk the few crossings in time order: an onset counts only after a release. A beep already
    # sounding when the audio starts has no measurable onset: not armed until it ends.
    events = sorted([(int(i), True) for i in onsets] + [(int(i), False) for i in releases])
    beeps: list[float] = []
    armed = bool(envelope[0] < BEEP_RELEASE_FRACTION * peak)
    for index, is_onset in events:
        if is_onset and armed:
            beeps.append(start_s + (first + index) / rate)
            armed = False
        elif not is_onset:
            armed = True
    return beeps


def _rising_edges(condition: np.ndarray) -> np.ndarray:
    """Indexes where `condition` becomes true (index 0 if it starts true)."""
    edges = np.flatnonzero(np.diff(condition.astype(np.int8)) == 1) + 1
    return np.concatenate([[0], edges]) if condition[0] else edges


def pair_claps(
    flashes_s: list[float], beeps_s: list[float], window_s: float = CLAP_PAIRING_WINDOW_S
) -> list[Clap]:
    """Each flash with the nearest beep within `window_s`; the unpaired ones stay alone."""
    claps: list[Clap] = []
    unused = list(beeps_s)
    for flash in flashes_s:
        nearest = min(unused, key=lambda b: abs(b - flash), default=None)
        if nearest is not None and abs(nearest - flash) <= window_s:
            unused.remove(nearest)
            claps.append(Clap(flash, nearest))
        else:
            claps.append(Clap(flash, None))
    claps.extend(Clap(None, beep) for beep in unused)
    claps.sort(key=lambda c: c.flash_s if c.flash_s is not None else c.beep_s or 0.0)
    return claps


def measure_sync(path: Path, region: Rect | None = None) -> SyncReport:
    """Flashes in `region` (default: the whole frame), beeps in the mix, and their pairing."""
    flashes, frame_s = find_flashes(path, region)
    samples, start_s, rate = read_audio(path)
    beeps = find_beeps(samples, start_s, rate)
    return SyncReport(flashes, beeps, pair_claps(flashes, beeps), frame_s)


# -- presence ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PresenceSample:
    """At `time_s`, the participant index (palette) seen in each region; None: no match."""

    time_s: float
    seen: dict[str, int | None]


def region_colour(frame: av.VideoFrame, region: Rect) -> tuple[float, float, float]:
    """The per-channel median RGB of the inner part of `region` (the compositor's matrix)."""
    inset_x = int(region.width * REGION_INSET_FRACTION)
    inset_y = int(region.height * REGION_INSET_FRACTION)
    rgb = frame_to_rgb(frame)[
        region.y + inset_y : region.bottom - inset_y, region.x + inset_x : region.right - inset_x
    ]
    median = np.median(rgb.reshape(-1, 3), axis=0)
    return float(median[0]), float(median[1]), float(median[2])


def presence(path: Path, regions: Mapping[str, Rect], every_s: float = 0.0) -> list[PresenceSample]:
    """Which participant (index into `recorder.testing.video.PALETTE`) shows in each region.

    Frames are sampled at most every `every_s` seconds (0: every frame).
    """
    samples: list[PresenceSample] = []
    next_s = -math.inf
    for frame in iter_video_frames(path):
        time_s = float(frame.time) if frame.time is not None else 0.0
        if time_s < next_s - TIME_EPSILON_S:
            continue
        next_s = time_s + every_s
        seen = {
            name: nearest_participant(region_colour(frame, rect), COLOUR_MATCH_MAX_DISTANCE)
            for name, rect in regions.items()
        }
        samples.append(PresenceSample(time_s, seen))
    return samples
