"""`recorder bench --live`: the measuring parent, the missed-frame count, and the verdicts.

The whole benchmark (a 4-participant live room, 10 s or more) is a measurement, not a test; what
it rests on is tested here, fast: the parent that runs the worker passes it the job and the
signals and reports its CPU and peak memory exactly (wait4), the file check counts the frames
missing between pts, and the summary judges each target from the figures.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from layouts.model import Size
from recorder.bench.live import (
    TARGET_CPU_S_PER_S,
    LiveRun,
    ProcessReport,
    frames_missed_in_file,
    measuring_command,
    summarise,
)
from recorder.media.encoder import Encoder, EncoderSettings
from recorder.presets import PRESETS, Quality

CHILD_CPU_S = 0.3  # the child burns this much CPU
CHILD_MEMORY_BYTES = 120_000_000  # and touches this much memory
WAIT_TIMEOUT_S = 30.0

# A child that proves what the parent passes on: it copies its standard input to a file, burns
# CPU, touches memory, then waits for SIGTERM and exits 7 when it gets it.
CHILD = f"""
import signal, sys, time
import numpy as np
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append(1))
open(sys.argv[1], "w").write(sys.stdin.read())
block = np.ones({CHILD_MEMORY_BYTES} // 8)
t = time.process_time()
while time.process_time() - t < {CHILD_CPU_S}:
    pass
open(sys.argv[1] + ".ready", "w").write("ready")
while not got:
    time.sleep(0.01)
sys.exit(7)
"""


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.01)


def test_the_measuring_parent_passes_the_job_and_sigterm_and_measures_exactly(
    tmp_path: Path,
) -> None:
    report_path, echo = tmp_path / "report.json", tmp_path / "stdin.txt"
    command = measuring_command(report_path, [sys.executable, "-c", CHILD, str(echo)])
    started = time.monotonic()
    parent = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert parent.stdin is not None
    parent.stdin.write(b'{"job": 1}')
    parent.stdin.close()
    _wait_for(Path(f"{echo}.ready"))
    parent.send_signal(signal.SIGTERM)  # what the room's control service does on stopRecording
    assert parent.wait(WAIT_TIMEOUT_S) == 7  # the worker's own exit code
    assert echo.read_text() == '{"job": 1}'
    report = ProcessReport(**json.loads(report_path.read_text()))
    assert report.exit_code == 7
    assert report.cpu_s >= CHILD_CPU_S
    assert report.peak_rss_bytes >= CHILD_MEMORY_BYTES
    assert started <= report.launched_at_s < report.exited_at_s <= time.monotonic()
    # The samples taken while it ran grow and stay below the exact total.
    cpu = [sample[1] for sample in report.samples]
    assert cpu and cpu == sorted(cpu) and cpu[-1] <= report.cpu_s + 0.02


def test_cpu_at_interpolates_between_samples() -> None:
    report = ProcessReport(
        command=[],
        pid=1,
        launched_at_s=0.0,
        exited_at_s=3.0,
        exit_code=0,
        cpu_user_s=1.0,
        cpu_system_s=0.0,
        peak_rss_bytes=0,
        samples=[(1.0, 0.2, 0), (2.0, 0.6, 0)],
    )
    assert report.cpu_at(1.5) == pytest.approx(0.4)
    assert report.cpu_at(1.0) == pytest.approx(0.2)
    assert report.cpu_at(0.5) is None and report.cpu_at(2.5) is None


def test_the_file_check_counts_frames_missing_between_pts(tmp_path: Path) -> None:
    canvas, fps = Size(160, 96), 30
    settings = replace(
        EncoderSettings.for_preset(PRESETS[Quality.LOW], queue_max_wait_s=None), canvas=canvas
    )
    path = tmp_path / "gaps.mp4"
    kept = [i for i in range(60) if i not in (10, 11, 12, 40)]  # 4 frames never encoded
    with Encoder(path, settings) as encoder:
        for index in kept:
            planes = np.full((canvas.height * 3 // 2, canvas.width), index * 4 % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.time_base = Fraction(1, fps)
            encoder.put_video(frame, index)
        encoder.put_audio(np.zeros((2, 48_000 * 2), np.float32), 0)
    figures = frames_missed_in_file(path)
    assert figures["pts_gap_frames"] == 4
    assert figures["frames"] == len(kept)
    assert figures["missed"] == 4


def _run(**times: float | None) -> LiveRun:
    run = LiveRun(requested_at_s=0.0, statuses=["RECORDING_STOPPED"])
    run.started_at_s, run.stopping_at_s = times.get("started"), times.get("stopping")
    run.final_status = "RECORDING_STOPPED"
    run.worker_status = {"drops": {"lateTicks": int(times.get("late") or 0), "encoderQueue": 0}}
    return run


def test_the_summary_judges_each_target() -> None:
    worker = ProcessReport(
        command=[],
        pid=1,
        launched_at_s=10.0,
        exited_at_s=22.5,
        exit_code=0,
        cpu_user_s=6.0,
        cpu_system_s=1.0,
        peak_rss_bytes=300_000_000,
        # 0.9 CPU-s before STARTED at 11.2, then 0.5 CPU-s per second until STOPPING at 21.2.
        samples=[(10.5, 0.4, 0), (11.2, 0.9, 0), (21.2, 5.9, 0), (22.4, 6.9, 0)],
    )
    file_figures = {"duration_s": 10.7, "missed": 0}
    good = summarise(_run(started=11.2, stopping=21.2), worker, file_figures)
    assert good["figures"]["cpu_s_per_recorded_s"] == pytest.approx(0.5)
    assert good["figures"]["started_after_launch_s"] == pytest.approx(1.2)
    assert good["figures"]["peak_rss_mb"] == pytest.approx(300.0)
    assert good["meets_targets"] and all(good["met"].values())

    late = summarise(_run(started=11.8, stopping=21.2, late=3), worker, file_figures)
    assert late["figures"]["frames_missed"] == 3
    assert not late["met"]["frames"] and not late["met"]["started"]
    assert late["met"]["rss"] and not late["meets_targets"]
    heavy = replace(worker, samples=[(11.2, 0.9, 0), (21.2, 0.9 + 10 * 0.7, 0)])
    assert not summarise(_run(started=11.2, stopping=21.2), heavy, file_figures)["met"]["cpu"]
    assert TARGET_CPU_S_PER_S < 0.7
