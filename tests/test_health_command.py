"""`recorder health`, the container probe, against the worker's real control endpoint.

The endpoint (`recorder.control.ControlServer`) runs on 127.0.0.1 in the test's loop, over an
object that answers `healthy()` as a recording does; the command runs in a thread as a probe
runs it, and its exit code is what Docker and the kubelet read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from servers import free_port

from recorder.cli import main
from recorder.control import ControlServer
from recorder.control_settings import CONTROL_TOKEN_ENV_VAR, ControlSettings

TOKEN = "probe-token-1"


class Recording:
    """The part of a recording the health route reads; the tests turn it unhealthy."""

    def __init__(self) -> None:
        self.health = (True, "RECORDING_STARTED")

    def healthy(self) -> tuple[bool, str]:
        return self.health

    def status(self) -> dict[str, Any]:
        raise NotImplementedError  # not asked by /healthz

    def metrics(self) -> Any:
        raise NotImplementedError

    def stop_from_control(self) -> bool:
        raise NotImplementedError

    def change_layout(self, body: object) -> dict[str, Any]:
        raise NotImplementedError


@asynccontextmanager
async def endpoint(recording: Recording, token: str | None = None) -> AsyncIterator[int]:
    server = ControlServer(
        recording, ControlSettings(port=0, token=token), recording_id="rec-health"
    )
    url = await server.start()
    try:
        yield int(url.rsplit(":", 1)[1])
    finally:
        await server.close()


async def probe(port: int) -> int:
    return await asyncio.to_thread(main, ["health", "--port", str(port), "--timeout", "5"])


async def test_healthy_then_unhealthy(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONTROL_TOKEN_ENV_VAR, raising=False)
    recording = Recording()
    async with endpoint(recording) as port:
        assert await probe(port) == 0
        assert '"healthy": true' in capsys.readouterr().out
        recording.health = (False, "the media thread is not running")
        assert await probe(port) == 1
        assert "503" in (out := capsys.readouterr().out) and "media thread" in out


async def test_the_probe_sends_the_token_the_worker_requires(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with endpoint(Recording(), token=TOKEN) as port:
        monkeypatch.delenv(CONTROL_TOKEN_ENV_VAR, raising=False)
        assert await probe(port) == 1
        assert "401" in capsys.readouterr().out
        monkeypatch.setenv(CONTROL_TOKEN_ENV_VAR, TOKEN)
        assert await probe(port) == 0


async def test_no_worker_listening_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    assert await probe(free_port()) == 1
    assert "/healthz" in capsys.readouterr().out
