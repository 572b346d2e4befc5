"""Janus' JSON API client against the real server: keep-alives hold a session that would time out,
errors come back as `JanusError` with Janus' codes, a lost connection fails what waits on it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.rooms.janus.api import (
    SESSION_NOT_FOUND,
    VIDEOROOM_NO_SUCH_ROOM,
    JanusConnectionLostError,
    JanusError,
    JanusSession,
)
from recorder.testing.janus import JanusServer, JanusUnavailableError
from recorder.testing.netns import SealedNetwork

SESSION_TIMEOUT_S = 2  # Janus' watchdog looks every 2 s: such a session is gone within ~4 s
# Longer than the timeout plus the watchdog's period (~4 s) with margin for a loaded machine:
# 5 s was seen to fall short once in CI-like runs on two busy cores.
OUTLIVE_S = 8.0
KEEPALIVE_S = 0.5
LOST_WITHIN_S = 5.0


@pytest.fixture
def short_lived_janus(sealed_network: SealedNetwork, tmp_path: Path) -> Iterator[JanusServer]:
    """A Janus whose sessions time out after `SESSION_TIMEOUT_S` without a request."""
    server = JanusServer(
        network=sealed_network, folder=tmp_path / "janus", session_timeout_s=SESSION_TIMEOUT_S
    )
    try:
        server.start()
    except JanusUnavailableError as error:
        pytest.skip(f"Janus cannot run here: {error}")
    try:
        yield server
    finally:
        server.close()


async def test_keep_alives_hold_a_session_that_would_time_out(
    short_lived_janus: JanusServer,
) -> None:
    url = short_lived_janus.ws_url
    kept = await JanusSession.open(url, keepalive_interval_s=KEEPALIVE_S, name="kept")
    idle = await JanusSession.open(url, keepalive_interval_s=3600.0, name="idle")
    try:
        await asyncio.sleep(OUTLIVE_S)  # inherent: the timeout is what is tested
        handle = await kept.attach()  # still there: the keep-alives held it
        assert handle.id > 0
        with pytest.raises(JanusError) as refused:
            await idle.attach()
        assert refused.value.code == SESSION_NOT_FOUND
    finally:
        await kept.close()
        await idle.close()


async def test_plugin_errors_carry_janus_codes_and_a_lost_socket_fails_waiters(
    janus: JanusServer,
) -> None:
    lost: list[str] = []
    session = await JanusSession.open(janus.ws_url, on_lost=lost.append)
    try:
        handle = await session.attach()
        with pytest.raises(JanusError) as refused:
            await handle.message({"request": "listparticipants", "room": 424242})
        assert refused.value.code == VIDEOROOM_NO_SUCH_ROOM
        assert "listparticipants" in str(refused.value)

        janus.stop()
        await asyncio.wait_for(session.lost.wait(), LOST_WITHIN_S)
        assert len(lost) == 1
        with pytest.raises(JanusConnectionLostError):
            await handle.message({"request": "listparticipants", "room": 424242})
    finally:
        await session.close()
