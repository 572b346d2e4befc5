"""One participant whose clock runs fast or slow against ours, through the media timeline.

Does the recorder keep a participant's lip-sync for an hour when the sender's clock is skewed?
The live soak (`recorder bench --soak`) cannot say: its publishers share our machine and our
clock. This study drives `recorder.media.timeline.Timeline` on a virtual clock with what a skewed
sender produces, deterministically and with no network, in seconds of CPU per simulated hour:

* **the sender**: 20 ms Opus-like audio frames (960 samples, s16 stereo at 48 kHz, pts in
  samples) and a 30 fps camera (pts at 90 kHz), both stamped on the sender's clock, which runs at
  `1 + skew_ppm / 1e6` times ours; RTP timestamps start at unrelated random offsets per track;
* **the network** (`Network`): one common path latency, a few ms of independent jitter per frame
  (exponential, capped), and now and then a stall of 50 to 100 ms that holds back both tracks
  and releases their backlog at once; every track is delivered in order (decode order);
* **the clap**: once a sender second, one video frame (the flash) and the first sample of one
  audio frame (the beep) mark the same sender instant, and carry the clap's number.

The recording side is the real timeline ticked at 30 fps: before each tick every frame that has
arrived is pushed with its arrival time, then the tick reads the pictures and its audio span, as
the media thread does. Per clap it records where the beep's sample landed, the tick that first
showed the flash and the time the flash was due; the A/V offset is audio minus video:

* `shown_offset_s`: beep minus the tick that shows the flash: what the file shows. It includes
  the flash's phase against our ticks (a frame shows at the first tick at or after it is due:
  0 to 1 frame), which a skewed sender sweeps through a whole frame every `1 / (30 * skew)`
  seconds (66 s at 500 ppm, 5.6 minutes at 100 ppm) however well the recorder keeps time;
* `offset_s`: beep minus the flash's due time: the recorder's own timing, without that phase.

`python -m recorder.testing.clock_skew [--minutes M] [--unlinked]` prints the study's table
(docs/reliability.md, "Long runs"); tests/test_timeline_clock_skew.py runs it as a test.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from recorder.media.clock import ManualClock, RecordingClock
from recorder.media.timeline import PlayoutSettings, Timeline
from recorder.presets import AUDIO_SAMPLE_RATE_HZ

SKEWS_PPM = (-500.0, -100.0, 100.0, 500.0)  # crystal oscillators: tens of ppm; cheap ones, more
RECORDING_FPS = 30
SENDER_FPS = 30
AUDIO_FRAME_SAMPLES = 960  # 20 ms at 48 kHz: Opus's usual frame, what WebRTC's decoder gives
VIDEO_RTP_RATE_HZ = 90_000
CLAP_PERIOD_S = 1.0  # one clap per sender second (a whole number of audio and video frames)
ORIGIN_S = 5000.0  # the clock reading at the first tick: arbitrary, far from zero
SENDER_LEAD_S = 0.5  # the sender captured this long before our first tick
RUN_OUT_S = 1.0  # ticks kept after the sender's last frame, so the last claps are heard
SYNC_SKIP_S = 2.0  # the first claps: the anchors settle on the fastest path first
SYNC_WINDOW_S = 60.0  # claps whose medians are compared at the start and the end
SECONDS_PER_HOUR = 3600.0
FEED = "sender"  # the participant
AUDIO_FEED, VIDEO_FEED = f"{FEED}/audio", f"{FEED}/camera"
AUDIO_FRAME_S = AUDIO_FRAME_SAMPLES / AUDIO_SAMPLE_RATE_HZ
AUDIO_FRAMES_PER_CLAP = round(CLAP_PERIOD_S / AUDIO_FRAME_S)
VIDEO_FRAMES_PER_CLAP = round(CLAP_PERIOD_S * SENDER_FPS)
MAX_CLAPS = 32_766  # a beep's one s16 sample holds its clap's number plus one: 9 hours
FLASHES_KEPT = 8  # flash frames remembered until a tick shows them (one a second is pushed)
LUMA_WHITE, LUMA_DARK = 235, 16


@dataclass(frozen=True, slots=True)
class Network:
    """The path between the sender and us: latency, per-frame jitter, stalls of both tracks."""

    latency_s: float = 0.040  # one way, the same for audio and video
    jitter_mean_s: float = 0.003  # exponential, per frame and track: a few ms
    jitter_max_s: float = 0.025  # its tail is cut here
    stall_every_s: float = 60.0  # mean interval between stalls (exponential)
    stall_min_s: float = 0.05  # a stall holds both tracks back for 50 to 100 ms
    stall_max_s: float = 0.10


@dataclass(frozen=True, slots=True)
class Clap:
    """Where one clap landed in the recording (recording seconds; None: not found)."""

    index: int
    sender_s: float
    beep_s: float | None
    flash_shown_s: float | None  # the first tick that showed the flash
    flash_due_s: float | None  # when the timeline scheduled it

    @property
    def offset_s(self) -> float | None:
        """Audio minus video on the timeline's schedule: the recorder's own timing."""
        if self.beep_s is None or self.flash_due_s is None:
            return None
        return self.beep_s - self.flash_due_s

    @property
    def shown_offset_s(self) -> float | None:
        """Audio minus video as the file shows it (video at the tick that showed it)."""
        if self.beep_s is None or self.flash_shown_s is None:
            return None
        return self.beep_s - self.flash_shown_s


@dataclass(slots=True)
class SkewRun:
    """One simulated recording of a skewed sender, and what its claps show."""

    skew_ppm: float
    duration_s: float
    seed: int
    claps: list[Clap] = field(default_factory=list)
    audio_reanchors: int = 0
    video_reanchors: int = 0
    linked_shifts: int = 0  # anchors moved because their sibling re-anchored (0: not linked)
    late_samples: int = 0  # audio that arrived after its span was read (dropped)
    stalls: int = 0
    cpu_s: float = 0.0

    def _window(self, first_s: float, last_s: float, shown: bool) -> list[float]:
        values = []
        for clap in self.claps:
            offset = clap.shown_offset_s if shown else clap.offset_s
            if offset is not None and first_s <= clap.sender_s <= last_s:
                values.append(offset)
        return values

    def start_offset_s(self, shown: bool = False) -> float | None:
        """The median offset over the claps of the first `SYNC_WINDOW_S` (after the skip)."""
        values = self._window(SYNC_SKIP_S, SYNC_SKIP_S + SYNC_WINDOW_S, shown)
        return statistics.median(values) if values else None

    def end_offset_s(self, shown: bool = False) -> float | None:
        """The median offset over the claps of the last `SYNC_WINDOW_S`."""
        values = self._window(self.duration_s - SYNC_WINDOW_S, self.duration_s, shown)
        return statistics.median(values) if values else None

    def drift_frames_per_hour(self, shown: bool = False) -> float | None:
        """End minus start offset, in recording frames, scaled to an hour."""
        start, end = self.start_offset_s(shown), self.end_offset_s(shown)
        if start is None or end is None:
            return None
        return (end - start) * RECORDING_FPS * SECONDS_PER_HOUR / self.duration_s

    def largest_jump_s(self) -> float:
        """The largest distance of any clap's `offset_s` from the start median: a track that
        moved against the other (a separate re-anchor) shows here even if it came back."""
        start = self.start_offset_s()
        offsets = self._window(SYNC_SKIP_S, self.duration_s, shown=False)
        if start is None or not offsets:
            return float("inf")
        return max(abs(offset - start) for offset in offsets)

    def claps_found(self) -> int:
        return sum(1 for c in self.claps if c.offset_s is not None)

    def summary(self) -> dict[str, object]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000.0, 1)

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {
            "skew_ppm": self.skew_ppm,
            "minutes": round(self.duration_s / 60.0, 1),
            "offset_start_ms": ms(self.start_offset_s()),
            "offset_end_ms": ms(self.end_offset_s()),
            "drift_frames_per_hour": rounded(self.drift_frames_per_hour()),
            "largest_jump_ms": ms(self.largest_jump_s()),
            "shown_offset_start_ms": ms(self.start_offset_s(shown=True)),
            "shown_offset_end_ms": ms(self.end_offset_s(shown=True)),
            "shown_drift_frames_per_hour": rounded(self.drift_frames_per_hour(shown=True)),
            "claps": f"{self.claps_found()}/{len(self.claps)}",
            "reanchors_audio_video": f"{self.audio_reanchors}/{self.video_reanchors}",
            "linked_shifts": self.linked_shifts,
            "late_samples": self.late_samples,
            "stalls": self.stalls,
            "cpu_s": round(self.cpu_s, 1),
        }


def arrivals(
    capture_s: np.ndarray, network: Network, stalls: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """When frames captured at `capture_s` (our clock) come out of the decoder, in order.

    `stalls` holds `(start, length)` rows in arrival time: a frame due inside one arrives at its
    end, with the backlog.
    """
    jitter = rng.exponential(network.jitter_mean_s, capture_s.size)
    jitter = np.minimum(jitter, network.jitter_max_s)
    arrival = capture_s + network.latency_s + jitter
    if stalls.size:
        index = np.searchsorted(stalls[:, 0], arrival, side="right") - 1
        held = index >= 0
        ends = stalls[np.maximum(index, 0), 0] + stalls[np.maximum(index, 0), 1]
        held &= arrival < ends
        arrival = np.where(held, ends, arrival)
    return np.maximum.accumulate(arrival)  # delivered in order


def _stalls(duration_s: float, network: Network, rng: np.random.Generator) -> np.ndarray:
    """Stalls as `(start, length)` rows in order, over `duration_s` from the sender's start."""
    rows, at = [], 0.0
    while network.stall_every_s > 0:
        at += rng.exponential(network.stall_every_s)
        if at >= duration_s:
            break
        rows.append((at, rng.uniform(network.stall_min_s, network.stall_max_s)))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def _video_frame(luma: int) -> av.VideoFrame:
    planes = np.full((24, 16), 128, dtype=np.uint8)
    planes[:16] = luma
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    frame.time_base = Fraction(1, VIDEO_RTP_RATE_HZ)
    return frame


def _audio_frame(marker: int) -> av.AudioFrame:
    """Silence, but for `marker` (0: none) in the first sample of both channels."""
    data = np.zeros((1, 2 * AUDIO_FRAME_SAMPLES), dtype=np.int16)
    data[0, :2] = marker
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
    frame.sample_rate = AUDIO_SAMPLE_RATE_HZ
    frame.time_base = Fraction(1, AUDIO_SAMPLE_RATE_HZ)
    return frame


@dataclass(slots=True)
class _Sender:
    """What the skewed sender sends and when each frame comes out of our decoder."""

    audio_arrival: list[float]
    video_arrival: list[float]
    audio_pts0: int
    video_pts0: int
    stalls: int

    @classmethod
    def make(
        cls, skew_ppm: float, duration_s: float, network: Network, rng: np.random.Generator
    ) -> _Sender:
        rate = 1.0 + skew_ppm * 1e-6  # sender seconds per second of ours
        audio_sender_s = np.arange(round(duration_s / AUDIO_FRAME_S)) * AUDIO_FRAME_S
        video_sender_s = np.arange(round(duration_s * SENDER_FPS)) / SENDER_FPS
        start_s = ORIGIN_S - SENDER_LEAD_S  # our clock when the sender's clock read 0
        stalls = _stalls(duration_s / rate + RUN_OUT_S, network, rng)
        stalls[:, 0] += start_s
        audio = arrivals(start_s + audio_sender_s / rate, network, stalls, rng)
        video = arrivals(start_s + video_sender_s / rate, network, stalls, rng)
        return cls(
            audio_arrival=audio.tolist(),
            video_arrival=video.tolist(),
            audio_pts0=int(rng.integers(0, 2**31)),  # RTP timestamps: unrelated random starts
            video_pts0=int(rng.integers(0, 2**31)),
            stalls=len(stalls),
        )


class _Recording:
    """The timeline with the sender's two feeds, ticked as the media thread does; finds claps."""

    def __init__(self, settings: PlayoutSettings | None, linked: bool, claps: int) -> None:
        self.clock = ManualClock(ORIGIN_S)
        self.recording_clock = RecordingClock(self.clock, RECORDING_FPS)
        self.recording_clock.start()
        self.timeline = Timeline(self.recording_clock, settings)
        participant_id = FEED if linked else None
        self.audio = self.timeline.add_audio_feed(AUDIO_FEED, participant_id)
        self.video = self.timeline.add_video_feed(VIDEO_FEED, participant_id)
        self.plain_audio, self.plain_video = _audio_frame(0), _video_frame(LUMA_DARK)
        self.flash_clap: dict[int, tuple[int, av.VideoFrame]] = {}  # id(frame) -> clap, frame
        # Per clap: the beep's, the flash's shown and due times (recording seconds).
        self.found: list[list[float | None]] = [[None, None, None] for _ in range(claps)]

    def push_audio(self, index: int, pts: int, arrival_s: float) -> None:
        clap, into = divmod(index, AUDIO_FRAMES_PER_CLAP)
        frame = _audio_frame(clap + 1) if into == 0 else self.plain_audio
        frame.pts = pts
        self.audio.push(frame, arrival_s)

    def push_video(self, index: int, pts: int, arrival_s: float) -> None:
        clap, into = divmod(index, VIDEO_FRAMES_PER_CLAP)
        frame = self.plain_video
        if into == 0:
            frame = _video_frame(LUMA_WHITE)
            self.flash_clap[id(frame)] = (clap, frame)
        frame.pts = pts
        self.video.push(frame, arrival_s)

    def tick(self, index: int) -> None:
        """One tick: its picture and its audio span, and any clap they show."""
        self.clock.set(max(self.clock.now(), self.recording_clock.tick_due_s(index)))
        recording_s = self.recording_clock.tick_s(index)
        picture = self.timeline.pictures(recording_s)[VIDEO_FEED]
        if picture.frame is not None and picture.frame is not self.plain_video:
            shown = self.flash_clap.pop(id(picture.frame), None)
            if shown is not None and shown[0] < len(self.found):
                self.found[shown[0]][1:] = [recording_s, picture.due_s]
        span_start, span_count = self.recording_clock.audio_span(index)
        heard = self.timeline.read_audio(span_start, span_count)[AUDIO_FEED][0]
        for sample in np.flatnonzero(heard):  # only beeps are not silent: each says its clap
            clap = round(float(heard[sample]) * 32768.0) - 1
            if 0 <= clap < len(self.found) and self.found[clap][0] is None:
                self.found[clap][0] = (span_start + int(sample)) / AUDIO_SAMPLE_RATE_HZ
        if len(self.flash_clap) > FLASHES_KEPT:  # superseded before a tick showed them
            for key in list(self.flash_clap)[: len(self.flash_clap) - FLASHES_KEPT]:
                del self.flash_clap[key]


def simulate(
    skew_ppm: float,
    duration_s: float,
    *,
    seed: int = 1,
    network: Network | None = None,
    settings: PlayoutSettings | None = None,
    linked: bool = True,
) -> SkewRun:
    """`duration_s` of one skewed sender recorded through the timeline; every clap located.

    `linked`: the sender's two feeds are added as one participant's (what a live recording
    does, `recorder.rooms.timeline_sink`); False adds them as strangers, for comparison.
    """
    began_cpu = time.process_time()
    rng = np.random.default_rng(seed)
    sender = _Sender.make(skew_ppm, duration_s, network or Network(), rng)
    claps = round(duration_s / CLAP_PERIOD_S)
    if claps > MAX_CLAPS:
        raise ValueError(f"at most {MAX_CLAPS} claps can be told apart, not {claps}")
    recording = _Recording(settings, linked, claps)
    audio, video = sender.audio_arrival, sender.video_arrival
    a = v = 0
    ticks = round(
        (duration_s / (1.0 + skew_ppm * 1e-6) + SENDER_LEAD_S + RUN_OUT_S) * RECORDING_FPS
    )
    for tick in range(ticks):
        due_s = recording.recording_clock.tick_due_s(tick)
        while True:  # every arrival up to the tick, in arrival order
            next_audio = audio[a] if a < len(audio) else math.inf
            next_video = video[v] if v < len(video) else math.inf
            if min(next_audio, next_video) > due_s:
                break
            if next_audio <= next_video:
                recording.push_audio(a, sender.audio_pts0 + a * AUDIO_FRAME_SAMPLES, next_audio)
                a += 1
            else:
                pts = sender.video_pts0 + v * VIDEO_RTP_RATE_HZ // SENDER_FPS
                recording.push_video(v, pts, next_video)
                v += 1
        recording.tick(tick)
    audio_stats = recording.timeline.audio_stats()[AUDIO_FEED]
    video_stats = recording.timeline.video_stats()[VIDEO_FEED]
    return SkewRun(
        skew_ppm=skew_ppm,
        duration_s=duration_s,
        seed=seed,
        claps=[
            Clap(k, k * CLAP_PERIOD_S, beep, shown, due)
            for k, (beep, shown, due) in enumerate(recording.found)
        ],
        audio_reanchors=audio_stats.reanchors,
        video_reanchors=video_stats.reanchors,
        linked_shifts=audio_stats.linked_shifts + video_stats.linked_shifts,
        late_samples=audio_stats.late_samples,
        stalls=sender.stalls,
        cpu_s=time.process_time() - began_cpu,
    )


def format_table(runs: list[SkewRun]) -> str:
    """The study's runs, one line each."""
    rows = [run.summary() for run in runs]
    keys = list(rows[0]) if rows else []
    lines = [" | ".join(keys)]
    lines += [" | ".join(str(row[key]) for key in keys) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m recorder.testing.clock_skew`: the study, one line per skew."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skew", type=float, action="append", help="ppm (repeatable)")
    parser.add_argument("--unlinked", action="store_true", help="feeds as strangers")
    args = parser.parse_args(argv)
    runs = [
        simulate(skew, args.minutes * 60.0, seed=args.seed, linked=not args.unlinked)
        for skew in (args.skew or SKEWS_PPM)
    ]
    print(format_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
