"""The audio mix: every present participant, summed at 48 kHz, limited, cut into encoder frames.

The engine hands the mixer one span per tick from `Timeline.read_audio` (every present
participant, visible or not: CONTRACT.md §5) and gets back `av.AudioFrame`s (fltp, 48 kHz,
`frame_samples` each, 1024 for AAC) whose pts count samples since the first tick. On the way it
meters every participant in dBFS per `LEVEL_WINDOW_S` and turns the levels into a speaking state
with hysteresis, which the roster copies into `ParticipantView.speaking`/`last_spoke`.

The sum is float32; a look-ahead limiter keeps it under `LIMITER_CEILING_DBFS` with smooth gain
changes instead of clipping. The limiter is computed per `LIMITER_BLOCK_SAMPLES` block with numpy
(a running minimum gives the release recursion in closed form), so nothing here loops per sample.
Its look-ahead delays the output by `LIMITER_LOOKAHEAD_BLOCKS` blocks in processing only: pts stay
those of the input, and `flush` returns the tail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from recorder.presets import AUDIO_SAMPLE_RATE_HZ

AAC_FRAME_SAMPLES = 1024  # what the AAC encoder takes per frame

LIMITER_CEILING_DBFS = -1.0  # the mix never exceeds this (inter-sample headroom for AAC)
LIMITER_BLOCK_SAMPLES = 48  # 1 ms: the granularity of gain changes
LIMITER_LOOKAHEAD_BLOCKS = 5  # 5 ms: the gain is down before a peak arrives
LIMITER_ATTACK_DB_PER_MS = 3.0  # how fast the gain falls ahead of a peak (within the look-ahead)
LIMITER_RELEASE_DB_PER_S = 40.0  # how fast it comes back after one: slow enough not to pump

LEVEL_WINDOW_S = 0.02  # one level reading per 20 ms window of each participant
SILENCE_DBFS = -120.0  # the level of digital silence (instead of -inf)
SPEAKING_ON_DBFS = -40.0  # above this a participant may be starting to speak
SPEAKING_OFF_DBFS = -50.0  # below this they may have stopped; in between nothing changes
SPEAKING_ON_MIN_S = 0.25  # loud this long (no drop below OFF) to count as speaking: a cough is not
SPEAKING_OFF_MIN_S = 0.6  # quiet this long to stop speaking: pauses between words do not count


@dataclass(frozen=True, slots=True)
class SpeechState:
    """A participant's loudness and speaking state after the last full level window.

    Times are recording seconds. `last_spoke_s` is the end of the last window in which the
    participant was speaking (None: not yet): what `ParticipantView.last_spoke` wants.
    """

    level_dbfs: float
    speaking: bool
    last_spoke_s: float | None


def dbfs(power: np.ndarray | float) -> np.ndarray:
    """Mean square power relative to full scale as dBFS, floored at `SILENCE_DBFS`.

    A full-scale sine has a mean square of 1/2, so it reads -3.01 dBFS.
    """
    power = np.asarray(power, dtype=np.float64)
    floor = 10.0 ** (SILENCE_DBFS / 10.0)
    return 10.0 * np.log10(np.maximum(power, floor))


def _power(samples: np.ndarray) -> np.ndarray:
    """Per-sample power (float64) averaged over the channels: one channel needs no average."""
    power = np.square(samples, dtype=np.float64)
    if power.shape[0] == 1:
        return power[0]
    return np.add.reduce(power, axis=0) / power.shape[0]


class _SpeechDetector:
    """Hysteresis on one participant's levels: separate thresholds and minimum durations."""

    def __init__(self) -> None:
        self.speaking = False
        self.level_dbfs = SILENCE_DBFS
        self.last_spoke_s: float | None = None
        self._loud_s = 0.0
        self._quiet_s = 0.0
        self._pending_power = np.zeros(0, dtype=np.float64)

    def feed(self, power: np.ndarray, end_s: float, window: int) -> None:
        """Add per-sample power ending at recording time `end_s`; decide per full window."""
        power = np.concatenate([self._pending_power, power]) if self._pending_power.size else power
        full = power.size // window
        self._pending_power = power[full * window :].copy()
        if full == 0:
            return
        # Sums divided by the count: what `mean` computes, without its Python-level wrapper
        # (a few microseconds a call, per participant per tick).
        levels = dbfs(np.add.reduce(power[: full * window].reshape(full, window), axis=1) / window)
        window_s = window / AUDIO_SAMPLE_RATE_HZ
        first_end_s = end_s - (self._pending_power.size + (full - 1) * window) / (
            AUDIO_SAMPLE_RATE_HZ
        )
        # A short Python loop per 20 ms window (50 per second per participant): the state
        # machine is sequential by nature and this is not the per-sample path.
        for index, level in enumerate(levels.tolist()):
            self._step(level, window_s, first_end_s + index * window_s)
        self.level_dbfs = float(levels[-1])

    def _step(self, level: float, window_s: float, window_end_s: float) -> None:
        if self.speaking:
            if level < SPEAKING_OFF_DBFS:
                self._quiet_s += window_s
                if self._quiet_s >= SPEAKING_OFF_MIN_S - 1e-9:
                    self.speaking = False
                    self._loud_s = 0.0
            elif level >= SPEAKING_ON_DBFS:
                self._quiet_s = 0.0
            if self.speaking:
                self.last_spoke_s = window_end_s
        elif level >= SPEAKING_ON_DBFS:
            self._loud_s += window_s
            if self._loud_s >= SPEAKING_ON_MIN_S - 1e-9:
                self.speaking = True
                self._quiet_s = 0.0
                self.last_spoke_s = window_end_s
        elif level < SPEAKING_OFF_DBFS:
            self._loud_s = 0.0

    def state(self) -> SpeechState:
        return SpeechState(self.level_dbfs, self.speaking, self.last_spoke_s)


class _Limiter:
    """Look-ahead peak limiter over fixed blocks; keeps |x| <= ceiling with smooth gain ramps.

    Gain is decided at block boundaries (in dB, <= 0) and ramped linearly across each block. The
    boundary gain before and after block k are both capped by block k's own need, so a ramp never
    lets a sample through above the ceiling. Ahead of a peak the caps rise by the attack slope per
    block (the gain slides down before it); after it the gain recovers by the release slope,
    `g[k] = min(cap[k], g[k-1] + release)`, which in closed form is a running minimum.
    """

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.ceiling = 10.0 ** (LIMITER_CEILING_DBFS / 20.0)
        self.block = LIMITER_BLOCK_SAMPLES
        self.lookahead = LIMITER_LOOKAHEAD_BLOCKS
        self.attack_db = LIMITER_ATTACK_DB_PER_MS * self.block * 1000.0 / AUDIO_SAMPLE_RATE_HZ
        self.release_db = LIMITER_RELEASE_DB_PER_S * self.block / AUDIO_SAMPLE_RATE_HZ
        self._pending = np.zeros((channels, 0), dtype=np.float32)
        self._gain_db = 0.0  # the boundary gain before the first pending block
        self._ramp = np.arange(1, self.block + 1, dtype=np.float64) / self.block

    @property
    def pending_samples(self) -> int:
        return self._pending.shape[1]

    def process(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        """Limit `samples`; returns those whose look-ahead is known (all of them when final)."""
        buffer = np.concatenate([self._pending, samples], axis=1)
        total = buffer.shape[1]
        if final:
            blocks_with_data = -(-total // self.block)
            padded = (blocks_with_data + self.lookahead) * self.block
            buffer = np.pad(buffer, ((0, 0), (0, padded - total)))
        blocks = buffer.shape[1] // self.block
        emit = blocks - self.lookahead
        if emit <= 0:
            self._pending = buffer[:, :total]
            return np.zeros((self.channels, 0), dtype=np.float32)
        body = buffer[:, : blocks * self.block].reshape(self.channels, blocks, self.block)
        peaks = np.abs(body).max(axis=(0, 2)).astype(np.float64)
        with np.errstate(divide="ignore"):  # an infinite peak: log10(0), no gain at all
            need_db = np.minimum(0.0, 20.0 * np.log10(self.ceiling / np.maximum(peaks, 1e-12)))
        # cap[k]: the gain at the end of block k; it also starts block k+1, so it obeys both, and
        # rises by the attack slope towards peaks further ahead.
        cap = need_db[:emit].copy()
        for ahead in range(1, self.lookahead + 1):
            cap = np.minimum(cap, need_db[ahead : ahead + emit] + (ahead - 1) * self.attack_db)
        steps = np.arange(emit, dtype=np.float64) * self.release_db
        gain_db = np.minimum(
            self._gain_db + steps + self.release_db, np.minimum.accumulate(cap - steps) + steps
        )
        # The first block also obeys its own need (matters only when the very first block is
        # loud, before any boundary could prepare for it).
        start_db = np.concatenate([[min(self._gain_db, need_db[0])], gain_db[:-1]])
        start_db = np.minimum(start_db, need_db[:emit])
        start, end = 10.0 ** (start_db / 20.0), 10.0 ** (gain_db / 20.0)
        gains = (start[:, None] + (end - start)[:, None] * self._ramp[None, :]).astype(np.float32)
        out = (body[:, :emit, :] * gains[None, :, :]).reshape(self.channels, emit * self.block)
        self._gain_db = float(gain_db[-1])
        if final:
            self._pending = np.zeros((self.channels, 0), dtype=np.float32)
            return _clip_unit(out[:, :total])
        self._pending = buffer[:, emit * self.block : total]
        # Rounding can put a sample a hair over the ceiling; never over full scale.
        return _clip_unit(out)


def _clip_unit(samples: np.ndarray) -> np.ndarray:
    """`samples` clipped to [-1, 1] in place (they are the limiter's own fresh array): what
    `np.clip` gives, without its Python-level wrapper."""
    np.maximum(samples, -1.0, out=samples)
    return np.minimum(samples, 1.0, out=samples)


class Mixer:
    """Mixes the timeline's per-participant spans into encoder-ready frames and speech states.

    `mix` takes contiguous spans: each call starts where the last ended (a skipped span is filled
    with silence; an overlapping one is an error). Call it from the media thread only.
    """

    def __init__(
        self,
        channels: int = 2,
        frame_samples: int = AAC_FRAME_SAMPLES,
        level_window_s: float = LEVEL_WINDOW_S,
    ) -> None:
        if channels not in (1, 2):
            raise ValueError(f"the mix is mono or stereo, not {channels} channels")
        if frame_samples < 1:
            raise ValueError(f"frames hold at least one sample, got {frame_samples}")
        self.channels = channels
        self.layout = "mono" if channels == 1 else "stereo"
        self.frame_samples = frame_samples
        self.time_base = Fraction(1, AUDIO_SAMPLE_RATE_HZ)
        self._level_window = max(1, round(level_window_s * AUDIO_SAMPLE_RATE_HZ))
        self._limiter = _Limiter(channels)
        self._detectors: dict[str, _SpeechDetector] = {}
        self._next_input = 0  # recording sample the next span must start at
        self._limited = np.zeros((channels, 0), dtype=np.float32)  # limited, not yet framed
        self._next_pts = 0

    def mix(
        self, start_sample: int, count: int, inputs: Mapping[str, np.ndarray]
    ) -> list[av.AudioFrame]:
        """Mix one span; returns the frames completed by it.

        `inputs` maps each present participant's audio feed id to `(1 or 2, count)` float32
        samples; a participant missing from `inputs` has left and their speech state is dropped.
        """
        if start_sample < self._next_input:
            raise ValueError(
                f"audio span starts at {start_sample}, before the mixed end {self._next_input}"
            )
        frames: list[av.AudioFrame] = []
        if start_sample > self._next_input:  # a gap: silence, so pts and duration stay true
            gap = start_sample - self._next_input
            frames += self._mix_span(self._next_input, gap, {})
        frames += self._mix_span(start_sample, count, inputs)
        return frames

    def _mix_span(
        self, start_sample: int, count: int, inputs: Mapping[str, np.ndarray]
    ) -> list[av.AudioFrame]:
        mixed = np.zeros((self.channels, count), dtype=np.float32)
        end_s = (start_sample + count) / AUDIO_SAMPLE_RATE_HZ
        for feed_id in list(self._detectors):
            if feed_id not in inputs:
                del self._detectors[feed_id]
        for feed_id, given in inputs.items():
            samples = np.asarray(given, dtype=np.float32)
            if samples.ndim != 2 or samples.shape[1] != count or samples.shape[0] not in (1, 2):
                raise ValueError(
                    f"feed {feed_id!r}: expected (1 or 2, {count}) samples, got {samples.shape}"
                )
            if self.channels == 2 or samples.shape[0] == 1:
                mixed += samples  # a mono voice goes to both channels at full level
            else:
                mixed += samples.mean(axis=0, keepdims=True)
            detector = self._detectors.get(feed_id)
            if detector is None:
                detector = self._detectors[feed_id] = _SpeechDetector()
            detector.feed(_power(samples), end_s, self._level_window)
        self._next_input = start_sample + count
        return self._frames(self._limiter.process(mixed))

    def flush(self) -> list[av.AudioFrame]:
        """The limiter's look-ahead tail and the last, possibly short, frame."""
        frames = self._frames(self._limiter.process(np.zeros((self.channels, 0), np.float32), True))
        if self._limited.shape[1]:
            frames.append(self._frame(self._limited))
            self._limited = self._limited[:, :0]
        return frames

    def speech(self) -> dict[str, SpeechState]:
        """Every present participant's level and speaking state, by audio feed id."""
        return {feed_id: detector.state() for feed_id, detector in self._detectors.items()}

    def _frames(self, limited: np.ndarray) -> list[av.AudioFrame]:
        if limited.shape[1]:
            self._limited = np.concatenate([self._limited, limited], axis=1)
        frames = []
        while self._limited.shape[1] >= self.frame_samples:
            frames.append(self._frame(self._limited[:, : self.frame_samples]))
            self._limited = self._limited[:, self.frame_samples :]
        return frames

    def _frame(self, samples: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32), format="fltp", layout=self.layout
        )
        frame.sample_rate = AUDIO_SAMPLE_RATE_HZ
        frame.time_base = self.time_base
        frame.pts = self._next_pts
        self._next_pts += samples.shape[1]
        return frame
