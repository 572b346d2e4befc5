"""Test audio signals: pure functions of the absolute sample index, at any sample rate.

A `Signal` renders samples `[start, start + count)` at a rate; it has no state, so any chunking
gives the same samples and a checker can recompute what a participant sent at any instant. Each
participant gets its own tone frequency or voice pitch, so the mix can be taken apart again by
FFT, and speech-like bursts switch on and off in a seeded pattern so speaker detection has real
work to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

TONE_AMPLITUDE = 0.25  # -15 dBFS RMS: leaves headroom when a handful are mixed
TONE_BASE_HZ = 300.0
TONE_STEP_HZ = 150.0
TONE_COUNT = 20  # distinct tones before they repeat; keeps them under 3.4 kHz (8 kHz inputs)
VOICE_BASE_HZ = 110.0
VOICE_STEP_HZ = 17.0
VOICE_COUNT = 8  # distinct voice pitches, 110..229 Hz
VOICE_HARMONICS = 5
SPEECH_AMPLITUDE = 0.3  # peak; RMS is near -20 dBFS while talking
SPEECH_SLOT_S = 0.4  # bursts and pauses are whole slots: 0.4 s, 0.8 s, ...
SPEECH_ON_PROBABILITY = 0.5
SPEECH_RAMP_S = 0.02  # raised-cosine fade at each burst edge: no clicks
SYLLABLE_HZ = 4.0  # the amplitude wobble of running speech
SYLLABLE_DEPTH = 0.35
BEEP_RAMP_S = 0.001  # fade of a beep's edges: short enough to time it within a millisecond


class Signal(Protocol):
    """Mono samples as a pure function of the absolute sample index."""

    def render(self, start: int, count: int, sample_rate_hz: int) -> np.ndarray:
        """Samples `[start, start + count)` at `sample_rate_hz` as float32 in [-1, 1]."""
        ...


def participant_tone_hz(index: int) -> float:
    """The tone of participant `index`: distinct for 20 participants, within telephone band."""
    return TONE_BASE_HZ + TONE_STEP_HZ * (index % TONE_COUNT)


def participant_voice_hz(index: int) -> float:
    """The voice pitch (fundamental) of participant `index`'s speech-like bursts."""
    return VOICE_BASE_HZ + VOICE_STEP_HZ * (index % VOICE_COUNT)


def _times(start: int, count: int, sample_rate_hz: int) -> np.ndarray:
    return (start + np.arange(count, dtype=np.float64)) / sample_rate_hz


@dataclass(frozen=True, slots=True)
class Silence:
    def render(self, start: int, count: int, sample_rate_hz: int) -> np.ndarray:
        return np.zeros(count, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Tone:
    """A steady sine; phase 0 at sample 0."""

    frequency_hz: float
    amplitude: float = TONE_AMPLITUDE

    def render(self, start: int, count: int, sample_rate_hz: int) -> np.ndarray:
        t = _times(start, count, sample_rate_hz)
        return (self.amplitude * np.sin(2.0 * np.pi * self.frequency_hz * t)).astype(np.float32)


def _slot_is_on(seed: int, slots: np.ndarray, probability: float) -> np.ndarray:
    """A deterministic coin per slot: splitmix64 of (seed, slot), vectorised."""
    with np.errstate(over="ignore"):
        x = slots.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < probability


@dataclass(frozen=True, slots=True)
class SpeechBursts:
    """Voiced bursts and pauses in whole `slot_s` slots, switched by a seeded coin per slot.

    The sound is a harmonic tone at `pitch_hz` with a syllable-rate wobble: loud and steady
    enough for a level meter, with pauses long enough for speaking state to turn off.
    `is_talking(t)` says which slots are on, so a test knows the truth to compare with.
    """

    seed: int
    pitch_hz: float = VOICE_BASE_HZ
    amplitude: float = SPEECH_AMPLITUDE
    slot_s: float = SPEECH_SLOT_S
    on_probability: float = SPEECH_ON_PROBABILITY

    def is_talking(self, time_s: np.ndarray | float) -> np.ndarray:
        """Whether the burst pattern is on at each time (ignoring the edge fades)."""
        slots = np.floor(np.asarray(time_s, dtype=np.float64) / self.slot_s).astype(np.int64)
        return _slot_is_on(self.seed, slots, self.on_probability)

    def render(self, start: int, count: int, sample_rate_hz: int) -> np.ndarray:
        t = _times(start, count, sample_rate_hz)
        slot = np.floor(t / self.slot_s)
        on = _slot_is_on(self.seed, slot.astype(np.int64), self.on_probability)
        previous_on = _slot_is_on(self.seed, slot.astype(np.int64) - 1, self.on_probability)
        next_on = _slot_is_on(self.seed, slot.astype(np.int64) + 1, self.on_probability)
        into = t - slot * self.slot_s
        fade_in = np.where(previous_on, 1.0, np.clip(into / SPEECH_RAMP_S, 0.0, 1.0))
        fade_out = np.where(next_on, 1.0, np.clip((self.slot_s - into) / SPEECH_RAMP_S, 0.0, 1.0))
        edge = np.minimum(fade_in, fade_out)
        envelope = np.where(on, 0.5 - 0.5 * np.cos(np.pi * edge), 0.0)
        envelope *= 1.0 - SYLLABLE_DEPTH + SYLLABLE_DEPTH * np.sin(2.0 * np.pi * SYLLABLE_HZ * t)
        voice = np.zeros_like(t)
        for harmonic in range(1, VOICE_HARMONICS + 1):
            if harmonic * self.pitch_hz < sample_rate_hz / 2:
                voice += np.sin(2.0 * np.pi * harmonic * self.pitch_hz * t) / harmonic
        # Normalise by the worst-case peak of the harmonic sum so |x| <= amplitude.
        peak = sum(1.0 / h for h in range(1, VOICE_HARMONICS + 1))
        return (self.amplitude * envelope * voice / peak).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Beeps:
    """A `duration_s` burst of `frequency_hz` every `period_s`, starting at `offset_s`.

    Each beep starts at phase 0 exactly on its onset, with `BEEP_RAMP_S` fades, so the onset of
    the envelope marks the instant a checker compares with the video flash.
    """

    frequency_hz: float
    duration_s: float
    period_s: float = 1.0
    offset_s: float = 0.0
    amplitude: float = 0.5

    def render(self, start: int, count: int, sample_rate_hz: int) -> np.ndarray:
        t = _times(start, count, sample_rate_hz) - self.offset_s
        into = np.mod(t, self.period_s)
        fade = np.minimum(into, self.duration_s - into) / BEEP_RAMP_S
        envelope = np.where((t >= 0) & (into < self.duration_s), np.clip(fade, 0.0, 1.0), 0.0)
        tone = np.sin(2.0 * np.pi * self.frequency_hz * into)
        return (self.amplitude * envelope * tone).astype(np.float32)

    def is_beeping(self, time_s: np.ndarray | float) -> np.ndarray:
        t = np.asarray(time_s, dtype=np.float64) - self.offset_s
        return (t >= 0) & (np.mod(t, self.period_s) < self.duration_s)
