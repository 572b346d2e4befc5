"""The checker measures what it claims: irregular timing, long GOPs, known offsets, who is where.

Each test writes a file whose content is known (through the encoder, or PyAV directly where the
file must be one the encoder would never write) and checks that the checker finds exactly that.
"""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from layouts.model import Rect, Size
from recorder.cli import main
from recorder.inspect import (
    BEEP_ENVELOPE_WINDOW_S,
    find_beeps,
    measure_sync,
    pair_claps,
    presence,
    probe,
)
from recorder.media.compositor import rgb_to_yuv
from recorder.media.encoder import Encoder, EncoderSettings
from recorder.presets import AUDIO_SAMPLE_RATE_HZ, PRESETS, Quality
from recorder.testing.audio import Tone, participant_tone_hz
from recorder.testing.clapper import LUMA_DARK, LUMA_WHITE, clapper_beeps, is_flash
from recorder.testing.video import PALETTE

SIZE = Size(320, 180)
FPS = 30
RATE = AUDIO_SAMPLE_RATE_HZ
# A measured offset is within this of the true one: the beep's 1 ms fade puts the envelope's
# half-height ~0.5 ms after the onset, AAC smears by a fraction of a millisecond more.
OFFSET_TOLERANCE_S = 0.0015
MIXED_TONE_AMPLITUDE = 0.08
# Among six tones, AAC at 96 kb/s has fewer bits for the beep's attack and smears its onset by
# ~2 ms (the detector alone finds it within 0.5 ms in the uncoded mix: see the next test).
MIXED_OFFSET_TOLERANCE_S = 0.005


def settings() -> EncoderSettings:
    base = EncoderSettings.for_preset(PRESETS[Quality.LOW], queue_max_wait_s=None)
    return replace(base, canvas=SIZE)


def clapper_file(
    path: Path, seconds: float, audio_shift_s: float = 0.0, tone_indexes: tuple[int, ...] = ()
) -> None:
    """Flash at each whole second; the beep `audio_shift_s` later; participants' tones mixed in."""
    beeps = clapper_beeps()
    # Quiet enough that beep and tones together stay below full scale, as after the mixer.
    tones = [Tone(participant_tone_hz(i), amplitude=MIXED_TONE_AMPLITUDE) for i in tone_indexes]
    shift = round(audio_shift_s * RATE)
    with Encoder(path, settings()) as encoder:
        for i in range(round(seconds * FPS)):
            planes = np.full((SIZE.height * 3 // 2, SIZE.width), 128, np.uint8)
            planes[: SIZE.height] = LUMA_WHITE if is_flash(i / FPS) else LUMA_DARK
            encoder.put_video(planes, i)
            start = i * RATE // FPS
            count = (i + 1) * RATE // FPS - start
            mono = beeps.render(start - shift, count, RATE)
            for tone in tones:
                mono = mono + tone.render(start, count, RATE)
            encoder.put_audio(np.stack([mono, mono]), start)


def test_probe_reports_a_clean_file(tmp_path: Path) -> None:
    path = tmp_path / "clean.mp4"
    clapper_file(path, 2.0)
    report = probe(path)
    video, audio = report.video, report.audio
    assert video is not None and audio is not None
    assert (video.width, video.height, video.packets) == (SIZE.width, SIZE.height, 2 * FPS)
    assert video.pts_delta_min_s == pytest.approx(1 / FPS)
    assert video.pts_delta_max_s == pytest.approx(1 / FPS)
    assert video.irregular_deltas == 0
    assert video.bitrate_bps > 0 and audio.bitrate_bps > 0
    # A fragment per keyframe, but the first forced one (encoder.EARLY_KEYFRAME_INDEXES), whose
    # boundary writes only the moov.
    assert report.damage is None and report.fragments == video.keyframes - 1


def test_probe_finds_irregular_pts_and_a_long_gop(tmp_path: Path) -> None:
    # A file the encoder would never write: frames 10 and 11 missing, one keyframe in 4 s.
    path = tmp_path / "irregular.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE.width, SIZE.height, "yuv420p"
        stream.options = {"x264-params": "keyint=infinite:scenecut=0", "preset": "ultrafast"}
        for i in [*range(10), *range(12, 4 * FPS)]:
            frame = av.VideoFrame.from_ndarray(
                np.full((SIZE.height * 3 // 2, SIZE.width), 60 + i % 50, np.uint8),
                format="yuv420p",
            )
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    video = probe(path).video
    assert video is not None
    assert video.irregular_deltas == 1
    assert video.pts_delta_max_s == pytest.approx(3 / FPS)
    assert video.keyframes == 1
    assert video.keyframe_spacing_max_s == pytest.approx(4.0)


@pytest.mark.parametrize("shift_s", [0.0, 0.050, -0.080])
def test_sync_measures_a_known_offset(tmp_path: Path, shift_s: float) -> None:
    path = tmp_path / "shifted.mp4"
    clapper_file(path, 3.0, audio_shift_s=shift_s)
    sync = measure_sync(path)
    assert sync.frame_s == pytest.approx(1 / FPS)
    # The clap at 0 s has no measurable onset (it may have begun before the file): not counted.
    assert sync.flashes_s == pytest.approx([1.0, 2.0])
    assert sync.offsets_s == pytest.approx([shift_s] * 2, abs=OFFSET_TOLERANCE_S)


def test_beeps_are_found_among_every_participant_tone(tmp_path: Path) -> None:
    path = tmp_path / "mixed.mp4"
    # Six participants' tones (300 Hz to 1050 Hz: two either side of 1 kHz) under the beep.
    clapper_file(path, 3.0, audio_shift_s=0.020, tone_indexes=tuple(range(6)))
    sync = measure_sync(path)
    assert sync.beeps_s == pytest.approx([0.020, 1.020, 2.020], abs=MIXED_OFFSET_TOLERANCE_S)
    assert sync.offsets_s == pytest.approx([0.020] * 2, abs=MIXED_OFFSET_TOLERANCE_S)


def test_beep_detection_on_raw_samples() -> None:
    beeps = clapper_beeps()
    samples = beeps.render(0, 3 * RATE, RATE)
    found = find_beeps(np.stack([samples, samples]), start_s=10.0, rate=RATE)
    assert found == pytest.approx([11.0, 12.0], abs=0.001)  # the first one is cut by the start
    later = beeps.render(-RATE // 2, 3 * RATE, RATE)  # starts half a second before a beep
    found = find_beeps(np.stack([later, later]), start_s=0.0, rate=RATE)
    assert found == pytest.approx([0.5, 1.5, 2.5], abs=0.001)
    assert find_beeps(np.zeros((2, RATE), np.float32), 0.0, RATE) == []
    # A lone tone of another frequency is no beep...
    tone = Tone(participant_tone_hz(4)).render(0, RATE, RATE)
    assert find_beeps(np.stack([tone, tone]), 0.0, RATE) == []
    # ...and tones under the beeps (uncoded) do not move their onsets.
    mixed = later + sum(
        Tone(participant_tone_hz(i), MIXED_TONE_AMPLITUDE).render(0, 3 * RATE, RATE)
        for i in range(6)
    )
    found = find_beeps(np.stack([mixed, mixed]), start_s=0.0, rate=RATE)
    assert found == pytest.approx([0.5, 1.5, 2.5], abs=0.001)
    assert BEEP_ENVELOPE_WINDOW_S * participant_tone_hz(1) > 1  # the window spans whole periods


def test_unpaired_flashes_and_beeps_are_reported_not_hidden() -> None:
    claps = pair_claps([1.0, 2.0, 3.0], [1.01, 3.9])
    assert [(c.flash_s, c.beep_s) for c in claps] == [
        (1.0, 1.01),
        (2.0, None),
        (3.0, None),
        (None, 3.9),
    ]
    assert claps[0].offset_s == pytest.approx(0.01)


def test_presence_names_the_participant_in_each_region(tmp_path: Path) -> None:
    left, right = Rect(0, 0, 160, 180), Rect(160, 0, 160, 180)
    path = tmp_path / "two.mp4"

    def frame(colours: tuple[int, int]) -> np.ndarray:
        rgb = np.zeros((SIZE.height, SIZE.width, 3), np.uint8)
        rgb[:, :160] = PALETTE[colours[0]]
        rgb[:, 160:] = PALETTE[colours[1]]
        rgb[70:110, 20:140] = (255, 255, 255)  # a label: less than half the region, ignored
        y, u, v = rgb_to_yuv(rgb)
        return np.concatenate([y, u.reshape(-1, SIZE.width), v.reshape(-1, SIZE.width)])

    with Encoder(path, settings()) as encoder:
        for i in range(2 * FPS):
            encoder.put_video(frame((0, 2) if i < FPS else (5, 7)), i)
            start = i * RATE // FPS
            encoder.put_audio(np.zeros((2, (i + 1) * RATE // FPS - start), np.float32), start)
    samples = presence(path, {"left": left, "right": right}, every_s=0.5)
    assert [s.time_s for s in samples] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert [s.seen for s in samples] == [
        {"left": 0, "right": 2},
        {"left": 0, "right": 2},
        {"left": 5, "right": 7},
        {"left": 5, "right": 7},
    ]
    # A grey area matches no participant.
    grey = presence(path, {"label": Rect(40, 80, 80, 20)}, every_s=10)
    assert grey[0].seen == {"label": None}


def test_a_truncated_file_is_described_up_to_where_it_breaks(tmp_path: Path) -> None:
    path = tmp_path / "whole.mp4"
    clapper_file(path, 3.0)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    report = probe(cut)
    assert report.damage is not None
    assert 0 < report.playable_bytes < report.size_bytes
    assert report.video is not None and 0 < report.video.packets < 3 * FPS
    sync = measure_sync(cut)
    assert len(sync.flashes_s) >= 1 and all(o is not None for o in sync.offsets_s)


def test_cli_prints_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.mp4"
    clapper_file(path, 2.0)
    assert main(["inspect", str(path), "--sync"]) == 0
    text = capsys.readouterr().out
    assert "h264 (High)" in text and "aac (LC)" in text and "1 flashes, 1 beeps" in text
    assert main(["inspect", str(path), "--json", "--sync", "--region", "all=0,0,320,180"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["kind"] for s in data["streams"]] == ["video", "audio"]
    assert data["streams"][0]["width"] == SIZE.width
    assert len(data["sync"]["offsets_s"]) == 1
    assert data["presence"][0]["seen"] == {"all": None}  # a clapper is no palette colour
    assert main(["inspect", str(tmp_path / "absent.mp4")]) == 1
