"""Test streams: formats, timestamps, content, the clapper's sync, and media files as sources."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from recorder.testing.audio import (
    TONE_COUNT,
    Beeps,
    Signal,
    Silence,
    SpeechBursts,
    Tone,
    participant_tone_hz,
)
from recorder.testing.clapper import (
    CLAPPER_BEEP_HZ,
    CLAPPER_BEEP_S,
    CLAPPER_FLASH_S,
    av_offsets_s,
    beep_onsets,
    clapper_participant,
    flash_onsets,
)
from recorder.testing.media_file import MediaFileParticipant
from recorder.testing.sources import (
    VIDEO_TIME_BASE,
    AudioFormat,
    Sound,
    SyntheticParticipant,
    VideoFormat,
    frame_time_s,
    interleaved,
    synthetic_participant,
)
from recorder.testing.video import nearest_participant

# s16 holds a float sample to within one step of 1/32767.
S16_TOLERANCE = 1.5 / 32767
# A flat frame's colour after yuv420p round trips: a few code values.
COLOR_TOLERANCE = 40.0


def median_rgb(frame: av.VideoFrame) -> tuple[float, float, float]:
    rgb = frame.to_ndarray(format="rgb24").reshape(-1, 3)
    return tuple(float(v) for v in np.median(rgb, axis=0))  # type: ignore[return-value]


def as_float(frame: av.AudioFrame) -> np.ndarray:
    """(channels, samples) float64 in [-1, 1] from any of the synthetic sample formats."""
    data = frame.to_ndarray()
    if not frame.format.is_planar:
        data = data.reshape(-1, frame.layout.nb_channels).T
    if data.dtype == np.int16:
        return data.astype(np.float64) / 32767.0
    return data.astype(np.float64)


# --- video -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_name", "fps"),
    [
        ("360p", 15),
        ("360p", 24),
        ("480p", 30),
        ("720p", 24),
        ("360p-portrait", 30),
        ("720p-portrait", 15),
        ("1080p", 30),
        ("1080p-portrait", 24),
    ],
)
def test_video_sizes_rates_and_timestamps(size_name: str, fps: int) -> None:
    fmt = VideoFormat.named(size_name, fps)
    participant = synthetic_participant(3, "Dmitri", fmt)
    seconds = 0.25
    frames = list(participant.video_frames(0.0, seconds))
    assert len(frames) == int(np.ceil(seconds * fps))
    assert {(f.width, f.height, f.format.name) for f in frames} == {
        (fmt.width, fmt.height, "yuv420p")
    }
    assert all(f.time_base == VIDEO_TIME_BASE for f in frames)
    assert [f.pts for f in frames] == [round(k * 90_000 / fps) for k in range(len(frames))]
    if "portrait" in size_name:
        assert fmt.height > fmt.width
    # The camera is video.py's: participant 3's palette colour fills the frame.
    assert nearest_participant(median_rgb(frames[0]), COLOR_TOLERANCE) == 3


def test_video_for_a_range_is_the_same_however_the_range_is_cut() -> None:
    participant = synthetic_participant(0, "Alice", VideoFormat(64, 36, 24))
    whole = list(participant.video_frames(0.5, 1.5))
    parts = [*participant.video_frames(0.5, 0.9), *participant.video_frames(0.9, 1.5)]
    assert [f.pts for f in whole] == [f.pts for f in parts]
    assert frame_time_s(whole[0]) == pytest.approx(0.5)
    assert frame_time_s(whole[-1]) < 1.5
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(a.to_ndarray(), b.to_ndarray())  # pure in time
    unending = participant.video_frames(10.0)  # no end: a live publisher's loop
    assert [frame_time_s(next(unending)) for _ in range(3)] == pytest.approx(
        [10.0, 10.0 + 1 / 24, 10.0 + 2 / 24]
    )


def test_formats_are_validated() -> None:
    with pytest.raises(ValueError, match="even"):
        VideoFormat(641, 360)
    with pytest.raises(ValueError, match="fps"):
        VideoFormat(640, 360, 0)
    with pytest.raises(ValueError, match="layout or format"):
        AudioFormat(48_000, "quadrophonic-ish")
    with pytest.raises(ValueError, match="sample rate"):
        AudioFormat(0)
    wrong_size = SyntheticParticipant(
        "x",
        picture=synthetic_participant(0, "x", VideoFormat(64, 36)).picture,
        video_format=VideoFormat(32, 18),
    )
    with pytest.raises(ValueError, match="64x36"):
        wrong_size.video_frame(0)
    with pytest.raises(ValueError, match="needs both"):
        SyntheticParticipant("x", signal=Silence())


# --- audio -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "layout", "sample_format"),
    [
        *itertools.product([8_000, 16_000, 44_100, 48_000], ["mono", "stereo"], ["s16", "fltp"]),
        (48_000, "stereo", "flt"),
        (16_000, "mono", "s16p"),
    ],
)
def test_audio_formats_timestamps_and_samples(rate: int, layout: str, sample_format: str) -> None:
    fmt = AudioFormat(rate, layout, sample_format)
    participant = synthetic_participant(1, "Bob", audio_format=fmt)
    frames = list(participant.audio_frames(0.0, 0.2))
    per_frame = round(rate * 0.02)
    assert {f.samples for f in frames} == {per_frame}
    assert {(f.sample_rate, f.layout.name, f.format.name) for f in frames} == {
        (rate, layout, sample_format)
    }
    assert all(f.time_base == Fraction(1, rate) for f in frames)
    assert [f.pts for f in frames] == [k * per_frame for k in range(len(frames))]
    samples = np.concatenate([as_float(f) for f in frames], axis=1)
    expected = Tone(participant_tone_hz(1)).render(0, samples.shape[1], rate)
    tolerance = S16_TOLERANCE if sample_format.startswith("s16") else 1e-7
    for channel in samples:
        np.testing.assert_allclose(channel, expected, atol=tolerance)


def test_odd_frame_sizes_keep_pts_contiguous() -> None:
    fmt = AudioFormat(44_100, "stereo", "fltp", frame_samples=1024)  # AAC-sized frames
    frames = list(synthetic_participant(0, "a", audio_format=fmt).audio_frames(0.5, 1.0))
    assert frames[0].pts == 22 * 1024  # the first frame starting at or after 0.5 s
    assert all(b.pts - a.pts == 1024 for a, b in itertools.pairwise(frames))


@pytest.mark.parametrize(
    "signal",
    [Tone(440.0), SpeechBursts(seed=5), Beeps(1000.0, 0.1, offset_s=0.01), Silence()],
    ids=["tone", "speech", "beeps", "silence"],
)
def test_signals_are_pure_functions_of_the_sample_index(signal: Signal) -> None:
    for rate in (8_000, 44_100):
        whole = signal.render(1000, 3 * rate, rate)
        cut = np.concatenate(
            [signal.render(1000, 777, rate), signal.render(1777, 3 * rate - 777, rate)]
        )
        np.testing.assert_array_equal(whole, cut)
        assert whole.dtype == np.float32
        assert np.max(np.abs(whole)) <= 1.0


def test_participant_tones_are_distinct_and_carried_by_8k_audio() -> None:
    tones = [participant_tone_hz(i) for i in range(TONE_COUNT)]
    assert len(set(tones)) == TONE_COUNT
    assert max(tones) < 3400  # telephone band: an 8 kHz participant can carry it
    samples = Tone(tones[7]).render(0, 8000, 8000)
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(8000, 1 / 8000)[spectrum.argmax()] == pytest.approx(tones[7])


def test_speech_bursts_are_seeded_bursts_and_pauses_at_a_speaking_level() -> None:
    rate = 16_000
    bursts = SpeechBursts(seed=42, pitch_hz=150.0)
    samples = bursts.render(0, 30 * rate, rate)
    np.testing.assert_array_equal(
        samples, SpeechBursts(seed=42, pitch_hz=150.0).render(0, 30 * rate, rate)
    )
    assert not np.array_equal(
        samples, SpeechBursts(seed=43, pitch_hz=150.0).render(0, 30 * rate, rate)
    )
    talking = bursts.is_talking(np.arange(samples.size) / rate)
    assert 0.3 < talking.mean() < 0.7  # about half the time, in bursts
    assert not samples[~talking].any()  # silent pauses
    windows = np.square(samples.astype(np.float64)).reshape(-1, 320)  # 20 ms windows
    talking_windows = talking.reshape(-1, 320).all(axis=1)
    levels = 10 * np.log10(windows[talking_windows].mean(axis=1))
    assert -35 < np.median(levels) < -15  # a talking level, well over the speaking threshold
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(samples.size, 1 / rate)[spectrum.argmax()] == pytest.approx(150.0, abs=1)
    # Bursts and pauses have several lengths, not a fixed rhythm.
    edges = np.flatnonzero(np.diff(talking.astype(np.int8)))
    assert len(set(np.diff(edges).tolist())) >= 3


def test_speech_sound_for_a_participant() -> None:
    a = synthetic_participant(0, "a", audio_format=AudioFormat(), sound=Sound.SPEECH)
    b = synthetic_participant(1, "b", audio_format=AudioFormat(), sound=Sound.SPEECH)
    assert isinstance(a.signal, SpeechBursts)
    assert a.signal != b.signal  # own pitch and own pattern
    silent = synthetic_participant(2, "c", audio_format=AudioFormat(), sound=Sound.SILENCE)
    assert not any(as_float(f).any() for f in silent.audio_frames(0.0, 0.1))


def test_interleaved_frames_come_in_time_order() -> None:
    participant = synthetic_participant(
        0, "a", VideoFormat(32, 18, 24), AudioFormat(16_000, "mono", "s16")
    )
    items = list(interleaved(participant, 0.0, 1.0))
    times = [t for t, _ in items]
    assert times == sorted(times)
    kinds = {type(frame) for _, frame in items}
    assert kinds == {av.VideoFrame, av.AudioFrame}
    assert sum(isinstance(f, av.VideoFrame) for _, f in items) == 24
    assert sum(isinstance(f, av.AudioFrame) for _, f in items) == 50


# --- the clapper -----------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "rate"), [(15, 8_000), (24, 44_100), (30, 48_000)])
def test_clapper_flashes_and_beeps_at_the_same_instant(fps: int, rate: int) -> None:
    clapper = clapper_participant(
        video_format=VideoFormat(64, 36, fps), audio_format=AudioFormat(rate, "mono", "s16")
    )
    seconds = 3.5
    video = list(clapper.video_frames(0.0, seconds))
    luma = np.array([f.to_ndarray()[:36].mean() for f in video])  # the Y plane
    times = np.array([frame_time_s(f) for f in video])
    flashes = flash_onsets(times, luma)
    assert flashes == pytest.approx([0.0, 1.0, 2.0, 3.0])
    flash_frames = np.count_nonzero(luma[(times >= 1.0) & (times < 2.0)] > 128)
    assert flash_frames == int(np.ceil(CLAPPER_FLASH_S * fps))
    audio = np.concatenate([as_float(f)[0] for f in clapper.audio_frames(0.0, seconds)])
    beeps = beep_onsets(audio, rate)
    assert beeps == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.001)
    offsets = av_offsets_s(flashes, beeps)
    assert offsets.size == 4
    assert np.all(np.abs(offsets) <= 0.001)
    # Between claps: dark and silent. During a beep: 1 kHz for CLAPPER_BEEP_S.
    assert np.all(luma[(times % 1.0) > CLAPPER_FLASH_S + 1e-9] < 30)
    beep = audio[rate : rate + round(CLAPPER_BEEP_S * rate)]
    spectrum = np.abs(np.fft.rfft(beep))
    assert np.fft.rfftfreq(beep.size, 1 / rate)[spectrum.argmax()] == pytest.approx(
        CLAPPER_BEEP_HZ, abs=1 / CLAPPER_BEEP_S
    )
    quiet = audio[round((1 + CLAPPER_BEEP_S + 0.001) * rate) : 2 * rate]
    assert not quiet.any()


def test_av_offsets_pair_each_flash_with_its_own_beep() -> None:
    offsets = av_offsets_s(np.array([1.0, 2.0, 3.0]), np.array([1.05, 2.04, 5.0]))
    np.testing.assert_allclose(offsets, [0.05, 0.04])  # the third flash has no beep near it
    assert av_offsets_s(np.array([]), np.array([1.0])).size == 0


# --- media files -----------------------------------------------------------------------


def write_file(path: Path, participant: SyntheticParticipant, seconds: float) -> None:
    """Encode a synthetic participant into a file with PyAV (the test makes its own media)."""
    vf, af = participant.video_format, participant.audio_format
    with av.open(str(path), "w") as out:
        video = audio = None
        if vf is not None:
            video = out.add_stream("libx264", rate=vf.fps, options={"preset": "ultrafast"})
            video.width, video.height, video.pix_fmt = vf.width, vf.height, "yuv420p"
        if af is not None:
            codec = "pcm_s16le" if path.suffix == ".wav" else "aac"
            audio = out.add_stream(codec, rate=af.sample_rate_hz, layout=af.layout)
        for time_s, frame in interleaved(participant, 0.0, seconds):
            if isinstance(frame, av.VideoFrame) and video is not None and vf is not None:
                frame.pts, frame.time_base = round(time_s * vf.fps), Fraction(1, vf.fps)
                out.mux(video.encode(frame))
            elif audio is not None:
                out.mux(audio.encode(frame))
        for stream in (video, audio):
            if stream is not None:
                out.mux(stream.encode(None))


@pytest.fixture(scope="module")
def movie(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "carol.mp4"
    carol = synthetic_participant(
        2,
        "Carol",
        VideoFormat(160, 120, 15),
        AudioFormat(44_100, "stereo", "fltp", frame_samples=1024),
    )
    write_file(path, carol, 2.0)
    return path


def test_a_media_file_is_a_participant(movie: Path) -> None:
    source = MediaFileParticipant(movie)
    assert source.name == "carol"
    assert source.video_format is not None
    assert (source.video_format.width, source.video_format.height) == (160, 120)
    assert source.video_format.fps == 15
    assert source.audio_format is not None
    assert (source.audio_format.sample_rate_hz, source.audio_format.layout) == (44_100, "stereo")
    video = list(source.video_frames())
    assert len(video) == 30
    times = [frame_time_s(f) for f in video]
    assert times[0] == 0.0
    assert times == pytest.approx([k / 15 for k in range(30)], abs=1e-3)
    assert nearest_participant(median_rgb(video[10]), COLOR_TOLERANCE) == 2
    audio = list(source.audio_frames())
    audio_times = [frame_time_s(f) for f in audio]
    assert audio_times == sorted(audio_times)
    samples = np.concatenate([f.to_ndarray() for f in audio], axis=1)
    assert samples.shape[1] / 44_100 == pytest.approx(2.0, abs=0.05)
    middle = samples[0, 22_050:66_150]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
    peak_hz = np.fft.rfftfreq(middle.size, 1 / 44_100)[spectrum.argmax()]
    assert peak_hz == pytest.approx(participant_tone_hz(2), abs=1.0)


def test_a_media_file_range_and_loop(movie: Path) -> None:
    source = MediaFileParticipant(movie)
    part = [frame_time_s(f) for f in source.video_frames(1.0, 1.5)]
    assert part == pytest.approx([1.0 + k / 15 for k in range(8)], abs=1e-3)
    audio_part = [frame_time_s(f) for f in source.audio_frames(1.0, 1.5)]
    assert audio_part[0] >= 1.0
    assert audio_part[-1] < 1.5
    looped = MediaFileParticipant(movie, loop=True)
    assert looped.duration_s is not None
    times = [frame_time_s(f) for f in looped.video_frames(1.5, 5.0)]
    assert times == sorted(times)
    assert times[-1] > 4.8  # kept going past the end of the 2 s file, twice
    assert np.max(np.diff(times)) < 2 / 15  # no hole at the seams (at most one frame more)
    assert len(times) == pytest.approx(3.5 * 15, abs=3)


def test_an_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "voice.wav"
    tone = synthetic_participant(4, "v", audio_format=AudioFormat(8_000, "mono", "s16"))
    write_file(path, tone, 1.0)
    source = MediaFileParticipant(path, name="voice")
    assert source.video_format is None
    assert list(source.video_frames()) == []
    assert source.audio_format is not None
    assert source.audio_format.sample_rate_hz == 8_000
    samples = np.concatenate([as_float(f)[0] for f in source.audio_frames()])
    expected = Tone(participant_tone_hz(4)).render(0, samples.size, 8_000)
    np.testing.assert_allclose(samples, expected, atol=S16_TOLERANCE)  # lossless: exact
    with pytest.raises(ValueError):  # PyAV's InvalidDataError is a ValueError
        MediaFileParticipant(write_empty(tmp_path / "empty.txt"))


def write_empty(path: Path) -> Path:
    path.write_bytes(b"not media at all")
    return path
