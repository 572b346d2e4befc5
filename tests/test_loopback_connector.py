"""The hidden recorder in the embedded room, with real WebRTC (ICE, DTLS, SRTP) on 127.0.0.1.

Participants publish small solid-colour cameras (one colour each, so a feed's content says whose
it is) and tones; the loopback connector receives, decodes and counts every frame per feed.
Rates are checked against what is sent (15 fps video, 50 frames/s audio) with a wide margin,
since two shared cores also run the publishers' encoders.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_room_helpers import (
    EVENT_TIMEOUT_S,
    TEST_FPS,
    TEST_VIDEO_SIZE,
    CountingSink,
    EventLog,
    camera,
    microphone,
    until,
)

from recorder.client import join
from recorder.embedded_room.ice import LOOPBACK_ADDRESS, candidate_addresses
from recorder.embedded_room.protocol import DEFAULT_ROOM_ID
from recorder.embedded_room.server import RoomServer
from recorder.job import RoomConfig
from recorder.rooms.base import (
    CameraChanged,
    MuteChanged,
    ParticipantLeft,
    PinChanged,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
    feed_id,
)
from recorder.rooms.loopback import LoopbackConnector

HELPERS = Path(__file__).with_name("test_room_helpers.py")
MEASURE_S = 1.5  # the window over which receive rates are measured
MIN_VIDEO_FPS = 0.6 * TEST_FPS  # well under the 15 fps sent: a loaded CI machine still passes
MIN_AUDIO_FPS = 0.6 * 50  # 20 ms Opus frames: 50 per second sent
COLOR_TOLERANCE = 25.0  # VP8 and YUV420 conversion move a solid colour by a few levels
# A participant that vanishes is turned into events within this: the WebSocket close is seen at
# once; only a peer that stops answering pings takes the heartbeat's 2 × 5 s.
VANISH_BOUND_S = 3.0

RED, GREEN, BLUE, YELLOW = (220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 230, 40)


@pytest.fixture
async def server():
    async with RoomServer() as room_server:
        yield room_server


@pytest.fixture
def sink() -> CountingSink:
    return CountingSink()


@pytest.fixture
async def recorder(server: RoomServer, sink: CountingSink):
    token = server.issue_recorder_token(DEFAULT_ROOM_ID)
    room = RoomConfig(connector="loopback", url=server.url, room_id=DEFAULT_ROOM_ID, token=token)
    connector = LoopbackConnector(room, sink)
    await connector.join()
    yield connector
    await connector.close()


async def _published(events: EventLog, participant_id: str, kind: TrackKind) -> TrackPublished:
    event = await events.wait_for(
        TrackPublished, lambda e: e.participant_id == participant_id and e.kind is kind
    )
    assert isinstance(event, TrackPublished)
    return event


def _assert_color(sink: CountingSink, feed: str, rgb: tuple[int, int, int]) -> None:
    assert np.abs(sink.colors[feed] - np.array(rgb)).max() < COLOR_TOLERANCE, sink.colors[feed]


async def test_the_hidden_recorder_receives_every_feed(
    server: RoomServer, sink: CountingSink, recorder: LoopbackConnector
) -> None:
    alice = await join(server.url, "Alice")
    bob = await join(server.url, "Bob")
    carol = await join(server.url, "Carol")
    cameras = {alice: RED, bob: GREEN, carol: BLUE}
    events = EventLog(recorder)
    try:
        for participant, rgb in cameras.items():
            await participant.publish(TrackKind.CAMERA, camera(rgb))
        await alice.publish(TrackKind.AUDIO, microphone(440.0))
        await bob.publish(TrackKind.AUDIO, microphone(550.0))
        for participant in cameras:
            await _published(events, participant.id, TrackKind.CAMERA)
        for participant in (alice, bob):
            await _published(events, participant.id, TrackKind.AUDIO)

        feeds = [feed_id(p.id, TrackKind.CAMERA) for p in cameras]
        feeds += [feed_id(p.id, TrackKind.AUDIO) for p in (alice, bob)]
        await until(lambda: all(sink.frames[f] > 0 for f in feeds))
        since = time.monotonic()
        await until(lambda: time.monotonic() - since > MEASURE_S)
        for participant, rgb in cameras.items():
            feed = feed_id(participant.id, TrackKind.CAMERA)
            assert sink.rate_since(feed, since) > MIN_VIDEO_FPS, (feed, sink.frames)
            assert sink.sizes[feed] == TEST_VIDEO_SIZE
            _assert_color(sink, feed, rgb)
        for participant in (alice, bob):
            feed = feed_id(participant.id, TrackKind.AUDIO)
            assert sink.rate_since(feed, since) > MIN_AUDIO_FPS, (feed, sink.frames)
        assert sink.frames[feed_id(carol.id, TrackKind.AUDIO)] == 0  # never published

        # Hidden and receive-only: no participant lists it, it sends nothing, all on 127.0.0.1.
        for participant in cameras:
            assert {p.name for p in participant.participants.values()} == {"Alice", "Bob", "Carol"}
            (peer,) = participant.peer_connections.values()
            assert candidate_addresses(peer.localDescription.sdp) == {LOOPBACK_ADDRESS}
            assert candidate_addresses(peer.remoteDescription.sdp) == {LOOPBACK_ADDRESS}
            answer = peer.remoteDescription.sdp
            assert answer.count("a=recvonly") == 3 and "a=sendrecv" not in answer
            assert "a=sendonly" not in answer
    finally:
        for participant in cameras:
            await participant.leave()


async def test_mute_camera_pin_and_screen_share_reach_the_recorder(
    server: RoomServer, sink: CountingSink, recorder: LoopbackConnector
) -> None:
    alice = await join(server.url, "Alice")
    bob = await join(server.url, "Bob")
    events = EventLog(recorder)
    audio = feed_id(alice.id, TrackKind.AUDIO)
    screen = feed_id(alice.id, TrackKind.SCREEN)
    try:
        await alice.publish(TrackKind.CAMERA, camera(RED))
        await alice.publish(TrackKind.AUDIO, microphone(440.0))
        await _published(events, alice.id, TrackKind.AUDIO)
        await until(lambda: sink.frames[audio] > 0)

        await alice.mute()
        muted = await events.wait_for(MuteChanged, lambda e: e.participant_id == alice.id)
        assert muted.muted is True
        await alice.unmute()
        unmuted = await events.wait_for(MuteChanged, lambda e: not e.muted)
        assert unmuted.participant_id == alice.id
        count = sink.frames[audio]
        await until(lambda: sink.frames[audio] > count + 10)  # audio flows again

        await alice.camera_off()
        off = await events.wait_for(CameraChanged, lambda e: e.participant_id == alice.id)
        assert off.on is False
        await alice.camera_on()
        await events.wait_for(CameraChanged, lambda e: e.on and e.participant_id == alice.id)

        await bob.pin(alice.id)
        pinned = await events.wait_for(PinChanged, lambda e: e.pinned)
        assert pinned.participant_id == alice.id
        await bob.unpin(alice.id)
        await events.wait_for(PinChanged, lambda e: not e.pinned and e.participant_id == alice.id)

        # A screen share is a second video track beside the camera.
        await alice.start_screen_share(camera(YELLOW))
        shared = await _published(events, alice.id, TrackKind.SCREEN)
        assert shared.feed_id == screen
        await until(lambda: sink.frames[screen] > 3)
        _assert_color(sink, screen, YELLOW)
        _assert_color(sink, feed_id(alice.id, TrackKind.CAMERA), RED)
        await alice.stop_screen_share()
        stopped = await events.wait_for(TrackUnpublished, lambda e: e.kind is TrackKind.SCREEN)
        assert stopped.participant_id == alice.id
        # Shared again: the same feed comes back.
        await alice.start_screen_share(camera(BLUE))
        again = [e for e in events.events if isinstance(e, TrackPublished)]
        await until(lambda: sink.frames[screen] > 0 and _close_to(sink, screen, BLUE))
        await events.wait_for(
            TrackPublished,
            lambda e: e.kind is TrackKind.SCREEN and e not in again,
        )
    finally:
        await alice.leave()
        await bob.leave()


def _close_to(sink: CountingSink, feed: str, rgb: tuple[int, int, int]) -> bool:
    return bool(np.abs(sink.colors[feed] - np.array(rgb)).max() < COLOR_TOLERANCE)


async def test_a_publisher_that_leaves_or_vanishes_is_unpublished_and_gone(
    server: RoomServer, sink: CountingSink, recorder: LoopbackConnector
) -> None:
    alice = await join(server.url, "Alice")
    bob = await join(server.url, "Bob")
    events = EventLog(recorder)
    # Dave is a separate process, killed below without any goodbye.
    dave = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPERS),
        "participant",
        server.url,
        "Dave",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        for participant in (alice, bob):
            await participant.publish(TrackKind.CAMERA, camera(GREEN))
            await _published(events, participant.id, TrackKind.CAMERA)
        assert dave.stdout is not None
        ready = await asyncio.wait_for(dave.stdout.readline(), EVENT_TIMEOUT_S)
        dave_id = ready.decode().split()[1]
        await _published(events, dave_id, TrackKind.CAMERA)
        await until(lambda: sink.frames[feed_id(dave_id, TrackKind.AUDIO)] > 0)

        # A goodbye: every track unpublished, then the participant left.
        left_at = time.monotonic()
        await bob.leave()
        bob_left = await events.wait_for(ParticipantLeft, lambda e: e.participant_id == bob.id)
        assert bob_left.reason == "left"
        assert time.monotonic() - left_at < VANISH_BOUND_S
        _assert_unpublished_before_left(events, bob.id)

        # The media connection closes with no word on the signalling: unpublished, still there.
        closed_at = time.monotonic()
        (peer,) = alice.peer_connections.values()
        await peer.close()
        lost = await events.wait_for(TrackUnpublished, lambda e: e.participant_id == alice.id)
        assert lost.reason == "media connection lost"
        assert time.monotonic() - closed_at < VANISH_BOUND_S
        assert not any(
            isinstance(e, ParticipantLeft) and e.participant_id == alice.id for e in events.events
        )

        # Killed: the socket closes with the process; its tracks go, then the participant.
        killed_at = time.monotonic()
        dave.send_signal(signal.SIGKILL)
        gone = await events.wait_for(ParticipantLeft, lambda e: e.participant_id == dave_id)
        assert gone.reason == "disconnected"
        assert time.monotonic() - killed_at < VANISH_BOUND_S
        _assert_unpublished_before_left(events, dave_id)
        dave_feed = feed_id(dave_id, TrackKind.CAMERA)
        await until(lambda: dave_feed in sink.ended)  # its drain ended: no task left behind
    finally:
        if dave.returncode is None:
            dave.kill()
        await dave.wait()
        await alice.leave()


def _assert_unpublished_before_left(events: EventLog, participant_id: str) -> None:
    mine = [e for e in events.events if getattr(e, "participant_id", None) == participant_id]
    left_index = next(i for i, e in enumerate(mine) if isinstance(e, ParticipantLeft))
    published = {e.kind for e in mine[:left_index] if isinstance(e, TrackPublished)}
    unpublished = {e.kind for e in mine[:left_index] if isinstance(e, TrackUnpublished)}
    assert published and published == unpublished
