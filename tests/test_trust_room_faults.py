"""Faults of the room around a running worker: signalling lost, everyone gone and one back.

* **The signalling connection drops** (the worker's WebSocket to the room is cut by a relay on
  127.0.0.1; the room itself goes on). The loopback connector does not reconnect: it reports
  the room as ended, and the worker stops and delivers what it recorded up to the drop
  (`stopReason: room-ended`, exit 0). What is lost is what the room does after the drop.
* **Every participant leaves and one comes back before `emptyRoomTimeoutSec`**: the recording
  goes on; the timeout counts again from the last leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from worker_helpers import (
    WorkerProcess,
    reap_workers,  # noqa: F401 - autouse fixture
    room_job,
    worker_env,
)

from recorder.client import join
from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode
from recorder.inspect import probe

STARTED_LOG = "RECORDING_STARTED"
RELAY_CLOSE_TIMEOUT_S = 2.0
# A stop that follows a drop or a timeout: the next tick and the closing of a small file.
STOP_WITHIN_S = 5.0


class CuttableRelay:
    """A TCP relay on 127.0.0.1 in front of the room's WebSocket port, whose connections the
    test can cut at once (a dropped signalling connection, the room server untouched)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink), name="relay pipe")
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def cut(self) -> None:
        """Close every relayed connection (both sides); keep listening."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        if self._pipes:
            await asyncio.wait(set(self._pipes), timeout=RELAY_CLOSE_TIMEOUT_S)

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _manifest(tmp_path: Path) -> dict[str, Any]:
    (path,) = (tmp_path / "out").rglob("*.json")
    return json.loads(path.read_text())


async def test_a_dropped_signalling_connection_ends_the_recording_and_keeps_it(
    tmp_path: Path,
) -> None:
    async with RoomServer() as server:
        eve = await join(server.url, "Eve")
        relay = CuttableRelay(int(server.url.split(":")[2].split("/")[0]))
        await relay.start()
        try:
            job = room_job(server, config={"quality": "low"}, limits={"emptyRoomTimeoutSec": 0})
            job["room"]["url"] = server.url.replace(f":{relay.upstream_port}/", f":{relay.port}/")
            worker = await WorkerProcess.launch(job, worker_env(tmp_path))
            await worker.wait_for_log(STARTED_LOG)
            await asyncio.sleep(1.0)  # a second of recording before the drop
            cut_at = time.monotonic()
            await relay.cut()
            result = await worker.finish()
            stopped_after_s = time.monotonic() - cut_at
            assert server.participant_names(job["room"]["roomId"]) == ["Eve"]  # the room goes on
        finally:
            await relay.close()
            await eve.leave()
    assert result.returncode == ExitCode.OK, result.stderr
    assert "signalling connection was lost" in result.stderr
    assert stopped_after_s < STOP_WITHIN_S
    manifest = _manifest(tmp_path)
    assert manifest["stopReason"] == "room-ended"
    assert manifest["durationS"] >= 1.0
    (media,) = (tmp_path / "out").rglob("*.mp4")
    report = probe(media)
    assert report.damage is None and report.video is not None
    assert report.video.duration_s == pytest.approx(manifest["durationS"], abs=0.2)


async def test_everyone_leaving_and_one_returning_before_the_timeout_keeps_recording(
    tmp_path: Path,
) -> None:
    timeout_s = 2
    async with RoomServer() as server:
        eve = await join(server.url, "Eve")
        job = room_job(server, config={"quality": "low"}, limits={"emptyRoomTimeoutSec": timeout_s})
        worker = await WorkerProcess.launch(job, worker_env(tmp_path))
        await worker.wait_for_log(STARTED_LOG)
        await eve.leave()
        await asyncio.sleep(timeout_s / 2)  # the room is empty for half the timeout...
        bob = await join(server.url, "Bob")  # ...then someone comes back
        try:
            await asyncio.sleep(timeout_s * 1.5)  # past when the first timeout would have fired
            assert worker.process.returncode is None, worker.stderr  # still recording
            assert "empty" not in worker.stderr.lower()
            await bob.leave()
            left = time.monotonic()
            result = await worker.finish()
            stopped_after_s = time.monotonic() - left
        finally:
            await bob.leave()
            if worker.process.returncode is None:
                worker.signal(signal.SIGTERM)
    assert result.returncode == ExitCode.OK, result.stderr
    assert timeout_s <= stopped_after_s < timeout_s + STOP_WITHIN_S
    manifest = _manifest(tmp_path)
    assert manifest["stopReason"] == "empty-room-timeout"
    spans = {p["name"]: p["present"] for p in manifest["participants"]}
    (eve_span,) = spans["Eve"]
    (bob_span,) = spans["Bob"]
    gap_s = bob_span[0] - eve_span[1]
    assert gap_s == pytest.approx(timeout_s / 2, abs=0.3)  # the empty half-timeout, recorded
    assert manifest["durationS"] - bob_span[1] == pytest.approx(timeout_s, abs=0.3)
