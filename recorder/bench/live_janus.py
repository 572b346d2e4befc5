"""`recorder bench --live --room janus`: the live bench with a real Janus VideoRoom in the path.

The same room as `recorder.bench.live` (four of the demo's participants publishing 640x480 at
30 fps and speech over WebRTC, GRID at `med`), but published into a Janus VideoRoom, and the
worker records it through the Janus connector. Janus runs here with the project's configuration
in a sealed network namespace (`recorder.testing.janus`; root), and the publishers, the worker
and its measuring parent run inside that network too. A Janus room has no startRecording: the
bench launches the worker (through `live.measure_process`) with a job naming the room, reads
RECORDING_STARTED from its control endpoint (polled every `STATE_POLL_S`, so the start latency
is known to that much), and stops it with SIGTERM after `--frames` at 30 fps.

The worker's figures are `live.summarise`'s, so the two rooms compare line for line; Janus' own
CPU per recorded second and its RSS are added to the room's description.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from recorder.bench.live import (
    LIVE_CAMERA_FPS,
    LIVE_CAMERA_SIZE,
    LIVE_LAYOUT,
    LIVE_PARTICIPANTS,
    LIVE_QUALITY,
    STARTED_TIMEOUT_S,
    STATUS_TIMEOUT_S,
    STOPPED_TIMEOUT_S,
    LiveRun,
    ProcessReport,
    frames_missed_in_file,
    local_output,
    measuring_command,
    summarise,
)
from recorder.client.janus import JanusPublisher, create_room
from recorder.client.media import paced_tracks
from recorder.demo import (
    DemoOptions,
    demo_participant,
    free_loopback_port,
    storage_locations,
    worker_status,
    worker_with_control,
)
from recorder.lifecycle import Status
from recorder.storage.from_env import OUTPUT_DIR_ENV_VAR
from recorder.testing.janus import JanusServer
from recorder.testing.sources import VideoFormat

STATE_POLL_S = 0.05
BYTES_PER_MB = 1_000_000


def _cpu_and_rss(pid: int | None) -> tuple[float, int] | None:
    """utime + stime (s) and RSS (bytes) of a live process, from /proc."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu_s, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


async def _record(
    janus: JanusServer, frames: int, output_dir: Path, report_path: Path
) -> tuple[LiveRun, dict[str, float]]:
    url = janus.ws_url
    room_id = 1 + secrets.randbelow(2**31)
    await create_room(url, room_id, description="recorder bench")
    camera = VideoFormat(*LIVE_CAMERA_SIZE, fps=LIVE_CAMERA_FPS)
    publishers: list[JanusPublisher] = []
    control_port = free_loopback_port()
    command = measuring_command(report_path, list(worker_with_control(control_port)))
    recording_id = f"bench-janus-{secrets.token_hex(4)}"
    job = {
        "recordingId": recording_id,
        "room": {"connector": "janus", "url": url, "roomId": room_id},
        "config": {"layout": {"type": LIVE_LAYOUT}, "quality": LIVE_QUALITY},
        "limits": {"emptyRoomTimeoutSec": 0},
    }
    janus_figures: dict[str, float] = {}
    try:
        for number in range(1, LIVE_PARTICIPANTS + 1):
            source = demo_participant(number, LIVE_PARTICIPANTS, camera)
            publisher = await JanusPublisher.join(url, room_id, source.name)
            publishers.append(publisher)
            await publisher.publish(paced_tracks(source))
        run = LiveRun(requested_at_s=time.monotonic())
        worker = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        if worker.stdin is not None:
            worker.stdin.write(json.dumps(job).encode())
            await worker.stdin.drain()
            worker.stdin.close()
        run.statuses.append(str(Status.STARTING))
        await _wait_started(worker, control_port, run)
        if run.started_at_s is not None:
            janus_before = _cpu_and_rss(janus.pid)
            await asyncio.sleep(frames / LIVE_CAMERA_FPS)
            janus_after = _cpu_and_rss(janus.pid)
            try:
                run.worker_status = await worker_status(control_port, STATUS_TIMEOUT_S)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                run.worker_status = None
            if janus_before is not None and janus_after is not None:
                janus_figures = {
                    "cpu_s_per_recorded_s": round(
                        (janus_after[0] - janus_before[0]) * LIVE_CAMERA_FPS / frames, 3
                    ),
                    "rss_mb": round(janus_after[1] / BYTES_PER_MB, 1),
                }
        if worker.returncode is None:
            run.stopping_at_s = time.monotonic()
            run.statuses.append(str(Status.STOPPING))
            worker.send_signal(signal.SIGTERM)  # the measuring parent passes it on
        code = await asyncio.wait_for(worker.wait(), STOPPED_TIMEOUT_S)
        run.final_status = str(Status.STOPPED if code == 0 else Status.FAILED)
        run.statuses.append(run.final_status)
        media, _ = storage_locations(
            recording_id, DemoOptions(), {OUTPUT_DIR_ENV_VAR: str(output_dir)}
        )
        run.media_path = media
        return run, janus_figures
    finally:
        await asyncio.gather(*(p.leave() for p in publishers), return_exceptions=True)


async def _wait_started(
    worker: asyncio.subprocess.Process, control_port: int, run: LiveRun
) -> None:
    """Poll the worker's control endpoint until it says RECORDING_STARTED (or gives up)."""
    deadline = time.monotonic() + STARTED_TIMEOUT_S
    while time.monotonic() < deadline and worker.returncode is None:
        try:
            state = (await worker_status(control_port, STATUS_TIMEOUT_S)).get("state")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            state = None
        if state == Status.STARTED:
            run.started_at_s = time.monotonic()
            run.statuses.append(str(Status.STARTED))
            return
        await asyncio.sleep(STATE_POLL_S)


def run(args: argparse.Namespace) -> dict[str, object]:
    """One live recording through Janus of `args.frames` frames (at 30 fps), measured."""
    with tempfile.TemporaryDirectory(prefix="recorder-bench-janus-") as folder:
        workdir = Path(folder)
        report_path = workdir / "worker.json"
        output_dir = workdir / "recordings"
        janus = JanusServer(folder=workdir / "janus")
        with local_output(output_dir):
            try:
                janus.start()
                if janus.network is None:
                    raise RuntimeError("Janus started without its network")
                with janus.network.entered():
                    live, janus_figures = asyncio.run(
                        _record(janus, args.frames, output_dir, report_path)
                    )
            finally:
                janus.close()
        if not report_path.exists():
            raise RuntimeError(f"the worker was not measured (statuses: {live.statuses})")
        worker = ProcessReport(**json.loads(report_path.read_text(encoding="utf-8")))
        media = Path(live.media_path) if live.media_path else None
        file_figures: dict[str, Any] = (
            frames_missed_in_file(media)
            if media is not None and media.exists()
            else {"error": "no file"}
        )
    report = summarise(live, worker, file_figures)
    report["room"] = (
        f"{LIVE_PARTICIPANTS} participants, {LIVE_CAMERA_SIZE[0]}x{LIVE_CAMERA_SIZE[1]} at "
        f"{LIVE_CAMERA_FPS} fps over WebRTC through a Janus VideoRoom (sealed network); "
        f"{LIVE_LAYOUT} at {LIVE_QUALITY}; Janus itself: "
        f"{janus_figures.get('cpu_s_per_recorded_s')} CPU-s/s, "
        f"{janus_figures.get('rss_mb')} MB RSS"
    )
    report["janus"] = janus_figures
    return report
