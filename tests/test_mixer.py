"""The mixer: sum, limiter, encoder frames, levels in dBFS and speaking state with hysteresis."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recorder.media.clock import ManualClock, RecordingClock
from recorder.media.mixer import (
    AAC_FRAME_SAMPLES,
    LEVEL_WINDOW_S,
    LIMITER_CEILING_DBFS,
    SILENCE_DBFS,
    SPEAKING_OFF_MIN_S,
    SPEAKING_ON_MIN_S,
    Mixer,
    SpeechState,
)
from recorder.media.timeline import PLAYOUT_DELAY_S, Timeline
from recorder.testing.audio import SpeechBursts, Tone, participant_tone_hz
from recorder.testing.sources import AudioFormat, Sound, VideoFormat, synthetic_participant

RATE = 48_000
TICK = 1600  # 30 fps: the span the engine asks for per tick
CEILING = 10 ** (LIMITER_CEILING_DBFS / 20)
# Levels of synthetic sines over whole 20 ms windows (frequencies with whole cycles per window).
LEVEL_TOLERANCE_DB = 0.01
# Spectral peaks: 1 s of audio gives 1 Hz bins.
FREQUENCY_TOLERANCE_HZ = 1.0


def tone(frequency_hz: float, amplitude: float, seconds: float, start: int = 0) -> np.ndarray:
    """A mono tone as the timeline hands it over: (1, n) float32."""
    return Tone(frequency_hz, amplitude).render(start, round(seconds * RATE), RATE)[None, :]


def run_mixer(mixer: Mixer, feeds: dict[str, np.ndarray], chunk: int = TICK) -> np.ndarray:
    """Mix whole signals in tick-sized spans plus the flush; returns the (channels, n) output."""
    total = max((f.shape[1] for f in feeds.values()), default=0)
    frames = []
    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        frames += mixer.mix(
            start, count, {k: v[:, start : start + count] for k, v in feeds.items()}
        )
    frames += mixer.flush()
    pts = [f.pts for f in frames]
    assert pts == list(np.cumsum([0] + [f.samples for f in frames[:-1]]))  # contiguous pts
    return np.concatenate([f.to_ndarray() for f in frames], axis=1)


def spectrum_peaks(samples: np.ndarray, count: int) -> list[float]:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1 / RATE)
    peaks = []
    for _ in range(count):
        index = int(spectrum.argmax())
        peaks.append(float(freqs[index]))
        spectrum[max(0, index - 20) : index + 20] = 0  # clear the peak and its window leakage
    return sorted(peaks)


def test_two_tones_sum_exactly_and_both_peaks_are_there() -> None:
    a, b = tone(500.0, 0.25, 1.0), tone(1200.0, 0.25, 1.0)
    out = run_mixer(Mixer(), {"a": a, "b": b})
    assert out.shape == (2, RATE)
    # Below the ceiling the limiter does nothing: the mix is the plain sum, in both channels.
    np.testing.assert_allclose(out[0], (a + b)[0], atol=1e-6)
    np.testing.assert_allclose(out[1], out[0])
    assert spectrum_peaks(out[0], 2) == pytest.approx([500.0, 1200.0], abs=FREQUENCY_TOLERANCE_HZ)


def test_aac_frames_are_fltp_1024_samples_with_sample_pts() -> None:
    mixer = Mixer()
    frames = mixer.mix(0, 3000, {"a": tone(1000.0, 0.1, 3000 / RATE)})
    # 3000 in; the limiter's 5 ms look-ahead (240 samples) is still held: 2 frames out.
    assert [(f.pts, f.samples) for f in frames] == [(0, 1024), (1024, 1024)]
    frame = frames[0]
    assert (frame.format.name, frame.layout.name, frame.sample_rate) == ("fltp", "stereo", RATE)
    assert frame.time_base.denominator == RATE
    tail = mixer.flush()
    assert [(f.pts, f.samples) for f in tail] == [(2048, 952)]  # the rest, exactly


def test_other_frame_sizes_and_mono_output() -> None:
    mixer = Mixer(channels=1, frame_samples=960)
    left_right = np.vstack([tone(500.0, 0.2, 0.1)[0], tone(500.0, 0.4, 0.1)[0]])
    frames = mixer.mix(0, 4800, {"stereo": left_right}) + mixer.flush()
    assert {f.samples for f in frames} == {960}
    assert frames[0].layout.name == "mono"
    out = np.concatenate([f.to_ndarray() for f in frames], axis=1)[0]
    np.testing.assert_allclose(out, left_right.mean(axis=0), atol=1e-6)  # stereo folds down


def test_a_mono_voice_goes_to_both_channels_and_stereo_stays_stereo() -> None:
    mono = tone(700.0, 0.3, 0.2)
    stereo = np.vstack([tone(300.0, 0.2, 0.2)[0], np.zeros(round(0.2 * RATE), np.float32)])
    out = run_mixer(Mixer(), {"mono": mono, "stereo": stereo})
    np.testing.assert_allclose(out[0], mono[0] + stereo[0], atol=1e-6)
    np.testing.assert_allclose(out[1], mono[0], atol=1e-6)


def test_the_limiter_keeps_loud_mixes_under_full_scale_without_wrap_around() -> None:
    # Four participants shouting full scale at once: the raw sum goes far over full scale.
    feeds = {f"p{i}": tone(participant_tone_hz(i), 1.0, 1.0, start=i * 1000) for i in range(4)}
    raw = sum(feeds.values())[0]
    assert np.max(np.abs(raw)) > 2.5
    out = run_mixer(Mixer(), feeds)[0]
    assert np.max(np.abs(out)) <= CEILING + 1e-6
    # Gain reduction, not clipping or wrap-around: every sample keeps its sign and is the input
    # scaled by a gain in (0, 1] that changes smoothly from sample to sample.
    big = np.abs(raw) > 0.05
    gain = out[big] / raw[big]
    assert np.all(gain > 0.0)
    assert np.all(gain <= 1.0 + 1e-6)
    # Over 10 ms the gain may move, but never jump: at most 0.05 between consecutive samples.
    indices = np.flatnonzero(big)
    consecutive = np.diff(indices) == 1
    assert np.max(np.abs(np.diff(gain)[consecutive])) < 0.05
    # Not a hard clip: peaks touch the ceiling, but the waveform is never flattened against it
    # (a clipper would hold it there for tens of samples per peak).
    at_ceiling = np.abs(out) > CEILING - 1e-4
    plateau = max((b - a for a, b, on in runs(at_ceiling) if on), default=0)
    assert plateau <= 2
    # The tones are all still there.
    assert spectrum_peaks(out, 4) == pytest.approx(
        [participant_tone_hz(i) for i in range(4)], abs=FREQUENCY_TOLERANCE_HZ
    )


def test_the_look_ahead_catches_a_sudden_peak_and_the_gain_recovers() -> None:
    quiet_then_loud = np.zeros((1, RATE), np.float32)
    quiet_then_loud[0, : RATE // 2] = tone(440.0, 0.3, 0.5)[0]
    quiet_then_loud[0, RATE // 4 : RATE // 4 + 48] += 3.0  # a 1 ms click far over full scale
    out = run_mixer(Mixer(), {"p": quiet_then_loud}, chunk=777)[0]  # odd spans: block carry
    assert np.max(np.abs(out)) <= CEILING + 1e-6
    # 100 ms before the click the gain is untouched; 300 ms after it has recovered (40 dB/s).
    before = slice(RATE // 4 - 4800, RATE // 4 - 480)
    np.testing.assert_allclose(out[before], quiet_then_loud[0, before], atol=1e-6)
    after = slice(RATE // 4 + 14_400, RATE // 2)
    np.testing.assert_allclose(out[after], quiet_then_loud[0, after], atol=1e-3)


def test_a_loud_first_block_is_limited_too() -> None:
    out = run_mixer(Mixer(), {"p": np.full((1, 4800), 2.0, np.float32)})
    assert np.max(np.abs(out)) <= CEILING + 1e-6
    assert np.min(out) > 0


def test_silence_when_nobody_speaks() -> None:
    mixer = Mixer()
    frames = []
    for start in range(0, RATE, TICK):
        frames += mixer.mix(start, TICK, {"a": np.zeros((1, TICK), np.float32)})
    frames += mixer.mix(RATE, TICK, {})  # and when nobody is there at all
    frames += mixer.flush()
    out = np.concatenate([f.to_ndarray() for f in frames], axis=1)
    assert out.shape == (2, RATE + TICK)
    assert not out.any()
    assert mixer.speech() == {}  # "a" left: its state is gone


def test_a_skipped_span_is_filled_with_silence_and_overlap_is_refused() -> None:
    mixer = Mixer()
    frames = mixer.mix(0, 1000, {"a": tone(1000.0, 0.5, 1000 / RATE)})
    frames += mixer.mix(2000, 1000, {"a": tone(1000.0, 0.5, 1000 / RATE, start=2000)})
    frames += mixer.flush()
    out = np.concatenate([f.to_ndarray() for f in frames], axis=1)[0]
    assert out.size == 3000  # the 1000-sample gap kept time
    assert not out[1000:2000].any()
    with pytest.raises(ValueError, match="before"):
        mixer.mix(2500, 100, {})
    with pytest.raises(ValueError, match="expected"):
        Mixer().mix(0, 100, {"a": np.zeros((3, 100), np.float32)})


@pytest.mark.parametrize(("amplitude", "expected_dbfs"), [(1.0, -3.0103), (0.5, -9.0309)])
def test_levels_in_dbfs_for_a_known_sine(amplitude: float, expected_dbfs: float) -> None:
    mixer = Mixer()
    levels = []
    signal = tone(1000.0, amplitude, 0.2)  # 1 kHz: exactly 20 cycles per 20 ms window
    for start in range(0, signal.shape[1], 960):
        mixer.mix(start, 960, {"p": signal[:, start : start + 960]})
        levels.append(mixer.speech()["p"].level_dbfs)
    assert levels == pytest.approx([expected_dbfs] * len(levels), abs=LEVEL_TOLERANCE_DB)


def test_a_silent_participant_reads_the_silence_floor() -> None:
    mixer = Mixer()
    mixer.mix(0, 960, {"p": np.zeros((1, 960), np.float32)})
    assert mixer.speech()["p"] == SpeechState(SILENCE_DBFS, False, None)


def level_signal(pattern: list[tuple[float, float]]) -> np.ndarray:
    """Consecutive (seconds, amplitude) pieces of a 1 kHz tone; amplitude 0 is silence."""
    pieces = [tone(1000.0, amplitude, seconds)[0] for seconds, amplitude in pattern]
    return np.concatenate(pieces)[None, :]


def speaking_over_time(signal: np.ndarray) -> list[tuple[float, bool]]:
    """Feed `signal` window by window; the speaking state after each 20 ms window."""
    mixer = Mixer()
    window = round(LEVEL_WINDOW_S * RATE)
    states = []
    for start in range(0, signal.shape[1], window):
        span = signal[:, start : start + window]
        mixer.mix(start, span.shape[1], {"p": span})
        states.append(((start + span.shape[1]) / RATE, mixer.speech()["p"].speaking))
    return states


def first_change(states: list[tuple[float, bool]], to: bool, after_s: float = 0.0) -> float:
    return next(t for t, speaking in states if speaking is to and t > after_s)


def test_a_cough_shorter_than_the_minimum_does_not_count_as_speaking() -> None:
    cough_s = SPEAKING_ON_MIN_S - 0.1
    states = speaking_over_time(level_signal([(0.5, 0.0), (cough_s, 0.5), (1.0, 0.0)]))
    assert not any(speaking for _, speaking in states)


def test_speaking_turns_on_after_the_minimum_and_survives_short_pauses() -> None:
    loud, pause = 0.3, SPEAKING_OFF_MIN_S - 0.2  # -13 dBFS talk, a pause shorter than the off time
    signal = level_signal([(0.5, 0.0), (1.0, loud), (pause, 0.0), (1.0, loud), (2.0, 0.0)])
    states = speaking_over_time(signal)
    on_s = first_change(states, True)
    assert on_s == pytest.approx(0.5 + SPEAKING_ON_MIN_S, abs=LEVEL_WINDOW_S + 1e-9)
    # Speaking throughout the pause between the two bursts.
    talk_end_s = 0.5 + 1.0 + pause + 1.0
    assert all(speaking for t, speaking in states if on_s <= t <= talk_end_s)
    off_s = first_change(states, False, after_s=on_s)
    assert off_s == pytest.approx(talk_end_s + SPEAKING_OFF_MIN_S, abs=LEVEL_WINDOW_S + 1e-9)


def test_a_level_between_the_thresholds_changes_nothing() -> None:
    between = 10 ** (-45 / 20) * np.sqrt(2)  # a sine of -45 dBFS RMS: between -50 and -40
    # Quiet and then in between: stays off. Speaking and then in between: stays on.
    stays_off = speaking_over_time(level_signal([(0.5, 0.0), (2.0, between)]))
    assert not any(speaking for _, speaking in stays_off)
    stays_on = speaking_over_time(level_signal([(1.0, 0.3), (2.0, between)]))
    assert stays_on[-1][1] is True


def test_last_spoke_follows_the_end_of_speech() -> None:
    mixer = Mixer()
    signal = level_signal([(1.0, 0.3), (2.0, 0.0)])
    for start in range(0, signal.shape[1], TICK):
        mixer.mix(start, TICK, {"p": signal[:, start : start + TICK]})
        if start + TICK == RATE:
            assert mixer.speech()["p"].last_spoke_s == pytest.approx(1.0)
    state = mixer.speech()["p"]
    assert not state.speaking
    # Still "speaking" through the off time after the voice stopped at 1.0 s.
    assert state.last_spoke_s == pytest.approx(1.0 + SPEAKING_OFF_MIN_S - LEVEL_WINDOW_S, abs=1e-6)


def runs(flags: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end, value) of each run of equal values."""
    edges = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), flags.size]
    return [(a, b, bool(flags[a])) for a, b in itertools.pairwise(bounds)]


def test_speech_bursts_drive_the_speaking_state() -> None:
    bursts = SpeechBursts(seed=11)
    signal = bursts.render(0, 20 * RATE, RATE)[None, :]
    states = speaking_over_time(signal)
    window_ends = np.array([t for t, _ in states])
    truth = bursts.is_talking(window_ends - LEVEL_WINDOW_S / 2)
    detected = np.array([speaking for _, speaking in states])
    on_windows = round(SPEAKING_ON_MIN_S / LEVEL_WINDOW_S) + 1  # the minimum plus the fade-in
    off_windows = round(SPEAKING_OFF_MIN_S / LEVEL_WINDOW_S) + 1
    checked_on = checked_off = 0
    for start, end, talking in runs(truth):
        if talking and end - start > on_windows:
            # A burst longer than the on-minimum is detected by then, and held to its end.
            assert detected[start + on_windows : end].all()
            checked_on += 1
        if not talking and end - start > off_windows + 1 and start > 0:
            # A pause longer than the off-minimum ends speaking by then, and not before it.
            assert not detected[start + off_windows + 1 : end].any()
            assert detected[start : start + off_windows - 2].all()
            checked_off += 1
    assert checked_on >= 3
    assert checked_off >= 3
    # A pause shorter than the off-minimum is bridged: speaking does not flicker.
    short_pauses = [
        (a, b) for a, b, talking in runs(truth) if not talking and b - a < off_windows - 1 and a > 0
    ]
    assert short_pauses
    assert all(detected[a:b].all() for a, b in short_pauses)


def test_a_participant_who_is_not_visible_is_still_in_the_mix() -> None:
    """The layout shows at most gridSize tiles; the mix has everyone (CONTRACT.md §5)."""
    clock = ManualClock(50.0)
    recording_clock = RecordingClock(clock, 30)
    recording_clock.start()
    timeline = Timeline(recording_clock)
    # Five participants; only the first has a video feed in this room, and a layout of
    # gridSize 1 would show just that one. Everyone else is audio-only or off screen.
    people = [
        synthetic_participant(
            i,
            f"p{i}",
            VideoFormat(64, 36, 15) if i == 0 else None,
            AudioFormat(16_000 if i % 2 else 48_000, "mono", "s16"),
            sound=Sound.TONE,
        )
        for i in range(5)
    ]
    feeds = {f"p{i}": timeline.add_audio_feed(f"p{i}") for i in range(5)}
    video = timeline.add_video_feed("p0")
    mixer = Mixer()
    frames = []
    pushed = {name: list(p.audio_frames(0.0, 2.0)) for name, p in zip(feeds, people, strict=True)}
    for tick in range(round(2.5 * 30)):
        clock.set(recording_clock.tick_due_s(tick))
        for name, queue in pushed.items():
            while queue and float(queue[0].pts * queue[0].time_base) <= tick / 30:
                feeds[name].push(queue.pop(0), arrival_s=50.0 + tick / 30)
        for frame in people[0].video_frames(tick / 30, (tick + 1) / 30):
            video.push(frame)
        assert set(timeline.pictures(tick / 30)) == {"p0"}
        frames += mixer.mix(
            *recording_clock.audio_span(tick),
            timeline.read_audio(*recording_clock.audio_span(tick)),
        )
    frames += mixer.flush()
    out = np.concatenate([f.to_ndarray() for f in frames], axis=1)[0]
    heard = out[round((PLAYOUT_DELAY_S + 0.2) * RATE) : round((PLAYOUT_DELAY_S + 1.8) * RATE)]
    assert spectrum_peaks(heard, 5) == pytest.approx(
        [participant_tone_hz(i) for i in range(5)], abs=FREQUENCY_TOLERANCE_HZ * 2
    )
    assert set(mixer.speech()) == set(feeds)
    assert all(state.speaking for state in mixer.speech().values())
    assert frames[0].samples == AAC_FRAME_SAMPLES
