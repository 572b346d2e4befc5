"""Real servers on 127.0.0.1 for tests (an S3-compatible store, a webhook receiver), and spools.

`MotoS3Server` runs moto's standalone server in a thread on a free port; boto3 talks to it over
HTTP exactly as it would to S3 (`AWS_ENDPOINT_URL_S3`). It can be stopped and started again on
the same port to play an outage, and keeps its buckets meanwhile.

`WebhookReceiver` is an aiohttp server whose behaviour a test scripts per request: answer with a
status, stall past the client's timeout, never answer, or redirect. It records every request
(body, headers, the status it answered) so tests check order, content and signatures.

`GrowingSpool` writes a spool the way the encoder does: whole fMP4 boxes, durable after each.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

from recorder.storage.spool import SpoolProgress

STALL_FOREVER_S = 3600.0  # "never answers": far beyond any timeout a test uses


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MotoS3Server:
    """moto's S3 on 127.0.0.1:<port>, stoppable and restartable on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._server is None:
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        """A plain boto3 client for the test's own checks (list parts, get objects)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3Server]:
    """One S3 server for the session; tests use their own buckets."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = MotoS3Server()
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class S3Env:
    server: MotoS3Server
    bucket: str
    client: Any  # a boto3 S3 client


def use_s3(monkeypatch: pytest.MonkeyPatch, server: MotoS3Server) -> S3Env:
    """Point the recorder's environment at `server`, with a new bucket; the bucket."""
    bucket = f"rec-{uuid.uuid4().hex[:12]}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": server.endpoint,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "RECORDER_S3_BUCKET": bucket,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "RECORDER_S3_CHECKSUM"):
        monkeypatch.delenv(name, raising=False)
    client = server.client()
    client.create_bucket(Bucket=bucket)
    return S3Env(server=server, bucket=bucket, client=client)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, moto_s3: MotoS3Server) -> S3Env:
    return use_s3(monkeypatch, moto_s3)


# --- webhook receiver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    stall_s: float = 0.0  # wait this long before answering (past the client's timeout: a timeout)
    location: str | None = None  # with a 3xx status: where to redirect


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    answered: int | None  # None when the client gave up before the answer


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that scripts its replies and records what it receives."""

    script: list[Reply] = field(default_factory=list)  # replies for the next requests, in order
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self) -> list[Received]:
        """The requests answered with a 2xx, in arrival order."""
        return [r for r in self.received if r.answered is not None and 200 <= r.answered < 300]

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until `count` requests have arrived (bounded)."""
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        record = Received(body=await request.read(), headers=dict(request.headers), answered=None)
        self.received.append(record)
        self.arrived.set()
        reply = self.script.pop(0) if self.script else self.default
        if reply.stall_s:
            await asyncio.sleep(reply.stall_s)  # the receiver being slow is the thing under test
        if reply.location is not None:
            response: web.StreamResponse = web.Response(
                status=reply.status, headers={"Location": reply.location}
            )
        else:
            response = web.Response(status=reply.status, text="ok")
        transport = request.transport
        if transport is not None and not transport.is_closing():
            record.answered = reply.status  # else the client gave up before the answer
        return response


async def start_receiver(receiver: WebhookReceiver) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)  # our logs are checked
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = int(runner.addresses[0][1])
    return runner


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    runner = await start_receiver(receiver)
    yield receiver
    await runner.cleanup()


# --- spools the tests write ----------------------------------------------------------------------


class GrowingSpool:
    """A spool that grows by whole fragmented-MP4 boxes, the way the encoder writes it.

    Payloads are deterministic pseudo-random bytes (incompressible, like media). After each
    complete box the durable size is reported to `progress`, as the encoder's `on_durable` does.
    """

    def __init__(self, path: Path, progress: SpoolProgress, *, seed: int = 0) -> None:
        self.path = path
        self.progress = progress
        self._random = random.Random(seed)
        self.size = 0
        path.write_bytes(b"")

    def box(self, box_type: bytes, payload_bytes: int) -> bytes:
        return struct.pack(">I4s", 8 + payload_bytes, box_type) + self._random.randbytes(
            payload_bytes
        )

    def _append(self, data: bytes, *, durable: bool = True) -> None:
        with self.path.open("ab") as file:
            file.write(data)
        self.size += len(data)
        if durable:
            self.progress.advance(self.size)

    def header(self) -> None:
        """`ftyp` and a sample-less `moov`, as the muxer writes them first."""
        self._append(self.box(b"ftyp", 24) + self.box(b"moov", 700))

    def fragment(self, payload_bytes: int) -> None:
        """One media fragment: a small `moof`, then its `mdat`."""
        self._append(self.box(b"moof", 92) + self.box(b"mdat", payload_bytes))

    def torn_fragment(self, payload_bytes: int) -> None:
        """A fragment cut short (the worker died while writing it): never reported durable."""
        data = self.box(b"moof", 92) + self.box(b"mdat", payload_bytes)
        self._append(data[: len(data) // 2], durable=False)

    def close(self) -> None:
        self.progress.finish(self.size)

    def content(self) -> bytes:
        return self.path.read_bytes()
