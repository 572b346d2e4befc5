"""`recorder bench --live`: what one live recording costs, measured on the recorder process alone.

One run of the real thing: the embedded room on 127.0.0.1, four participants publishing 640x480
cameras at 30 fps (a common webcam default) and speech-like microphones over real WebRTC, and a
GRID recording at `med` started and stopped through the room (`recorder.demo`'s participants,
speaking in turns). The publishers live in this process; the worker is its own process, launched
by the room's control service through a small measuring parent (`measure_process`, this module run
as `python -m recorder.bench.live --measure ...`), so nothing the publishers do is counted.

Figures, for the worker process alone:

* **CPU seconds per recorded second**, two ways: while recording (between RECORDING_STARTED and
  RECORDING_STOPPING, from `/proc/<pid>/stat` sampled every `SAMPLE_INTERVAL_S`: the steady
  cost capacity planning sizes by) and over the whole process life (start-up and finalisation
  included: `wait4` rusage, exact) divided by the file's duration;
* **peak RSS** (`wait4`'s `ru_maxrss`);
* **time to RECORDING_STARTED**, from the worker's launch (the measuring parent's clock reading
  just before it starts the worker; `CLOCK_MONOTONIC` is one clock for every process) to the
  moment a participant receives the status; and from the startRecording call, for reference;
* **output frames missed**: from the file (pts gaps in the video stream, and frames short of the
  file's duration times the frame rate) and from the worker's own counters where it reports them.

Targets (issue 4): <= 0.6 CPU-s/s while recording, <= 400 MB peak RSS, STARTED <= 1.5 s after
launch, no frame missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recorder.lifecycle import Status  # small: the measuring parent still starts fast

HELP = "record a live 4-participant room over WebRTC on 127.0.0.1; measure the recorder process"

LIVE_PARTICIPANTS = 4
LIVE_CAMERA_SIZE = (640, 480)
LIVE_CAMERA_FPS = 30
LIVE_LAYOUT = "GRID"
LIVE_QUALITY = "med"
SAMPLE_INTERVAL_S = 0.1  # /proc sampling of the worker while it runs
STARTED_TIMEOUT_S = 30.0
STOPPED_TIMEOUT_S = 60.0
STATUS_TIMEOUT_S = 2.0  # the worker's control endpoint answers from counters it keeps
TARGET_CPU_S_PER_S = 0.6
TARGET_PEAK_RSS_MB = 400.0
TARGET_STARTED_S = 1.5
TARGET_FRAMES_MISSED = 0
MEASURE_FLAG = "--measure"
BYTES_PER_MB = 1_000_000


# --- the measuring parent (runs in its own small process) ----------------------------------------


@dataclass(slots=True)
class ProcessReport:
    """What the measuring parent learned about the process it ran."""

    command: list[str]
    pid: int
    launched_at_s: float  # CLOCK_MONOTONIC just before the process was started
    exited_at_s: float
    exit_code: int
    cpu_user_s: float  # whole life, from wait4
    cpu_system_s: float
    peak_rss_bytes: int  # ru_maxrss
    # (CLOCK_MONOTONIC, CPU seconds so far, RSS bytes) while it ran
    samples: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_system_s

    def cpu_at(self, at_s: float) -> float | None:
        """CPU seconds used by `at_s`, interpolated between the samples around it."""
        before = [s for s in self.samples if s[0] <= at_s]
        after = [s for s in self.samples if s[0] >= at_s]
        if not before or not after:
            return None
        (t0, c0, _), (t1, c1, _) = before[-1], after[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (at_s - t0) / (t1 - t0)


def _proc_cpu_and_rss(pid: int) -> tuple[float, int] | None:
    """utime + stime (s) and RSS (bytes) of a live process, from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")" of the command: state is field 3, utime 14, stime 15, rss (pages) 24.
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    return cpu_s, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


def measure_process(command: list[str], report_path: Path) -> int:
    """Run `command` (inheriting standard input: the job) and write its `ProcessReport`.

    SIGTERM and SIGINT are passed on to it, so to the room's control service this parent is the
    worker. Returns the worker's exit code.
    """
    launched_at_s = time.monotonic()
    # Its standard output is not the bench's (the worker prints its control URL there); its log
    # (standard error) is left to the terminal.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: process.send_signal(received))
    samples: list[tuple[float, float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_INTERVAL_S):
            reading = _proc_cpu_and_rss(process.pid)
            if reading is not None:
                samples.append((time.monotonic(), *reading))

    sampler = threading.Thread(target=sample, name="bench: sample worker", daemon=True)
    sampler.start()
    while True:
        try:
            _, status, usage = os.wait4(process.pid, 0)
            break
        except InterruptedError:  # a signal arrived while waiting; it was passed on
            continue
    exited_at_s = time.monotonic()
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    report = ProcessReport(
        command=command,
        pid=process.pid,
        launched_at_s=launched_at_s,
        exited_at_s=exited_at_s,
        exit_code=process.returncode,
        cpu_user_s=usage.ru_utime,
        cpu_system_s=usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,
        samples=samples,
    )
    report_path.write_text(json.dumps(asdict(report)), encoding="utf-8")
    return process.returncode


def measuring_command(report_path: Path, worker_command: list[str]) -> list[str]:
    """The worker command wrapped in the measuring parent."""
    return [
        sys.executable,
        "-m",
        "recorder.bench.live",
        MEASURE_FLAG,
        str(report_path),
        "--",
        *worker_command,
    ]


# --- the run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def local_output(output_dir: Path) -> Iterator[None]:
    """While in the block, workers started from here store into `output_dir`, never S3 (they
    inherit this process's environment); the environment is put back afterwards."""
    keys = ("RECORDER_OUTPUT_DIR", "RECORDER_S3_BUCKET")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ["RECORDER_OUTPUT_DIR"] = str(output_dir)
    os.environ.pop("RECORDER_S3_BUCKET", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass(slots=True)
class LiveRun:
    """The times the bench itself saw (CLOCK_MONOTONIC) and where the file went."""

    requested_at_s: float
    started_at_s: float | None = None
    stopping_at_s: float | None = None
    final_status: str | None = None
    media_path: str | None = None
    statuses: list[str] = field(default_factory=list)
    worker_status: dict[str, Any] | None = None  # the last `GET /status` before the stop
    worker_status_at_s: float | None = None  # when it was read (the request's midpoint)

    def saw(self, status: Status, at_s: float | None = None) -> None:
        """A status as the calling participant received it, timed on arrival (`at_s`: when a
        participant in another process heard it, on the same CLOCK_MONOTONIC; default now)."""
        now = time.monotonic() if at_s is None else at_s
        self.statuses.append(str(status))
        if status is Status.STARTED:
            self.started_at_s = now
        elif status is Status.STOPPING:
            self.stopping_at_s = now
        elif status.is_final:
            self.final_status = str(status)


async def _record(frames: int, output_dir: Path, report_path: Path) -> LiveRun:
    # Imported here: the measuring parent (this module as a process) must start fast and small.

    from recorder.demo import (  # noqa: PLC0415
        DemoOptions,
        free_loopback_port,
        join_demo_room,
        storage_locations,
        worker_with_control,
    )
    from recorder.embedded_room.server import RoomServer  # noqa: PLC0415
    from recorder.storage.from_env import OUTPUT_DIR_ENV_VAR  # noqa: PLC0415
    from recorder.testing.sources import VideoFormat  # noqa: PLC0415

    camera = VideoFormat(*LIVE_CAMERA_SIZE, fps=LIVE_CAMERA_FPS)
    control_port = free_loopback_port()
    command = measuring_command(report_path, list(worker_with_control(control_port)))
    options = DemoOptions()
    async with RoomServer(worker_command=command) as server:
        room = await join_demo_room(server.url, LIVE_PARTICIPANTS, camera)
        try:
            caller = room[1]
            changed = asyncio.Event()
            run = LiveRun(requested_at_s=time.monotonic())

            def on_status(state: Any) -> None:
                run.saw(state.status)
                changed.set()

            caller.on_recording_state_changed = on_status
            run.requested_at_s = time.monotonic()
            recording_id = await caller.start_recording(
                config={"layout": {"type": LIVE_LAYOUT}, "quality": LIVE_QUALITY}
            )
            await record_for(
                run, changed, frames / LIVE_CAMERA_FPS, control_port, caller.stop_recording
            )
            media, _ = storage_locations(
                recording_id, options, {OUTPUT_DIR_ENV_VAR: str(output_dir)}
            )
            run.media_path = media
            return run
        finally:
            await asyncio.gather(*(p.leave() for p in room.values()), return_exceptions=True)


async def record_for(
    run: LiveRun,
    changed: asyncio.Event,
    recorded_s: float,
    control_port: int,
    stop: Callable[[], Awaitable[object]],
) -> None:
    """The live benches' recording, once startRecording was asked: wait for STARTED (bounded),
    let it record `recorded_s`, read the worker's `GET /status` just before the stop (its own
    counters, and its recording clock: the endpoint closes with the worker) and when it was
    read, `stop()`, then wait for the final status (bounded). `changed` is set at each status."""
    # Imported here: the measuring parent (this module as a process) must start fast and small.
    import aiohttp  # noqa: PLC0415

    from recorder.demo import worker_status  # noqa: PLC0415

    await _until(lambda: run.started_at_s is not None or run.final_status is not None,
                 changed, STARTED_TIMEOUT_S)  # fmt: skip
    if run.started_at_s is not None:
        await _until(lambda: run.final_status is not None, changed, recorded_s)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            asked_s = time.monotonic()
            run.worker_status = await worker_status(control_port, STATUS_TIMEOUT_S)
            run.worker_status_at_s = (asked_s + time.monotonic()) / 2
        if run.final_status is None:
            await stop()
    await _until(lambda: run.final_status is not None, changed, STOPPED_TIMEOUT_S)


async def _until(done: Any, changed: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `done()` (re-checked at each status), at most `timeout_s`; whether it holds."""
    deadline = time.monotonic() + timeout_s
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), remaining)
    return True


def frames_missed_in_file(path: Path) -> dict[str, Any]:
    """What the file says about missed output frames: pts gaps, and frames short of duration."""
    from recorder.inspect import probe  # noqa: PLC0415

    report = probe(path)
    video = report.video
    if video is None or not video.frame_rate:
        return {"error": f"no video stream in {path}"}
    frame_s = 1.0 / video.frame_rate
    gaps = 0
    if video.pts_delta_max_s is not None and video.irregular_deltas:
        gaps = _pts_gap_frames(path, frame_s)
    expected = round(video.duration_s / frame_s)
    return {
        "duration_s": round(video.duration_s, 3),
        "frames": video.packets,
        "expected_frames": expected,
        "pts_gap_frames": gaps,
        "irregular_deltas": video.irregular_deltas,
        "missed": max(gaps, expected - video.packets),
        "keyframe_spacing_max_s": video.keyframe_spacing_max_s,
        "bitrate_bps": round(video.bitrate_bps),
    }


def _pts_gap_frames(path: Path, frame_s: float) -> int:
    """Frames missing between consecutive video pts (a delta of n frames misses n - 1)."""
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
        time_base = float(stream.time_base)
    missing = 0
    for before, after in itertools.pairwise(pts):
        missing += max(0, round((after - before) * time_base / frame_s) - 1)
    return missing


def run(args: argparse.Namespace) -> dict[str, object]:
    """One live recording of `args.frames` frames (at 30 fps), measured."""
    if getattr(args, "room", "embedded") == "janus":  # the same room, through Janus
        from recorder.bench.live_janus import run as run_through_janus  # noqa: PLC0415

        return run_through_janus(args)
    with tempfile.TemporaryDirectory(prefix="recorder-bench-live-") as folder:
        workdir = Path(folder)
        report_path = workdir / "worker.json"
        output_dir = workdir / "recordings"
        with local_output(output_dir):
            live = asyncio.run(_record(args.frames, output_dir, report_path))
        if not report_path.exists():
            raise RuntimeError(f"the worker was not measured (statuses: {live.statuses})")
        worker = ProcessReport(**json.loads(report_path.read_text(encoding="utf-8")))
        media = Path(live.media_path) if live.media_path else None
        file_figures = (
            frames_missed_in_file(media)
            if media is not None and media.exists()
            else {"error": "no file"}
        )
    return summarise(live, worker, file_figures)


def summarise(live: LiveRun, worker: ProcessReport, file_figures: dict[str, Any]) -> dict[str, Any]:
    """The figures, the targets and whether each is met."""
    recording_cpu = None
    if live.started_at_s is not None and live.stopping_at_s is not None:
        start_cpu = worker.cpu_at(live.started_at_s)
        stop_cpu = worker.cpu_at(live.stopping_at_s)
        span_s = live.stopping_at_s - live.started_at_s
        if start_cpu is not None and stop_cpu is not None and span_s > 0:
            recording_cpu = (stop_cpu - start_cpu) / span_s
    duration_s = file_figures.get("duration_s")
    whole_cpu = worker.cpu_s / duration_s if duration_s else None
    started_s = live.started_at_s - worker.launched_at_s if live.started_at_s is not None else None
    peak_rss_mb = worker.peak_rss_bytes / BYTES_PER_MB
    # Missed output frames: gaps in the file's video pts (an encoder queue drop leaves one), and
    # ticks the worker was too late to compose (it repeats the previous frame: no gap, but a
    # frame of the room lost), from its own counters.
    drops = (live.worker_status or {}).get("drops")
    late_ticks = drops.get("lateTicks") if isinstance(drops, dict) else None
    file_missed = file_figures.get("missed")
    missed = None
    if file_missed is not None and late_ticks is not None:
        missed = int(file_missed) + int(late_ticks)
    figures = {
        "cpu_s_per_recorded_s": _round(recording_cpu),
        "cpu_s_per_recorded_s_whole_life": _round(whole_cpu),
        "cpu_s_total": round(worker.cpu_s, 2),
        "cpu_s_to_started": _round(
            worker.cpu_at(live.started_at_s) if live.started_at_s is not None else None
        ),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "started_after_launch_s": _round(started_s),
        "started_after_request_s": _round(
            live.started_at_s - live.requested_at_s if live.started_at_s is not None else None
        ),
        "stopped_after_stopping_s": _round(
            worker.exited_at_s - live.stopping_at_s if live.stopping_at_s is not None else None
        ),
        "frames_missed": missed,
        "frames_missed_in_file": file_missed,
        "worker_drops": drops,
    }
    met = {
        "cpu": recording_cpu is not None and recording_cpu <= TARGET_CPU_S_PER_S,
        "rss": peak_rss_mb <= TARGET_PEAK_RSS_MB,
        "started": started_s is not None and started_s <= TARGET_STARTED_S,
        "frames": missed is not None and missed <= TARGET_FRAMES_MISSED,
    }
    return {
        "room": (
            f"{LIVE_PARTICIPANTS} participants, {LIVE_CAMERA_SIZE[0]}x{LIVE_CAMERA_SIZE[1]} at "
            f"{LIVE_CAMERA_FPS} fps over WebRTC on 127.0.0.1; {LIVE_LAYOUT} at {LIVE_QUALITY}"
        ),
        "statuses": live.statuses,
        "worker_exit_code": worker.exit_code,
        "figures": figures,
        "file": file_figures,
        "targets": {
            "cpu_s_per_recorded_s": TARGET_CPU_S_PER_S,
            "peak_rss_mb": TARGET_PEAK_RSS_MB,
            "started_after_launch_s": TARGET_STARTED_S,
            "frames_missed": TARGET_FRAMES_MISSED,
        },
        "met": met,
        "meets_targets": all(met.values()) and live.final_status == "RECORDING_STOPPED",
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def format_table(report: dict[str, Any]) -> str:
    """The report for a terminal."""
    figures, targets, met = report["figures"], report["targets"], report["met"]

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    lines = [
        f"live: {report['room']}; statuses {' > '.join(report['statuses'])}",
        f"  CPU s per recorded s, while recording: {figures['cpu_s_per_recorded_s']} "
        f"(target <= {targets['cpu_s_per_recorded_s']}) {mark(met['cpu'])}",
        f"  CPU s per recorded s, whole process life: {figures['cpu_s_per_recorded_s_whole_life']}"
        f" ({figures['cpu_s_total']} s in all, {figures['cpu_s_to_started']} s before STARTED)",
        f"  peak RSS: {figures['peak_rss_mb']} MB (target <= {targets['peak_rss_mb']:.0f}) "
        f"{mark(met['rss'])}",
        f"  STARTED after launch: {figures['started_after_launch_s']} s (target <= "
        f"{targets['started_after_launch_s']}) {mark(met['started'])}; after the "
        f"startRecording call: {figures['started_after_request_s']} s",
        f"  frames missed: {figures['frames_missed']} (target {targets['frames_missed']}) "
        f"{mark(met['frames'])}: {figures['frames_missed_in_file']} in the file's pts, worker "
        f"counters {figures['worker_drops']}",
        f"  file: {report['file']}",
    ]
    return "\n".join(lines)


def _measure_main(argv: list[str]) -> int:
    """`python -m recorder.bench.live --measure REPORT -- COMMAND...`"""
    if len(argv) < 4 or argv[0] != MEASURE_FLAG or argv[2] != "--":
        print(f"usage: {MEASURE_FLAG} REPORT -- COMMAND...", file=sys.stderr)
        return 2
    return measure_process(argv[3:], Path(argv[1]))


if __name__ == "__main__":
    sys.exit(_measure_main(sys.argv[1:]))
