"""Time sources and the recording clock.

Everything on the media side reads time through a `Clock`, so live recording runs on the monotonic
clock while offline rendering and tests run on a `ManualClock` that only moves when told to: no
test sleeps, and an offline render runs as fast as the CPU allows with the same code path.

The `RecordingClock` turns a clock into the recording's constant-frame-rate time axis: it starts
at the first tick, output frame i has pts i at time base 1/fps, and audio pts count samples at
48 kHz (CONTRACT.md §5, DESIGN.md "Time").
"""

from __future__ import annotations

import math
import threading
import time
from fractions import Fraction
from typing import Protocol

from recorder.presets import AUDIO_SAMPLE_RATE_HZ

TICK_EPSILON = 1e-9  # in ticks: far below one frame, far above float rounding of i / fps


class Clock(Protocol):
    """A monotonic time source in seconds; only differences between readings mean anything."""

    def now(self) -> float:
        """The current reading, in seconds."""
        ...

    def sleep_until(self, deadline_s: float, interrupt: threading.Event | None = None) -> bool:
        """Block until the clock reads `deadline_s` or later.

        Returns False when `interrupt` was set before the deadline (the caller is stopping), so a
        paced loop can be woken without waiting for its next tick.
        """
        ...


class MonotonicClock:
    """The live clock: `time.monotonic`, which never jumps when the wall clock is adjusted."""

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, deadline_s: float, interrupt: threading.Event | None = None) -> bool:
        remaining_s = deadline_s - time.monotonic()
        if interrupt is None:
            if remaining_s > 0:
                time.sleep(remaining_s)
            return True
        if interrupt.is_set():
            return False
        if remaining_s > 0:
            return not interrupt.wait(remaining_s)
        return True


class ManualClock:
    """A virtual clock for offline rendering and tests: it moves only by `advance`/`set`.

    `sleep_until` jumps straight to the deadline instead of waiting, so a loop paced by this
    clock runs at CPU speed and still sees exactly the times it would see live. Readings are
    guarded by a lock because the pushing (asyncio) thread and the media thread both read it.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = float(start_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` (never backwards) and return the new reading."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back (advance by {seconds} s)")
        with self._lock:
            self._now_s += seconds
            return self._now_s

    def set(self, now_s: float) -> None:
        """Jump to `now_s`, which must not be earlier than the current reading."""
        with self._lock:
            if now_s < self._now_s:
                raise ValueError(f"a monotonic clock cannot go back ({self._now_s} -> {now_s})")
            self._now_s = float(now_s)

    def sleep_until(self, deadline_s: float, interrupt: threading.Event | None = None) -> bool:
        if interrupt is not None and interrupt.is_set():
            return False
        with self._lock:
            self._now_s = max(self._now_s, float(deadline_s))
        return True


class RecordingClock:
    """The recording's time axis on top of a `Clock`: constant frame rate, started at tick 0.

    Tick i is due at `origin_s + i / fps` on the underlying clock; its video pts is i at time base
    1/fps and the audio it covers is samples `[audio_samples_before(i), audio_samples_before(i+1))`
    at 48 kHz, so the audio track never drifts from the video track by even one sample per hour.
    """

    def __init__(self, clock: Clock, fps: int, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if sample_rate_hz <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate_hz}")
        self.clock = clock
        self.fps = fps
        self.sample_rate_hz = sample_rate_hz
        self.video_time_base = Fraction(1, fps)
        self.audio_time_base = Fraction(1, sample_rate_hz)
        self._origin_s: float | None = None

    @property
    def started(self) -> bool:
        return self._origin_s is not None

    @property
    def origin_s(self) -> float:
        """The clock reading of tick 0; raises until `start` was called."""
        if self._origin_s is None:
            raise RuntimeError("the recording clock has not started (no first tick yet)")
        return self._origin_s

    def start(self, at_s: float | None = None) -> float:
        """Start the recording at `at_s` (default: now); it can start only once."""
        if self._origin_s is not None:
            raise RuntimeError("the recording clock has already started")
        self._origin_s = self.clock.now() if at_s is None else float(at_s)
        return self._origin_s

    def to_recording_s(self, clock_s: float) -> float:
        """A clock reading as seconds since the first tick (negative before it)."""
        return clock_s - self.origin_s

    def to_clock_s(self, recording_s: float) -> float:
        """Seconds since the first tick as a clock reading."""
        return self.origin_s + recording_s

    def now_s(self) -> float:
        """Seconds since the first tick, now."""
        return self.clock.now() - self.origin_s

    def tick_s(self, index: int) -> float:
        """The recording time of tick `index` (= its video pts times the time base)."""
        return index / self.fps

    def tick_due_s(self, index: int) -> float:
        """The clock reading at which tick `index` is due."""
        return self.origin_s + index / self.fps

    def tick_at(self, recording_s: float) -> int:
        """The last tick at or before `recording_s` (how far a late loop has to catch up)."""
        # The epsilon keeps a time computed as i / fps on tick i despite float rounding.
        return math.floor(recording_s * self.fps + TICK_EPSILON)

    def audio_samples_before(self, index: int) -> int:
        """How many 48 kHz samples precede tick `index`: the audio pts of that tick's span."""
        return index * self.sample_rate_hz // self.fps

    def audio_span(self, index: int) -> tuple[int, int]:
        """The `(start_sample, count)` of audio that tick `index` covers."""
        start = self.audio_samples_before(index)
        return start, self.audio_samples_before(index + 1) - start

    def wait_for_tick(self, index: int, interrupt: threading.Event | None = None) -> bool:
        """Block until tick `index` is due; False when `interrupt` was set first."""
        return self.clock.sleep_until(self.tick_due_s(index), interrupt)
