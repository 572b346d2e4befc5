"""Where every incoming frame lands on the recording clock, and what each tick gets to show.

Live tracks and offline sources push the same way: `feed.push(frame, arrival_s)`, where the frame
carries `pts`/`time_base` (RTP time for live tracks: 1/90000 video, 1/48000 Opus audio) and
`arrival_s` is a reading of the recording's `Clock` (default: now). Each feed maps its pts to clock
time through an `_Anchor` (anchored to the arrival of its first frame, re-anchored when arrivals
drift from what the pts predict by more than `REANCHOR_THRESHOLD_S`, for late arrivals only when
the lateness lasts `LATE_REANCHOR_AFTER_S`) and then shows every frame one
common `PLAYOUT_DELAY_S` later. The delay is the same for audio and video, so a participant's audio
and video stay together, jitter up to the delay costs nothing, and a late joiner appears at the
tick its first frame was due. The feeds of one participant are linked (`_Link`): a sender whose
clock runs slow makes all of them late together, and when one re-anchors for that lateness the
others that are as late move with it, so lip-sync does not jump for the seconds between their own
re-anchors; a pts jump or a longer path on one track only moves that track.

Video: a small bounded buffer per feed; at a tick the newest frame due at or before it is shown and
kept until a newer one is due. Audio: converted to 48 kHz float into a bounded ring positioned in
samples on the clock; reading a span returns exactly that span, silence for gaps. Frames already
at 48 kHz in the ring's layout (what WebRTC's Opus decoder gives: s16 stereo) are converted by
numpy, the same values libswresample would give; anything else goes through libswresample.

Threads: each feed has exactly one pusher (the asyncio thread, live; the driver, offline) and the
media thread reads. Anchoring and resampling belong to the pusher and run outside any lock; the
buffers are guarded by one `threading.Lock` per feed, held only for deque/ring operations (no
media work), and the feed tables by one timeline lock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

import av
import numpy as np

from recorder.media.clock import RecordingClock
from recorder.presets import AUDIO_SAMPLE_RATE_HZ

log = logging.getLogger(__name__)

PLAYOUT_DELAY_S = 0.2  # every frame is shown this long after its anchored arrival time
# A frame that arrives more than this earlier or later than its pts predict re-anchors its feed
# (pts jump, sender clock reset, a stall). Smaller than the playout delay, so a stream that falls
# behind is re-anchored before its frames miss their ticks; larger than ordinary network jitter.
REANCHOR_THRESHOLD_S = 0.15
# Lateness re-anchors only once it has lasted this long (in arrival time). A stall of our own
# process (CPU starvation, a GC pause) or of the network delivers a backlog whose lateness shrinks
# back to nothing within the burst: re-anchoring on it would shift that track for good, and with
# it the participant's lip-sync, since their other track rarely re-anchors at the same instant.
# A late frame kept on its pts time is still shown if the lateness is under the playout delay.
# Lateness that lasts (a sender whose pts went back, a longer path) re-anchors after this.
LATE_REANCHOR_AFTER_S = 0.25
# When a feed re-anchors for lasting lateness of L seconds, each other feed of the participant
# that is itself late by at least L minus this moves by L too: a slow sender clock (all tracks
# late together, give or take their jitter and a stall's backlog) is one shift for the whole
# participant. Smaller than the threshold's half, so a sibling that is on time (a pts jump or a
# longer path on one track only) is never moved: it would have to be 0.1 s late already.
LINK_TOLERANCE_S = 0.05
# A sibling whose last frame is older than this says nothing about its lateness now (a camera
# turned off, muted audio): it is not moved, and anchors itself on its next frame as usual.
LINK_RECENT_S = 1.0
VIDEO_BUFFER_FRAMES = 16  # per feed: the playout delay at 60 fps plus jitter; then oldest dropped
VIDEO_STALE_AFTER_S = 1.5  # no newer frame due for this long: the caller shows a placeholder
AUDIO_BUFFER_S = 2.0  # per feed: unread audio kept ahead of the reader; then oldest dropped
# Audio that continues its feed within this much of the predicted position is written right after
# the previous samples: absorbs resampler rounding and arrival jitter without clicks. A larger
# difference is a real gap (lost packets, a pause) and leaves silence, or an overlap that is
# overwritten.
AUDIO_SNAP_TOLERANCE_S = 0.010
# A frame due within this of a tick counts as due at it: float sums of clock readings and pts
# are not exact, and a frame scheduled exactly on a tick must not slip to the next one.
DUE_EPSILON_S = 1e-6
# 48 kHz sample formats that numpy turns into the ring's float32 without libswresample: the
# element type and the scale to [-1, 1]. These are exactly libswresample's own conversions (s16
# times 2^-15, float copied), so the samples are bit for bit what the resampler would give,
# without its filter graph (~10 us a frame, for every frame of every participant).
_DIRECT_FORMATS: dict[str, tuple[type[np.generic], float | None]] = {
    "s16": (np.int16, 2.0**-15),
    "s16p": (np.int16, 2.0**-15),
    "flt": (np.float32, None),
    "fltp": (np.float32, None),
}


@dataclass(frozen=True, slots=True)
class PlayoutSettings:
    """The timeline's tunables; the defaults are the named constants above."""

    playout_delay_s: float = PLAYOUT_DELAY_S
    reanchor_threshold_s: float = REANCHOR_THRESHOLD_S
    video_buffer_frames: int = VIDEO_BUFFER_FRAMES
    video_stale_after_s: float = VIDEO_STALE_AFTER_S
    audio_buffer_s: float = AUDIO_BUFFER_S


def media_time_s(frame: av.VideoFrame | av.AudioFrame) -> float | None:
    """The frame's presentation time in seconds (`pts * time_base`), or None without a pts."""
    time_base = frame.time_base
    if frame.pts is None or time_base is None:
        return None
    # Integer product, one correctly rounded division: the same float as via a `Fraction`,
    # without making two of them for every frame of every feed.
    return frame.pts * time_base.numerator / time_base.denominator


class _Anchor:
    """Maps one feed's media time (pts in seconds) to clock time.

    The anchor is the first frame: its arrival is when its media instant happened. A frame that
    arrives earlier than the anchor predicts shows that the first frame was delayed (a slow first
    decode, a queue): the anchor moves earlier by that much, so the feed's latency is its fastest
    path, not its first frame's. A frame more than the threshold early re-anchors at once (the pts
    jumped ahead); lateness beyond the threshold re-anchors only once it has lasted
    `LATE_REANCHOR_AFTER_S` (the pts went back, the path got longer), since a stall's backlog is
    late only for the length of its burst. Times are kept relative to the anchor frame, because RTP
    pts in seconds are large and absolute sums would lose the precision of a tick comparison.
    Owned by the pusher's thread.
    """

    def __init__(
        self,
        feed: str,
        threshold_s: float,
        late_after_s: float = LATE_REANCHOR_AFTER_S,
        link: _Link | None = None,
    ) -> None:
        self.feed = feed  # for the log: which track re-anchored
        self.threshold_s = threshold_s
        self.late_after_s = late_after_s
        self.link = link  # the participant's other feeds; None: on its own
        if link is not None:
            link.add(self)
        self.late_since_s: float | None = None  # first arrival of the current late run
        self.late_floor_s = 0.0  # the least lateness in the current late run: what lasted
        self.media_s: float | None = None  # the anchor frame's media time
        self.clock_s = 0.0  # when the anchor frame's media instant happened
        self.reanchors = 0
        self.linked_shifts = 0  # moved because a sibling re-anchored for lasting lateness
        self.last_slide_s = 0.0  # how far the last `place` slid the anchor (<= 0)
        self.last_arrival_s: float | None = None
        self.last_lateness_s = 0.0  # the last frame's arrival after where it was placed

    def place(self, media_s: float, arrival_s: float) -> float:
        """The clock time this media instant happened at (before the playout delay)."""
        happened_s = self._place(media_s, arrival_s)
        self.last_arrival_s = arrival_s
        self.last_lateness_s = arrival_s - happened_s
        return happened_s

    def _place(self, media_s: float, arrival_s: float) -> float:
        self.last_slide_s = 0.0
        if self.media_s is None:
            self.media_s, self.clock_s = media_s, arrival_s
            return arrival_s
        predicted_s = self.clock_s + (media_s - self.media_s)
        drift_s = arrival_s - predicted_s
        if drift_s > self.threshold_s:
            if self.late_since_s is None:
                self.late_since_s, self.late_floor_s = arrival_s, drift_s
            self.late_floor_s = min(self.late_floor_s, drift_s)
            if arrival_s - self.late_since_s < self.late_after_s:
                return predicted_s  # maybe a passing stall: keep the pts timing
        else:
            self.late_since_s = None
        if abs(drift_s) > self.threshold_s:
            lasted_s = self.late_floor_s if drift_s > 0 else None
            self.media_s, self.clock_s = media_s, arrival_s
            self.late_since_s = None
            self.reanchors += 1
            log.info("%s: re-anchored after arrivals drifted %+.3f s from pts", self.feed, drift_s)
            if lasted_s is not None and self.link is not None:
                self.link.late_together(self, lasted_s, arrival_s)
            return arrival_s
        if drift_s < 0:
            self.clock_s += drift_s
            self.last_slide_s = drift_s
            return arrival_s
        return predicted_s

    def follow(self, lateness_s: float, now_s: float) -> bool:
        """A sibling re-anchored for `lateness_s` of lasting lateness at `now_s`: move by as much
        if this feed is about as late (`LINK_TOLERANCE_S`) and was heard from recently."""
        if self.media_s is None or self.last_arrival_s is None:
            return False  # its first frame anchors it at its own arrival
        if now_s - self.last_arrival_s > LINK_RECENT_S:
            return False
        if self.last_lateness_s < lateness_s - LINK_TOLERANCE_S:
            return False  # on time: the sibling's lateness is its own (a pts jump, its path)
        self.clock_s += lateness_s
        self.last_lateness_s -= lateness_s
        self.late_since_s = None
        self.linked_shifts += 1
        log.info("%s: moved %+.3f s with its participant's other track", self.feed, lateness_s)
        return True

    def unlink(self) -> _Link | None:
        """Leave the participant's link (the feed takes no more pushes); the link if that left
        it empty, for its owner to forget."""
        link, self.link = self.link, None
        if link is not None and link.discard(self):
            return link
        return None

    def clock_time(self, media_s: float) -> float | None:
        """Where `media_s` lands with the current anchor; None before the first frame."""
        if self.media_s is None:
            return None
        return self.clock_s + (media_s - self.media_s)


class _Link:
    """The anchors of one participant's feeds, which share a sender clock.

    A sender clock that runs slow against ours makes every track of that sender late by the same
    growing amount. Each feed would re-anchor on its own when its lateness crosses the threshold,
    but not at the same moment (their jitter differs), and between the two re-anchors lip-sync is
    off by the whole threshold, for seconds (minutes' worth of skew). So a re-anchor for lasting
    lateness moves the siblings that are as late by the same amount (`_Anchor.follow`). What is
    not shared: early frames (each feed slides to its own fastest path), re-anchors for early
    arrival (a pts jump ahead), and lateness one sibling does not show (a pts jump back or a
    longer path on one track). Used from the pusher's thread, which one participant's feeds
    share; membership changes with feeds under a lock.
    """

    def __init__(self, participant_id: str) -> None:
        self.participant_id = participant_id
        self._lock = threading.Lock()
        self._anchors: list[_Anchor] = []

    def add(self, anchor: _Anchor) -> None:
        with self._lock:
            self._anchors.append(anchor)

    def discard(self, anchor: _Anchor) -> bool:
        """Forget `anchor`; whether the link is now empty."""
        with self._lock:
            if anchor in self._anchors:
                self._anchors.remove(anchor)
            return not self._anchors

    def late_together(self, leader: _Anchor, lateness_s: float, now_s: float) -> None:
        """`leader` re-anchored for `lateness_s` of lasting lateness: its siblings follow."""
        with self._lock:
            siblings = [anchor for anchor in self._anchors if anchor is not leader]
        for anchor in siblings:
            anchor.follow(lateness_s, now_s)


@dataclass(frozen=True, slots=True)
class Picture:
    """What one video feed shows at a tick.

    `frame` is the newest frame due at or before the tick (None before the first is due); `due_s`
    is when it became due, in recording seconds. `stale` says the feed has had no newer frame for
    `VIDEO_STALE_AFTER_S` (or none at all): the compositor draws the placeholder instead.
    """

    frame: av.VideoFrame | None
    due_s: float | None
    stale: bool


@dataclass(frozen=True, slots=True)
class VideoStats:
    received: int  # frames pushed
    shown: int  # distinct frames returned at some tick
    skipped: int  # superseded by a newer frame before any tick showed them (input fps > output)
    dropped: int  # pushed out of a full buffer (the reader fell behind)
    reanchors: int
    refused: int = 0  # frames with no pixels (0 wide or 0 high): nothing to show, never queued
    linked_shifts: int = 0  # moved with another track of its participant (`_Link`)


@dataclass(frozen=True, slots=True)
class AudioStats:
    received_samples: int  # 48 kHz samples produced from the pushed frames
    late_samples: int  # arrived after their span had been read: dropped
    dropped_samples: int  # pushed out of a full ring before being read
    reanchors: int
    linked_shifts: int = 0  # moved with another track of its participant (`_Link`)


@dataclass(slots=True)
class _Queued:
    due_s: float  # clock time
    frame: av.VideoFrame


class VideoFeed:
    """One video track's frames on the clock. `push` from the pusher's thread only."""

    def __init__(
        self,
        feed_id: str,
        recording_clock: RecordingClock,
        settings: PlayoutSettings,
        link: _Link | None = None,
    ) -> None:
        if settings.video_buffer_frames < 1:
            raise ValueError(
                f"a video buffer holds at least one frame, got {settings.video_buffer_frames}"
            )
        self.feed_id = feed_id
        self._recording_clock = recording_clock
        self._playout_delay_s = settings.playout_delay_s
        self._stale_after_s = settings.video_stale_after_s
        self._anchor = _Anchor(f"video {feed_id}", settings.reanchor_threshold_s, link=link)
        self._lock = threading.Lock()
        self._queue: deque[_Queued] = deque()
        self._buffer_frames = settings.video_buffer_frames
        self._current: _Queued | None = None
        self._current_shown = False
        self._last_due_s = float("-inf")
        self._received = self._shown = self._skipped = self._dropped = self._refused = 0

    def push(self, frame: av.VideoFrame, arrival_s: float | None = None) -> None:
        """Queue a decoded frame that arrived at `arrival_s` (a clock reading; default now).

        A frame with no pixels is refused (counted): a remote decoder or connector may hand one
        over, and nothing downstream can scale it; the feed keeps showing its last picture.
        """
        if frame.width <= 0 or frame.height <= 0:
            with self._lock:
                self._received += 1
                self._refused += 1
            return
        if arrival_s is None:
            arrival_s = self._recording_clock.clock.now()
        media_s = media_time_s(frame)
        slide_s = 0.0
        if media_s is None:
            happened_s = arrival_s
        else:
            happened_s = self._anchor.place(media_s, arrival_s)
            slide_s = self._anchor.last_slide_s
        due_s = happened_s + self._playout_delay_s
        with self._lock:
            self._received += 1
            # When the anchor slid earlier, frames still queued were scheduled on the old
            # anchor: they move with it, or this frame would land on the same tick as theirs.
            if slide_s < 0:
                for queued in self._queue:
                    queued.due_s += slide_s
                self._last_due_s += slide_s
            # Frames are shown in push (decode) order: a small backwards slew of the anchor
            # must not reorder them.
            due_s = max(due_s, self._last_due_s)
            self._last_due_s = due_s
            if len(self._queue) >= self._buffer_frames:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append(_Queued(due_s, frame))

    def picture_at(self, clock_s: float) -> Picture:
        """The newest frame due at or before `clock_s`; older undisplayed ones count as skipped."""
        with self._lock:
            while self._queue and self._queue[0].due_s <= clock_s + DUE_EPSILON_S:
                if self._current is not None and not self._current_shown:
                    self._skipped += 1
                self._current = self._queue.popleft()
                self._current_shown = False
            current = self._current
            if current is not None and not self._current_shown:
                self._shown += 1
                self._current_shown = True
        if current is None:
            return Picture(frame=None, due_s=None, stale=True)
        return Picture(
            frame=current.frame,
            due_s=self._recording_clock.to_recording_s(current.due_s),
            stale=clock_s - current.due_s > self._stale_after_s,
        )

    def unlink(self) -> _Link | None:
        """Leave the participant's link (no more pushes); the link if it is now empty."""
        return self._anchor.unlink()

    def stats(self) -> VideoStats:
        with self._lock:
            return VideoStats(
                self._received,
                self._shown,
                self._skipped,
                self._dropped,
                self._anchor.reanchors,
                self._refused,
                self._anchor.linked_shifts,
            )


class _AudioRing:
    """Unread 48 kHz samples of one feed, addressed by absolute sample position on the clock.

    Holds the window `[start, end)`; positions in it that nothing was written to are zeros.
    Everything before `read_pos` has been read and is never stored again. Not thread-safe by
    itself: the owning feed's lock guards it.
    """

    def __init__(self, channels: int, capacity: int) -> None:
        self.data = np.zeros((channels, capacity), dtype=np.float32)
        self.capacity = capacity
        self.start: int | None = None
        self.end: int | None = None
        self.read_pos: int | None = None
        self.late_samples = 0
        self.dropped_samples = 0

    def _put(self, pos: int, samples: np.ndarray | None, count: int) -> None:
        """Write `samples` (or zeros when None) at absolute `pos`, wrapping around the ring."""
        if count <= 0:
            return
        first_index = pos % self.capacity
        first = min(count, self.capacity - first_index)
        if samples is None:
            self.data[:, first_index : first_index + first] = 0.0
            self.data[:, : count - first] = 0.0
        else:
            self.data[:, first_index : first_index + first] = samples[:, :first]
            self.data[:, : count - first] = samples[:, first:count]

    def write(self, pos: int, samples: np.ndarray) -> None:
        count = samples.shape[1]
        if self.read_pos is not None and pos < self.read_pos:
            late = min(count, self.read_pos - pos)
            self.late_samples += late
            samples, pos, count = samples[:, late:], pos + late, count - late
        if count == 0:
            return
        if count > self.capacity:  # only the newest ring-full can be kept
            if self.read_pos is not None:
                self.dropped_samples += count - self.capacity
            pos += count - self.capacity
            samples, count = samples[:, -self.capacity :], self.capacity
        if self.start is None or self.end is None or self.start == self.end:
            old_start = old_end = pos
        else:
            old_start, old_end = self.start, self.end
        new_start, new_end = min(old_start, pos), max(old_end, pos + count)
        if new_end - new_start > self.capacity:
            cut = new_end - self.capacity
            if self.read_pos is not None:  # before the first read, old audio is just pre-roll
                self.dropped_samples += max(0, min(cut, old_end) - max(new_start, old_start))
            new_start = cut
        # Zero what is in the window but neither held before nor written now: the gap between.
        if pos > old_end:
            gap_start = max(old_end, new_start)
            self._put(gap_start, None, pos - gap_start)
        elif pos + count < old_start:
            gap_start = max(pos + count, new_start)
            self._put(gap_start, None, old_start - gap_start)
        keep = max(0, new_start - pos)
        self._put(pos + keep, samples[:, keep:], count - keep)
        self.start, self.end = new_start, new_end

    def read(self, pos: int, count: int) -> np.ndarray:
        out = np.zeros((self.data.shape[0], count), dtype=np.float32)
        if self.start is not None and self.end is not None:
            lo, hi = max(pos, self.start), min(pos + count, self.end)
            if lo < hi:
                index, n, at = lo % self.capacity, hi - lo, lo - pos
                first = min(n, self.capacity - index)
                out[:, at : at + first] = self.data[:, index : index + first]
                out[:, at + first : at + n] = self.data[:, : n - first]
        read_end = pos + count
        self.read_pos = read_end if self.read_pos is None else max(self.read_pos, read_end)
        if self.start is not None and self.end is not None:
            self.start = min(max(self.start, self.read_pos), self.end)
            if self.start == self.end:
                self.start = self.end = self.read_pos
        return out

    @property
    def drained(self) -> bool:
        """Nothing left that a future read could return."""
        return self.end is None or (self.read_pos is not None and self.read_pos >= self.end)


class AudioFeed:
    """One audio track on the clock at 48 kHz. `push` and `end` from the pusher's thread only.

    The ring's channel count is set by the first frame: mono stays mono (the mixer centres it),
    anything with two or more channels becomes stereo. Frames at 48 kHz in that layout skip the
    resampler (`_direct_samples`); for the others a change of input format, rate or layout
    mid-stream gets a new resampler. A resampler that is given up has its tail kept.
    """

    def __init__(
        self,
        feed_id: str,
        recording_clock: RecordingClock,
        settings: PlayoutSettings,
        link: _Link | None = None,
    ) -> None:
        self.feed_id = feed_id
        self._recording_clock = recording_clock
        self._playout_delay_s = settings.playout_delay_s
        self._anchor = _Anchor(f"audio {feed_id}", settings.reanchor_threshold_s, link=link)
        self._capacity = max(1, round(settings.audio_buffer_s * AUDIO_SAMPLE_RATE_HZ))
        self._snap_samples = round(AUDIO_SNAP_TOLERANCE_S * AUDIO_SAMPLE_RATE_HZ)
        self._lock = threading.Lock()
        self._ring: _AudioRing | None = None
        self._layout: str | None = None
        self._resampler: av.AudioResampler | None = None
        self._input_shape: tuple[str, str, int] | None = None
        self._next_pos: int | None = None
        self._received_samples = 0
        self._ended = False

    @property
    def channels(self) -> int | None:
        """1 or 2 once the first frame was pushed."""
        return None if self._layout is None else (1 if self._layout == "mono" else 2)

    @property
    def ended(self) -> bool:
        return self._ended

    def push(self, frame: av.AudioFrame, arrival_s: float | None = None) -> None:
        """Convert and place a decoded frame that arrived at `arrival_s` (default: now)."""
        if self._ended:
            raise RuntimeError(f"audio feed {self.feed_id} has ended")
        if arrival_s is None:
            arrival_s = self._recording_clock.clock.now()
        media_s = media_time_s(frame)
        if media_s is not None:
            self._anchor.place(media_s, arrival_s)
        self._write(self._convert(frame, media_s), arrival_s)

    def _convert(
        self, frame: av.AudioFrame, media_s: float | None
    ) -> list[tuple[np.ndarray, float | None]]:
        """The frame as `(samples, media time)` spans for the ring: directly when numpy can
        (`_direct_samples`), else through the resampler (a new one when the input changed)."""
        if self._layout is None:
            self._layout = "mono" if frame.layout.nb_channels == 1 else "stereo"
        spans: list[tuple[np.ndarray, float | None]] = []
        direct = _direct_samples(frame, self._layout)
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is not None and (direct is not None or self._input_shape != shape):
            spans += _spans(self._resampler.resample(None))  # keep the old resampler's tail
            self._resampler = None
        if direct is not None:
            spans.append((direct, media_s))
            return spans
        if self._resampler is None:
            self._resampler = av.AudioResampler(
                format="fltp", layout=self._layout, rate=AUDIO_SAMPLE_RATE_HZ
            )
            self._input_shape = shape
        spans += _spans(self._resampler.resample(frame))
        return spans

    def end(self) -> None:
        """No more frames: flush the resampler's tail so the last samples are not lost."""
        if self._ended:
            return
        if self._resampler is not None:
            self._write(_spans(self._resampler.resample(None)), self._recording_clock.clock.now())
        self._ended = True

    def _position(self, media_s: float | None, arrival_s: float) -> int:
        """Where samples of media time `media_s` start, in absolute samples on the clock."""
        predicted: int | None = None
        if media_s is not None:
            happened_s = self._anchor.clock_time(media_s)
            if happened_s is not None:
                predicted = round((happened_s + self._playout_delay_s) * AUDIO_SAMPLE_RATE_HZ)
        if self._next_pos is not None and (
            predicted is None or abs(predicted - self._next_pos) <= self._snap_samples
        ):
            return self._next_pos
        if predicted is not None:
            return predicted
        return round((arrival_s + self._playout_delay_s) * AUDIO_SAMPLE_RATE_HZ)

    def _write(self, spans: list[tuple[np.ndarray, float | None]], arrival_s: float) -> None:
        channels = self.channels or 1
        for samples, media_s in spans:
            count = samples.shape[1]
            pos = self._position(media_s, arrival_s)
            self._next_pos = pos + count
            with self._lock:
                if self._ring is None:
                    self._ring = _AudioRing(channels, self._capacity)
                self._ring.write(pos, samples)
                self._received_samples += count

    def read(self, abs_pos: int, count: int) -> np.ndarray:
        """Samples `[abs_pos, abs_pos + count)` as `(channels, count)` float32; zeros for gaps."""
        with self._lock:
            if self._ring is None:
                return np.zeros((self.channels or 1, count), dtype=np.float32)
            return self._ring.read(abs_pos, count)

    @property
    def drained(self) -> bool:
        """Ended and every sample it had was read: the timeline can forget it."""
        with self._lock:
            return self._ended and (self._ring is None or self._ring.drained)

    def unlink(self) -> _Link | None:
        """Leave the participant's link (no more pushes); the link if it is now empty."""
        return self._anchor.unlink()

    def stats(self) -> AudioStats:
        with self._lock:
            ring = self._ring
            return AudioStats(
                self._received_samples,
                0 if ring is None else ring.late_samples,
                0 if ring is None else ring.dropped_samples,
                self._anchor.reanchors,
                self._anchor.linked_shifts,
            )


def _direct_samples(frame: av.AudioFrame, layout: str) -> np.ndarray | None:
    """A 48 kHz frame already in the ring's `layout` as `(channels, samples)` float32, converted
    by numpy; None when it needs libswresample (another rate, layout or sample format)."""
    direct = _DIRECT_FORMATS.get(frame.format.name)
    if direct is None or frame.sample_rate != AUDIO_SAMPLE_RATE_HZ or frame.layout.name != layout:
        return None
    dtype, scale = direct
    count, channels = frame.samples, frame.layout.nb_channels
    if frame.format.is_planar:
        raw = np.stack([np.frombuffer(p, dtype, count) for p in frame.planes[:channels]])
    else:  # interleaved in one plane
        raw = np.frombuffer(frame.planes[0], dtype, count * channels).reshape(count, channels).T
    if scale is None:
        return raw  # a view of the frame: the ring copies what it keeps
    return np.multiply(raw, np.float32(scale), dtype=np.float32)


def _spans(outputs: list[av.AudioFrame]) -> list[tuple[np.ndarray, float | None]]:
    """The resampler's output frames as `(samples, media time)` spans."""
    return [(out.to_ndarray(), media_time_s(out)) for out in outputs]


class Timeline:
    """Every feed of a recording on one `RecordingClock`: what the media thread reads per tick.

    Feeds are added when tracks appear and removed when they go; a removed audio feed is still
    read until its buffered samples (the playout delay's worth) have played, so a participant's
    last words are not cut. Reads are in recording time: `pictures(recording_s)` and
    `read_audio(start_sample, count)` in 48 kHz samples since the first tick.
    """

    def __init__(
        self, recording_clock: RecordingClock, settings: PlayoutSettings | None = None
    ) -> None:
        if recording_clock.sample_rate_hz != AUDIO_SAMPLE_RATE_HZ:
            raise ValueError(f"the timeline mixes at {AUDIO_SAMPLE_RATE_HZ} Hz")
        self.recording_clock = recording_clock
        self.settings = settings or PlayoutSettings()
        self._lock = threading.Lock()
        self._video: dict[str, VideoFeed] = {}
        self._audio: dict[str, AudioFeed] = {}
        self._links: dict[str, _Link] = {}  # participant id -> its feeds' anchors

    def add_video_feed(self, feed_id: str, participant_id: str | None = None) -> VideoFeed:
        """A new video feed (camera or screen share); its id must not be in use.

        `participant_id` links it with that participant's other feeds (`_Link`: one sender
        clock, one shift when it runs slow); None leaves it on its own.
        """
        with self._lock:
            if feed_id in self._video:
                raise ValueError(f"video feed {feed_id!r} already exists")
            feed = VideoFeed(
                feed_id, self.recording_clock, self.settings, self._link(participant_id)
            )
            self._video[feed_id] = feed
        return feed

    def add_audio_feed(self, feed_id: str, participant_id: str | None = None) -> AudioFeed:
        """A new audio feed (one per participant); its id must not be in use.

        `participant_id`: as for `add_video_feed`.
        """
        with self._lock:
            old = self._audio.get(feed_id)
            if old is not None and not old.ended:
                raise ValueError(f"audio feed {feed_id!r} already exists")
            feed = AudioFeed(
                feed_id, self.recording_clock, self.settings, self._link(participant_id)
            )
            self._audio[feed_id] = feed  # a rejoin replaces the draining old feed
        return feed

    def _link(self, participant_id: str | None) -> _Link | None:
        """The participant's link, made on first use (the timeline lock is held)."""
        if participant_id is None:
            return None
        link = self._links.get(participant_id)
        if link is None:
            link = self._links[participant_id] = _Link(participant_id)
        return link

    def _unlink(self, feed: VideoFeed | AudioFeed) -> None:
        """The feed takes no more pushes: its participant's other feeds no longer move it."""
        with self._lock:
            emptied = feed.unlink()
            if emptied is not None and self._links.get(emptied.participant_id) is emptied:
                del self._links[emptied.participant_id]

    def remove_video_feed(self, feed_id: str) -> None:
        """The track is gone: its pictures stop now (the layout drops its tile)."""
        with self._lock:
            feed = self._video.pop(feed_id, None)
        if feed is not None:
            self._unlink(feed)

    def remove_audio_feed(self, feed_id: str) -> None:
        """The track is gone: it plays out what it buffered, then leaves the reads.

        Call from the pusher's thread (it flushes the feed's resampler), after its last push.
        """
        with self._lock:
            feed = self._audio.get(feed_id)
        if feed is not None:
            feed.end()
            self._unlink(feed)

    def video_feed_ids(self) -> list[str]:
        with self._lock:
            return list(self._video)

    def pictures(self, recording_s: float) -> dict[str, Picture]:
        """Every video feed's picture at `recording_s` (a tick's time)."""
        clock_s = self.recording_clock.to_clock_s(recording_s)
        with self._lock:
            feeds = list(self._video.values())
        return {feed.feed_id: feed.picture_at(clock_s) for feed in feeds}

    def _absolute_sample(self, recording_sample: int) -> int:
        return round(self.recording_clock.origin_s * AUDIO_SAMPLE_RATE_HZ) + recording_sample

    def read_audio(self, start_sample: int, count: int) -> dict[str, np.ndarray]:
        """Every present audio feed's samples for `[start_sample, start_sample + count)`.

        Arrays are `(channels, count)` float32 at 48 kHz, channels 1 or 2, zeros where the feed
        had nothing. A feed is in the result from when it is added until it has drained after
        removal, so the mixer hears everyone present, visible or not.
        """
        if count < 0:
            raise ValueError(f"cannot read a negative span ({count} samples)")
        abs_pos = self._absolute_sample(start_sample)
        with self._lock:
            feeds = list(self._audio.values())
        result = {feed.feed_id: feed.read(abs_pos, count) for feed in feeds}
        gone = [feed for feed in feeds if feed.drained]
        if gone:
            with self._lock:
                for feed in gone:
                    if self._audio.get(feed.feed_id) is feed:
                        del self._audio[feed.feed_id]
        return result

    def video_stats(self) -> dict[str, VideoStats]:
        with self._lock:
            feeds = list(self._video.values())
        return {feed.feed_id: feed.stats() for feed in feeds}

    def audio_stats(self) -> dict[str, AudioStats]:
        with self._lock:
            feeds = list(self._audio.values())
        return {feed.feed_id: feed.stats() for feed in feeds}
