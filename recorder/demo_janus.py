"""`recorder demo --room janus`: the demo recorded through a real Janus VideoRoom.

The same synthetic participants as the embedded room's demo (`recorder.demo`: palette cameras,
voices taking turns) join a VideoRoom created for the run and publish over WebRTC; one of them
shares a screen for the middle third of the recording (a renegotiation, as a browser does). A
Janus room has no startRecording: the demo launches the worker itself, as a control service
would, with a job naming the room (`connector: janus`), reads its state and the live line from
the worker's control endpoint, and stops it with SIGTERM when the duration is up (or on Ctrl-C).

With no `--janus-url`, the demo runs Janus itself (`recorder.testing.janus`: the project's
configuration, installed when missing) in a sealed network namespace, and runs the publishers
and the worker inside it too; it needs root for that. Nothing then leaves that network, so a
webhook or an S3 bucket on another host cannot be reached from the worker: record to the local
directory, or give `--janus-url` of a Janus the machine can reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any, TextIO, cast

import aiohttp

from recorder.client.janus import JanusPublisher, create_room, destroy_room
from recorder.client.media import paced_tracks
from recorder.demo import (
    STARTED_TIMEOUT_S,
    STATUS_LINE_INTERVAL_S,
    STOPPED_TIMEOUT_S,
    DemoOptions,
    DemoOutcome,
    SeenStatus,
    WorkerStatusLine,
    demo_participant,
    free_loopback_port,
    screen_track,
    storage_locations,
    worker_status,
    worker_with_control,
)
from recorder.embedded_room.server import RoomServer
from recorder.lifecycle import Status
from recorder.testing.janus import JanusServer

WORKER_SEEN_AS = "worker"  # whose statuses the report lists: the worker's own, via its endpoint
SHARING_PARTICIPANT = 2  # who shares a screen
SHARE_FROM, SHARE_UNTIL = 1 / 3, 2 / 3  # of the recording's duration
STATE_POLL_S = 0.1


class _Publishers:
    """The demo's publishers, standing in for the room in `WorkerStatusLine`'s fallback line
    (which only asks for the names of who is present)."""

    def __init__(self, publishers: list[JanusPublisher]) -> None:
        self.publishers = publishers

    def participant_names(self, _room_id: str) -> list[str]:
        return [publisher.name for publisher in self.publishers]


async def run_janus_demo(
    options: DemoOptions,
    *,
    janus_url: str | None = None,
    out: TextIO,
    stop_early: asyncio.Event | None = None,
) -> DemoOutcome:
    """Record the demo through Janus (ours, in a sealed network, when `janus_url` is None).

    Raises `recorder.testing.janus.JanusUnavailableError` when Janus cannot be run here.
    """
    stop = stop_early or asyncio.Event()
    if janus_url is not None:
        return await _JanusDemo(janus_url, options, out).run(stop)
    server = JanusServer()
    server.start()
    try:
        network = server.network
        if network is None:
            raise RuntimeError("Janus started without its network")
        print(f"janus: {server.ws_url} in a sealed network (log {server.log_path})", file=out)
        # The publishers' and the worker's sockets are made by this thread: all inside.
        with network.entered():
            return await _JanusDemo(server.ws_url, options, out).run(stop)
    finally:
        server.close()


class _JanusDemo:
    def __init__(self, url: str, options: DemoOptions, out: TextIO) -> None:
        self.url = url
        self.options = options
        self.out = out
        self.room_id = 1 + secrets.randbelow(2**31)
        self.recording_id = f"demo-janus-{secrets.token_hex(4)}"
        self.outcome = DemoOutcome(recording_id=self.recording_id)
        self.seen: list[SeenStatus] = []
        self.outcome.seen[WORKER_SEEN_AS] = self.seen
        self.publishers: list[JanusPublisher] = []
        self.port = free_loopback_port()
        self.origin_s = time.monotonic()

    async def run(self, stop: asyncio.Event) -> DemoOutcome:
        await create_room(self.url, self.room_id, description="recorder demo")
        print(f"room: {self.url} (VideoRoom {self.room_id})", file=self.out, flush=True)
        worker: asyncio.subprocess.Process | None = None
        try:
            count = self.options.participants
            for number in range(1, count + 1):
                source = demo_participant(number, count)
                publisher = await JanusPublisher.join(self.url, self.room_id, source.name)
                self.publishers.append(publisher)
                await publisher.publish(paced_tracks(source))
            worker = await self._launch()
            if await self._wait_started(worker):
                await self._play(stop)
            await self._stop(worker)
        finally:
            if worker is not None and worker.returncode is None:
                worker.kill()
                await worker.wait()
            await asyncio.gather(*(p.leave() for p in self.publishers), return_exceptions=True)
            with contextlib.suppress(Exception):
                await destroy_room(self.url, self.room_id)
        self._locate()
        return self.outcome

    def _job(self) -> dict[str, Any]:
        job: dict[str, Any] = {
            "recordingId": self.recording_id,
            "room": {"connector": "janus", "url": self.url, "roomId": self.room_id},
            "config": self.options.config(),
            "limits": {"emptyRoomTimeoutSec": 0},
        }
        if self.options.webhook_url is not None:
            job["webhookUrl"] = self.options.webhook_url
        if self.options.aws_dir_path is not None:
            job["awsDirPath"] = self.options.aws_dir_path
        return job

    async def _launch(self) -> asyncio.subprocess.Process:
        command = self.options.worker_command or worker_with_control(
            self.port, self.options.worker_log
        )
        if self.options.worker_log is not None:
            print(f"worker log: {self.options.worker_log}", file=self.out, flush=True)
        worker = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, env=dict(os.environ)
        )
        if worker.stdin is not None:
            worker.stdin.write(json.dumps(self._job()).encode())
            await worker.stdin.drain()
            worker.stdin.close()
        self._saw(Status.STARTING)
        return worker

    def _saw(self, status: Status) -> None:
        if not self.seen or self.seen[-1].status is not status:
            self.seen.append(SeenStatus(status, time.monotonic() - self.origin_s))

    async def _state(self) -> Status | None:
        try:
            state = (await worker_status(self.port)).get("state")
            return Status(state) if state else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def _wait_started(self, worker: asyncio.subprocess.Process) -> bool:
        deadline = time.monotonic() + STARTED_TIMEOUT_S
        while time.monotonic() < deadline and worker.returncode is None:
            if await self._state() is Status.STARTED:
                self._saw(Status.STARTED)
                self.outcome.started_s = self.seen[-1].at_s
                return True
            await asyncio.sleep(STATE_POLL_S)
        self.outcome.error = (
            f"the worker exited ({worker.returncode}) before the recording started"
            if worker.returncode is not None
            else f"no RECORDING_STARTED within {STARTED_TIMEOUT_S:.0f} s"
        )
        return False

    async def _play(self, stop: asyncio.Event) -> None:
        """The screen share in the middle third, a status line a second, until the end."""
        duration_s = self.options.duration_s
        started_s = time.monotonic()
        sharer = self.publishers[min(SHARING_PARTICIPANT, len(self.publishers)) - 1]
        line = WorkerStatusLine(self.port)
        room = cast(RoomServer, _Publishers(self.publishers))  # the fallback asks for names only
        sharing = shared = False
        while not stop.is_set():
            elapsed_s = time.monotonic() - started_s
            if elapsed_s >= duration_s:
                break
            if not shared and elapsed_s >= SHARE_FROM * duration_s:
                shared = sharing = True
                print(f"{elapsed_s:5.1f} s  {sharer.name} shares a screen", file=self.out)
                number = self.publishers.index(sharer) + 1
                await sharer.start_screen_share(screen_track(number))
            if sharing and elapsed_s >= SHARE_UNTIL * duration_s:
                sharing = False
                print(f"{elapsed_s:5.1f} s  {sharer.name} stops sharing", file=self.out)
                await sharer.stop_screen_share()
            print(await line(room, elapsed_s), file=self.out, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_LINE_INTERVAL_S)
        self.outcome.recorded_s = time.monotonic() - started_s

    async def _stop(self, worker: asyncio.subprocess.Process) -> None:
        if worker.returncode is None:
            self._saw(Status.STOPPING)
            self.outcome.stopping_s = self.seen[-1].at_s
            worker.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(worker.wait(), STOPPED_TIMEOUT_S)
        except TimeoutError:
            self.outcome.error = f"the worker did not exit within {STOPPED_TIMEOUT_S:.0f} s"
            return
        self._saw(Status.STOPPED if code == 0 else Status.FAILED)
        if code != 0:
            self.outcome.error = self.outcome.error or f"the worker exited with {code}"

    def _locate(self) -> None:
        outcome = self.outcome
        media, manifest = storage_locations(self.recording_id, self.options, os.environ)
        outcome.media_location, outcome.manifest_location = media, manifest
        if outcome.succeeded and not media.startswith("s3://"):
            missing = [path for path in (media, manifest) if not Path(path).is_file()]
            if missing:
                outcome.error = f"RECORDING_STOPPED, but {', '.join(missing)} is not there"
