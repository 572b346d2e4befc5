"""`recorder demo --room janus` as a user runs it: Janus started here with the project's
configuration (in a sealed network namespace), three synthetic participants publishing into a
VideoRoom, one sharing a screen in the middle third, the real worker recording through the Janus
connector, stopped at the end; the file, its manifest and the screen share in it are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recorder.inspect import iter_video_frames, probe
from recorder.storage.from_env import OUTPUT_DIR_ENV_VAR
from recorder.storage.sink import S3_BUCKET_ENV_VAR
from recorder.testing.janus import janus_missing_reason
from recorder.testing.netns import SealedNetwork
from recorder.testing.stills import demo_name

DURATION_S = 8.0
PARTICIPANTS = 3
DEMO_TIMEOUT_S = 90.0
WHITE_LEVEL = 235  # the synthetic screen is a white slide; cameras are saturated colours
MIN_SCREEN_FRACTION = 0.05  # of the canvas: a screen tile, whatever the layout makes of it


@pytest.mark.slow
def test_the_demo_records_a_janus_room(tmp_path: Path) -> None:
    reason = SealedNetwork.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the demo's own Janus needs a sealed network, and {reason}")
    if janus_missing_reason() is not None and os.geteuid() != 0:
        pytest.skip(f"janus cannot be installed here: {janus_missing_reason()}")
    env = {**os.environ, OUTPUT_DIR_ENV_VAR: str(tmp_path / "out")}
    env.pop(S3_BUCKET_ENV_VAR, None)
    command = [
        sys.executable, "-m", "recorder", "demo", "--room", "janus", "--quality", "low",
        "--duration", str(DURATION_S), "--participants", str(PARTICIPANTS),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    media = Path(next(line.split(":", 1)[1].strip() for line in lines if line.startswith("file:")))
    report = probe(media)
    assert report.video is not None and report.audio is not None and report.damage is None
    assert DURATION_S - 1.0 <= report.video.duration_s <= DURATION_S + 4.0
    manifest = json.loads(media.with_suffix(".json").read_text())
    names = {p["name"] for p in manifest["participants"]}
    assert names == {demo_name(number) for number in range(1, PARTICIPANTS + 1)}
    assert any("shares a screen" in line for line in lines)

    # The screen share is in the file in the middle of the recording, not at its ends.
    white = {}
    for frame in iter_video_frames(media):
        t = float(frame.time or 0.0)
        if abs(t * 2 - round(t * 2)) < 1e-3:  # every half second
            rgb = frame.to_ndarray(format="rgb24")
            white[round(t, 1)] = float((rgb.min(axis=2) > WHITE_LEVEL).mean())
    shown = [t for t, fraction in white.items() if fraction > MIN_SCREEN_FRACTION]
    assert shown, white
    assert min(shown) >= DURATION_S / 3 and max(shown) <= report.video.duration_s - 0.5, white
    assert np.mean([white[t] for t in white if t < 1.0]) < MIN_SCREEN_FRACTION
