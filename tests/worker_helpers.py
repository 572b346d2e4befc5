"""Helpers for the worker's tests: jobs for the embedded room, the worker as a process, webhooks.

`WorkerProcess` runs the real worker (`python -m recorder run -`, the job on standard input) the
way a launcher does, with its own environment, and keeps what it printed: the control endpoint's
URL line, and its log (standard error) for the assertions that read it. `worker_env` is the
environment every worker test starts from: output, spool and webhook settings in the test's
temporary directory, no bucket unless the test configures one.

`noisy_participant` is a synthetic participant whose camera is its palette colour under fresh
noise every frame: the encoder cannot predict it, so a short recording grows at its target
bitrate (what a test of streaming upload needs), while the per-channel median of a tile, which
the presence checker reads, stays the palette colour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from servers import Received

from recorder.embedded_room.protocol import DEFAULT_ROOM_ID
from recorder.embedded_room.server import RoomServer
from recorder.lifecycle import Status
from recorder.notify.signing import SIGNATURE_HEADER, verify_signature
from recorder.testing.audio import Tone, participant_tone_hz
from recorder.testing.sources import AudioFormat, SyntheticParticipant, VideoFormat
from recorder.testing.video import PALETTE

WEBHOOK_SECRET = "test-webhook-secret"
# Launch (imports, join, first frame in the file) on two shared cores; the target is 1.5 s.
STARTED_TIMEOUT_S = 20.0
FINISHED_TIMEOUT_S = 40.0  # stopping: closing the file, storing it, the webhooks' drain
CONTROL_LINE_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.02
STATUS_ORDER = [Status.STARTING, Status.STARTED, Status.STOPPING, Status.STOPPED]
NOISE_AMPLITUDE = 60  # +- levels around the palette colour: unpredictable, median unchanged


def worker_env(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    """The process environment for a worker: local output under `tmp_path`, signed webhooks
    allowed to reach the test's receiver on 127.0.0.1, no bucket; `overrides` (None removes)."""
    env = dict(os.environ)
    for name in ("RECORDER_S3_BUCKET", "RECORDER_JOB", "RECORDER_CONTROL_TOKEN"):
        env.pop(name, None)
    env.update(
        RECORDER_OUTPUT_DIR=str(tmp_path / "out"),
        RECORDER_SPOOL_DIR=str(tmp_path / "spool"),
        RECORDER_WEBHOOK_SECRET=WEBHOOK_SECRET,
        RECORDER_WEBHOOK_ALLOW_PRIVATE="1",
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def room_job(server: RoomServer, room_id: str = DEFAULT_ROOM_ID, **fields: Any) -> dict[str, Any]:
    """A job that joins `room_id` of the embedded room with a fresh recorder token."""
    job: dict[str, Any] = {
        "room": {
            "connector": "loopback",
            "url": server.url,
            "roomId": room_id,
            "token": server.issue_recorder_token(room_id),
        },
    }
    job.update(fields)
    return job


_LAUNCHED: list[WorkerProcess] = []


@pytest.fixture(autouse=True)
async def reap_workers() -> AsyncIterator[None]:
    """Kill, at the end of each test, any worker it launched that is still running."""
    yield
    while _LAUNCHED:
        await _LAUNCHED.pop().kill()


@dataclass
class WorkerResult:
    returncode: int
    stdout: str
    stderr: str


class WorkerProcess:
    """`python -m recorder run -` with a job on standard input, as a launcher runs it.

    Every worker launched is killed at the end of its test if it is still running (the
    `reap_workers` fixture, autouse in the modules that import it): a failing test never leaves
    a process behind.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        _LAUNCHED.append(self)
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers = [
            asyncio.create_task(self._read(process.stdout, self._stdout), name="worker stdout"),
            asyncio.create_task(self._read(process.stderr, self._stderr), name="worker stderr"),
        ]

    @classmethod
    async def launch(
        cls, job: Mapping[str, Any] | str, env: Mapping[str, str], *arguments: str
    ) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "recorder",
            "run",
            "-",
            *arguments,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
        )
        assert process.stdin is not None
        text = job if isinstance(job, str) else json.dumps(job)
        process.stdin.write(text.encode())
        await process.stdin.drain()
        process.stdin.close()
        return cls(process)

    @staticmethod
    async def _read(stream: asyncio.StreamReader | None, lines: list[str]) -> None:
        if stream is None:
            return
        while line := await stream.readline():
            lines.append(line.decode(errors="replace"))

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    async def control_url(self, timeout_s: float = CONTROL_LINE_TIMEOUT_S) -> str:
        """The endpoint's URL from the worker's `control: URL` line."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self._stdout:
                if line.startswith("control: "):
                    return line.split(" ", 1)[1].strip()
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"no control line; stderr:\n{self.stderr}")
            await asyncio.sleep(POLL_INTERVAL_S)

    async def wait_for_log(self, text: str, timeout_s: float = STARTED_TIMEOUT_S) -> None:
        """Wait until the worker's log holds `text` (bounded)."""
        deadline = time.monotonic() + timeout_s
        while text not in self.stderr:
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the worker's log:\n{self.stderr}")
            await asyncio.sleep(POLL_INTERVAL_S)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def finish(self, timeout_s: float = FINISHED_TIMEOUT_S) -> WorkerResult:
        """Wait for the exit (killing it past `timeout_s`); what it printed."""
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(
                f"the worker did not exit in {timeout_s} s:\n{self.stderr}"
            ) from None
        finally:
            await asyncio.wait(self._readers, timeout=5.0)
        return WorkerResult(self.process.returncode or 0, "".join(self._stdout), self.stderr)

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        for reader in self._readers:
            reader.cancel()


async def until(predicate: Any, timeout_s: float, what: str = "condition") -> None:
    """Wait until `predicate()` holds, polling; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(POLL_INTERVAL_S)


# --- webhooks ------------------------------------------------------------------------------------


def webhook_bodies(requests: list[Received]) -> list[dict[str, Any]]:
    """The JSON bodies, each checked to carry a valid signature with the tests' secret."""
    bodies = []
    for request in requests:
        header = request.headers.get(SIGNATURE_HEADER)
        assert verify_signature(request.body, header, WEBHOOK_SECRET), header
        bodies.append(json.loads(request.body))
    return bodies


def statuses_of(bodies: list[dict[str, Any]]) -> list[str]:
    return [body["data"]["status"] for body in bodies]


# --- media ---------------------------------------------------------------------------------------


def noisy_participant(index: int, name: str, video: VideoFormat) -> SyntheticParticipant:
    """Palette colour `index` under fresh noise every frame, and a tone of its own."""
    base = np.empty((video.height, video.width, 3), np.int16)
    base[:] = PALETTE[index % len(PALETTE)]
    rng = np.random.default_rng(index)

    def picture(_t: float) -> av.VideoFrame:
        noise = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, base.shape, dtype=np.int16)
        rgb = np.clip(base + noise, 0, 255).astype(np.uint8)
        return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")

    audio = AudioFormat()
    return SyntheticParticipant(name, picture, video, Tone(participant_tone_hz(index)), audio)


# --- a store that fails on purpose ---------------------------------------------------------------

SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "content-length", "host", "keep-alive", "transfer-encoding", "upgrade"}
)


class FlakyS3Proxy:
    """An HTTP proxy on 127.0.0.1 in front of a real S3 endpoint (moto) that answers the first
    `fail_first` requests `matching` with 503 SlowDown, then forwards everything: a store that
    fails in the middle of an upload and recovers, exactly where the test says."""

    def __init__(
        self,
        upstream: str,
        *,
        fail_first: int,
        matching: Callable[[web.Request], bool],
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.fail_first = fail_first
        self.matching = matching
        self.failed = 0
        self.forwarded: list[str] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        what = f"{request.method} {request.path_qs}"
        if self.matching(request) and self.failed < self.fail_first:
            self.failed += 1
            return web.Response(status=503, body=SLOW_DOWN_BODY, content_type="application/xml")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            answer = {
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP_HEADERS
            }
            self.forwarded.append(f"{what} -> {upstream.status}")
            if request.method == "HEAD":  # no body: the object's size is in Content-Length
                answer["Content-Length"] = upstream.headers.get("Content-Length", "0")
                return web.Response(status=upstream.status, headers=answer)
            return web.Response(status=upstream.status, body=payload, headers=answer)


def is_upload_part(request: web.Request) -> bool:
    """S3's UploadPart: a PUT naming a part number."""
    return request.method == "PUT" and "partNumber" in request.query
