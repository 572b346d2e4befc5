"""`recorder room` as a user runs it: it prints its URL, serves participants, stops on SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from test_room_helpers import EVENT_TIMEOUT_S

from recorder.client import join
from recorder.embedded_room.protocol import ErrorCode, RoomRequestError


async def test_the_command_serves_a_room_until_interrupted() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recorder",
        "room",
        "--port",
        "0",
        "--worker-command",
        "/nonexistent/worker -",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), EVENT_TIMEOUT_S)).decode()
        assert line.startswith("room: ws://127.0.0.1:")
        url = line.split()[1]
        alice = await join(url, "Alice")
        assert [p.name for p in alice.participants.values()] == ["Alice"]
        # The worker command it was given cannot start: the caller is told, nothing changes.
        try:
            await alice.start_recording()
        except RoomRequestError as refused:
            assert refused.code == ErrorCode.START_RECORDING_FAILED
            assert "could not be launched" in refused.message
        else:
            raise AssertionError("a start with a missing worker was accepted")
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(alice.room_ended.wait(), EVENT_TIMEOUT_S)
        assert await asyncio.wait_for(process.wait(), EVENT_TIMEOUT_S) == 0
        await alice.leave()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
