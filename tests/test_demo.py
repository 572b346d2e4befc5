"""`recorder demo`: its script and media, where it says the recording is, and a short real run.

The real run (`recorder demo --duration 5` as a process, with the real worker) is the README's
main command on a fresh machine: it must exit 0 and leave a playable file and its manifest where
it says. Its wall time is inherent (5 s recorded plus start and stop).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layouts.model import LayoutType, Theme
from recorder.cli import build_parser
from recorder.demo import (
    CAMERA_FORMAT,
    TURN_S,
    DemoOptions,
    TakingTurns,
    demo_participant,
    demo_script,
    storage_locations,
)
from recorder.inspect import probe
from recorder.job import RecordingConfig
from recorder.lifecycle import Status
from recorder.presets import Mode, Quality
from recorder.storage.from_env import OUTPUT_DIR_ENV_VAR
from recorder.storage.sink import S3_BUCKET_ENV_VAR
from recorder.testing.audio import Tone
from recorder.testing.video import nearest_participant

RATE = 48_000
AUDIBLE_RMS = 0.02  # a speaker's voice is near -20 dBFS RMS; silence is exactly 0


def rms_per_turn(signal: TakingTurns, turns: int) -> np.ndarray:
    """The RMS of each whole turn's samples, turn edges (the fades) excluded."""
    levels = []
    for turn in range(turns):
        start = round((turn * TURN_S + 0.05) * RATE)
        count = round((TURN_S - 0.1) * RATE)
        samples = signal.render(start, count, RATE)
        levels.append(float(np.sqrt(np.mean(np.square(samples)))))
    return np.asarray(levels)


def test_participants_speak_in_turns_one_at_a_time() -> None:
    speakers = 4
    turns = 2 * speakers
    loud = np.stack(
        [
            rms_per_turn(demo_participant(n, speakers).signal, turns) > AUDIBLE_RMS  # type: ignore[arg-type]
            for n in range(1, speakers + 1)
        ]
    )
    # Exactly one voice per turn, and the floor goes round: participant n speaks turns n-1, n+3.
    assert loud.sum(axis=0).tolist() == [1] * turns
    assert [int(np.argmax(loud[:, turn])) for turn in range(turns)] == [0, 1, 2, 3] * 2


def test_a_turn_is_silent_outside_and_fades_at_its_edges() -> None:
    turns = TakingTurns(Tone(440.0, amplitude=0.5), turn=1, speakers=2, turn_s=1.0)
    samples = turns.render(0, 4 * RATE, RATE)
    t = np.arange(samples.size) / RATE
    assert np.all(samples[turns.speaking_at(t) == 0] == 0.0)
    # Its turns are [1, 2) and [3, 4): full level inside, no click at the start.
    inside = samples[round(1.2 * RATE) : round(1.8 * RATE)]
    assert np.abs(inside).max() == pytest.approx(0.5, abs=0.01)
    assert np.abs(samples[RATE : RATE + 10]).max() < 0.05


def test_demo_cameras_show_the_participants_palette_colour() -> None:
    participant = demo_participant(3, 4)
    frame = participant.video_frame(0)
    assert (frame.width, frame.height) == (CAMERA_FORMAT.width, CAMERA_FORMAT.height)
    median = np.median(frame.to_ndarray(format="rgb24").reshape(-1, 3), axis=0)
    assert nearest_participant(tuple(median)) == 2  # participant 3 is palette index 2


@pytest.mark.parametrize("participants", [3, 4])
def test_the_script_pins_turns_a_camera_off_and_on_and_shares_a_screen(participants: int) -> None:
    steps = demo_script(participants)
    fractions = [step.at_fraction for step in steps]
    assert fractions == sorted(fractions) and fractions[0] > 0 and fractions[-1] < 1
    said = " / ".join(step.says for step in steps)
    for expected in ("pins", "camera off", "camera on", "shares a screen", "stops sharing"):
        assert expected in said
    # Camera off comes before on, and the share starts before it stops.
    assert said.index("camera off") < said.index("camera on")
    assert said.index("shares a screen") < said.index("stops sharing")


def test_flags_choose_the_config_and_default_to_the_contract() -> None:
    defaults = RecordingConfig()
    args = build_parser(["demo"]).parse_args(["demo"])
    assert (args.layout, args.theme, args.mode, args.quality) == (
        defaults.layout.type,
        defaults.theme,
        defaults.mode,
        defaults.quality,
    )
    assert args.duration == 20.0 and args.participants == 4
    args = build_parser(["demo"]).parse_args(
        ["demo", "--layout", "sidebar", "--theme", "Dark", "--mode", "AUDIO", "--quality", "LOW"]
    )
    options = DemoOptions(
        layout=args.layout, theme=args.theme, mode=args.mode, quality=args.quality
    )
    assert options.config() == {
        "layout": {"type": "SIDEBAR"},
        "theme": "DARK",
        "mode": "audio",
        "quality": "low",
    }
    # What the demo asks for is a valid config by the job model's own rules.
    assert RecordingConfig.model_validate(options.config()).layout.type is LayoutType.SIDEBAR


def test_an_unknown_layout_is_refused_with_the_allowed_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser(["demo"]).parse_args(["demo", "--layout", "MOSAIC"])
    assert "GRID, SPOTLIGHT, SIDEBAR" in capsys.readouterr().err


def test_locations_follow_the_environment(tmp_path: Path) -> None:
    options = DemoOptions(aws_dir_path="/demo/run-1/", theme=Theme.DARK)
    media, manifest = storage_locations("rec1", options, {OUTPUT_DIR_ENV_VAR: str(tmp_path)})
    assert media == str(tmp_path.resolve() / "demo" / "run-1" / "rec1.mp4")
    assert manifest == str(tmp_path.resolve() / "demo" / "run-1" / "rec1.json")
    audio = DemoOptions(mode=Mode.AUDIO, quality=Quality.HIGH)
    media, manifest = storage_locations("rec2", audio, {S3_BUCKET_ENV_VAR: "bucket"})
    assert (media, manifest) == ("s3://bucket/rec2.m4a", "s3://bucket/rec2.json")


def test_a_short_demo_records_a_playable_file_and_a_manifest(tmp_path: Path) -> None:
    """The whole product from the command line: `recorder demo --duration 5`, real worker."""
    env = {**os.environ, OUTPUT_DIR_ENV_VAR: str(tmp_path / "out")}
    env.pop(S3_BUCKET_ENV_VAR, None)
    done = subprocess.run(
        [sys.executable, "-m", "recorder", "demo", "--duration", "5", "--quality", "low"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    media = Path(next(line.split(":", 1)[1].strip() for line in lines if line.startswith("file:")))
    manifest = Path(
        next(line.split(":", 1)[1].strip() for line in lines if line.startswith("manifest:"))
    )
    assert media.parent == (tmp_path / "out").resolve()
    report = probe(media)
    assert report.video is not None and report.audio is not None
    assert (report.video.codec, report.audio.codec) == ("h264", "aac")
    assert (report.video.width, report.video.height) == (854, 480)
    assert report.damage is None
    # About the 5 s asked for (from STARTED to stopRecording; the file starts at the first frame).
    assert report.duration_s is not None and 4.0 <= report.duration_s <= 7.0
    document = json.loads(manifest.read_text())
    assert document["recordingId"] == media.stem
    # Every participant saw the statuses in the contract's order.
    order = " ".join(status.name for status in Status if status is not Status.FAILED)
    seen = [line for line in lines if "STARTING" in line and "STOPPED" in line]
    assert len(seen) == 4
    for line in seen:
        assert " ".join(word for word in line.split() if word.isupper()) == order


def test_a_recording_that_fails_makes_the_demo_fail(tmp_path: Path) -> None:
    """A worker that dies before it records: every participant is told RECORDING_FAILED (by the
    room's control service), the demo says why and exits 1."""
    worker = f"{sys.executable} -c 'import sys; sys.stdin.read(); sys.exit(3)'"
    done = subprocess.run(
        [sys.executable, "-m", "recorder", "demo", "--duration", "5", "--worker-command", worker],
        cwd=tmp_path,
        env={**os.environ, OUTPUT_DIR_ENV_VAR: str(tmp_path / "out")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "WORKER_EXITED" in done.stdout
    assert "demo failed: the recording did not start" in done.stdout
    seen = [line for line in done.stdout.splitlines() if line.strip().endswith(tuple("0123456789"))]
    assert sum("FAILED" in line for line in seen) == 4  # each participant saw it
    assert not (tmp_path / "out").exists()
