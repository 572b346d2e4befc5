"""The hidden recorder in a real Janus VideoRoom (Debian's janus, the project's configuration).

Publishers are the project's synthetic participants (a clapper, palette-coloured cameras with a
tone each) sending over real WebRTC to Janus; the Janus connector subscribes to all of them in
one multistream subscription. What it receives is checked by content: frames counted per feed,
each camera's colour is its publisher's, sizes are what was sent. The room's life is played
out: late joins, leaves, a screen share started and stopped (a renegotiation), an m-line freed
and reused for another publisher, Janus restarted under the recorder, the room destroyed. The
recorder never shows up in the room's participant list.

Everything runs in a sealed network (tests/janus_helpers.py). Rates are checked with a wide
margin: two shared cores also run every publisher's encoder.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from janus_helpers import FAST, ColourSink, new_room_id, publishing, room_config
from live_helpers import LIVE_CAMERA, tone_participant
from test_room_helpers import EventLog, until

from recorder.client.janus import create_room, destroy_room, list_participants
from recorder.demo import screen_track
from recorder.errors import JoinError
from recorder.rooms.base import (
    ParticipantJoined,
    ParticipantLeft,
    RoomEnded,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
    feed_id,
)
from recorder.rooms.janus import JanusConnector
from recorder.testing.clapper import LUMA_DARK, clapper_participant
from recorder.testing.janus import JanusServer
from recorder.testing.sources import VideoFormat

ALICE, BOB, CAROL = 1, 2, 3  # palette indexes
MEASURE_S = 1.5
MIN_VIDEO_FPS = 0.5 * LIVE_CAMERA.fps  # 30 fps sent; two loaded cores still pass
MIN_AUDIO_FPS = 0.5 * 50  # 20 ms Opus frames
SCREEN = VideoFormat(640, 400, 10)  # a small slide: cheap to encode on two cores
# White-ish: the synthetic screen is a white slide (a title bar and text are a small part).
SCREEN_MIN_LUMA_RGB = 200.0
EVENT_TIMEOUT_S = 15.0


async def _published(events: EventLog, participant_id: str, kind: TrackKind) -> TrackPublished:
    event = await events.wait_for(
        TrackPublished,
        lambda e: e.participant_id == participant_id and e.kind is kind,
        EVENT_TIMEOUT_S,
    )
    assert isinstance(event, TrackPublished)
    return event


async def _unpublished(events: EventLog, participant_id: str, kind: TrackKind) -> None:
    await events.wait_for(
        TrackUnpublished,
        lambda e: e.participant_id == participant_id and e.kind is kind,
        EVENT_TIMEOUT_S,
    )


async def test_the_hidden_recorder_receives_every_publisher(janus: JanusServer) -> None:
    room_id = new_room_id()
    await create_room(janus.ws_url, room_id)
    clapper = await publishing(janus, room_id, clapper_participant("Clapper", LIVE_CAMERA))
    alice = await publishing(janus, room_id, tone_participant(ALICE, "Alice"))
    bob = await publishing(janus, room_id, tone_participant(BOB, "Bob"))
    everyone = [clapper, alice, bob]
    sink = ColourSink()
    connector = JanusConnector(room_config(janus, room_id), sink, timings=FAST)
    try:
        await connector.join()
        events = EventLog(connector)
        joined = {}
        for _ in everyone:
            event = await events.wait_for(
                ParticipantJoined, lambda e: e.participant_id not in joined, EVENT_TIMEOUT_S
            )
            assert isinstance(event, ParticipantJoined)
            joined[event.participant_id] = event.name
        assert joined == {p.participant_id: p.name for p in everyone}
        for publisher in everyone:
            for kind in (TrackKind.AUDIO, TrackKind.CAMERA):
                await _published(events, publisher.participant_id, kind)

        kinds = (TrackKind.AUDIO, TrackKind.CAMERA)
        feeds = [feed_id(p.participant_id, k) for p in everyone for k in kinds]
        await until(lambda: all(sink.frames[f] > 0 for f in feeds), EVENT_TIMEOUT_S)
        since = time.monotonic()
        await until(lambda: time.monotonic() - since > MEASURE_S)
        for publisher in everyone:
            camera = feed_id(publisher.participant_id, TrackKind.CAMERA)
            audio = feed_id(publisher.participant_id, TrackKind.AUDIO)
            assert sink.rate_since(camera, since) > MIN_VIDEO_FPS, (camera, sink.frames)
            assert sink.rate_since(audio, since) > MIN_AUDIO_FPS, (audio, sink.frames)
            assert sink.sizes[camera] == (LIVE_CAMERA.width, LIVE_CAMERA.height)
        assert sink.palette_index(feed_id(alice.participant_id, TrackKind.CAMERA)) == ALICE
        assert sink.palette_index(feed_id(bob.participant_id, TrackKind.CAMERA)) == BOB
        clap_camera = feed_id(clapper.participant_id, TrackKind.CAMERA)
        await until(lambda: sink.colour(clap_camera)[0] < LUMA_DARK + 30, EVENT_TIMEOUT_S)

        # One subscription for everyone, and the recorder is nobody in the room.
        assert len(connector.subscribed_mids()) == 6
        listed = await list_participants(janus.ws_url, room_id)
        assert sorted(p["display"] for p in listed) == ["Alice", "Bob", "Clapper"]
        assert all(p["publisher"] for p in listed)
    finally:
        await connector.close()
        await asyncio.gather(*(p.leave() for p in everyone), return_exceptions=True)


async def test_the_recorder_follows_joins_leaves_and_screen_shares(janus: JanusServer) -> None:
    room_id = new_room_id()
    await create_room(janus.ws_url, room_id)
    alice = await publishing(janus, room_id, tone_participant(ALICE, "Alice"))
    bob = await publishing(janus, room_id, tone_participant(BOB, "Bob"))
    everyone = [alice, bob]
    sink = ColourSink()
    connector = JanusConnector(room_config(janus, room_id), sink, timings=FAST)
    try:
        await connector.join()
        events = EventLog(connector)
        for publisher in everyone:
            await _published(events, publisher.participant_id, TrackKind.CAMERA)
        bob_mids = {
            mid for mid, (pid, _) in connector.subscribed_mids().items()
            if pid == bob.participant_id
        }  # fmt: skip
        assert len(bob_mids) == 2

        # Alice shares a screen (a renegotiation adding a stream): a third feed of hers.
        await alice.start_screen_share(screen_track(ALICE + 1, SCREEN))
        await _published(events, alice.participant_id, TrackKind.SCREEN)
        screen = feed_id(alice.participant_id, TrackKind.SCREEN)
        await until(lambda: sink.frames[screen] > 3, EVENT_TIMEOUT_S)
        assert sink.sizes[screen] == (SCREEN.width, SCREEN.height)
        assert min(sink.colour(screen)) > SCREEN_MIN_LUMA_RGB
        await alice.stop_screen_share()
        await _unpublished(events, alice.participant_id, TrackKind.SCREEN)
        await until(lambda: screen in sink.ended, EVENT_TIMEOUT_S)

        # Bob leaves: his tracks end first, then he is gone.
        await bob.leave()
        await _unpublished(events, bob.participant_id, TrackKind.CAMERA)
        await _unpublished(events, bob.participant_id, TrackKind.AUDIO)
        left = await events.wait_for(
            ParticipantLeft, lambda e: e.participant_id == bob.participant_id, EVENT_TIMEOUT_S
        )
        order = [
            e for e in events.events
            if getattr(e, "participant_id", None) == bob.participant_id
            and isinstance(e, (TrackUnpublished, ParticipantLeft))
        ]  # fmt: skip
        assert order[-1] is left and len(order) == 3

        # Carol joins late: Janus reuses Bob's freed m-lines for her (a new SSRC on an old mid),
        # and her frames, not Bob's, come out of them.
        carol = await publishing(janus, room_id, tone_participant(CAROL, "Carol"))
        everyone.append(carol)
        joined = await events.wait_for(
            ParticipantJoined, lambda e: e.participant_id == carol.participant_id, EVENT_TIMEOUT_S
        )
        assert isinstance(joined, ParticipantJoined) and joined.name == "Carol"
        await _published(events, carol.participant_id, TrackKind.CAMERA)
        carol_camera = feed_id(carol.participant_id, TrackKind.CAMERA)
        carol_audio = feed_id(carol.participant_id, TrackKind.AUDIO)
        await until(lambda: sink.frames[carol_camera] > 10 and sink.frames[carol_audio] > 10)
        assert sink.palette_index(carol_camera) == CAROL
        carol_mids = {
            mid for mid, (pid, _) in connector.subscribed_mids().items()
            if pid == carol.participant_id
        }  # fmt: skip
        assert carol_mids == bob_mids, (carol_mids, bob_mids)
        alice_camera = feed_id(alice.participant_id, TrackKind.CAMERA)
        assert sink.palette_index(alice_camera) == ALICE

        # Alice stops publishing but stays: her tracks end, she does not leave.
        await alice.unpublish()
        await _unpublished(events, alice.participant_id, TrackKind.CAMERA)
        await _unpublished(events, alice.participant_id, TrackKind.AUDIO)
        await until(lambda: alice_camera in sink.ended, EVENT_TIMEOUT_S)
        listed = await list_participants(janus.ws_url, room_id)
        assert {p["display"]: p["publisher"] for p in listed} == {"Alice": False, "Carol": True}
        # Carol leaves after that: by the time the recorder says so, Alice has not left.
        await carol.leave()
        await events.wait_for(
            ParticipantLeft, lambda e: e.participant_id == carol.participant_id, EVENT_TIMEOUT_S
        )
        assert not any(
            isinstance(e, ParticipantLeft) and e.participant_id == alice.participant_id
            for e in events.events
        )
    finally:
        await connector.close()
        await asyncio.gather(*(p.leave() for p in everyone), return_exceptions=True)


async def test_the_recorder_survives_janus_restarting(janus: JanusServer) -> None:
    room_id = new_room_id()
    await create_room(janus.ws_url, room_id)
    alice = await publishing(janus, room_id, tone_participant(ALICE, "Alice"))
    bob = await publishing(janus, room_id, tone_participant(BOB, "Bob"))
    everyone = [alice, bob]
    sink = ColourSink()
    connector = JanusConnector(room_config(janus, room_id), sink, timings=FAST)
    try:
        await connector.join()
        events = EventLog(connector)
        for publisher in everyone:
            await _published(events, publisher.participant_id, TrackKind.CAMERA)
        first_session = connector.session_id
        cameras = [feed_id(p.participant_id, TrackKind.CAMERA) for p in everyone]
        await until(lambda: all(sink.frames[f] > 5 for f in cameras), EVENT_TIMEOUT_S)

        # Janus goes away: every track is unpublished (the tiles show placeholders), nobody leaves.
        janus.restart()
        for publisher in everyone:
            for kind in (TrackKind.AUDIO, TrackKind.CAMERA):
                await _unpublished(events, publisher.participant_id, kind)
        await until(lambda: all(f in sink.ended for f in cameras), EVENT_TIMEOUT_S)
        gap_frames = {f: sink.frames[f] for f in cameras}

        # It comes back empty; the application recreates the room and its clients rejoin with
        # their feed ids. The recorder finds them again on a new session.
        await create_room(janus.ws_url, room_id)
        for publisher in everyone:
            await publisher.reconnect()
        events.events.clear()
        for publisher in everyone:
            await _published(events, publisher.participant_id, TrackKind.CAMERA)
            await _published(events, publisher.participant_id, TrackKind.AUDIO)
        await until(lambda: all(sink.frames[f] > gap_frames[f] + 10 for f in cameras))
        assert connector.reconnects == 1 and connector.session_id != first_session
        assert sink.palette_index(cameras[0]) == ALICE
        assert sink.palette_index(cameras[1]) == BOB
        assert not any(isinstance(e, (ParticipantLeft, RoomEnded)) for e in events.events)
        listed = await list_participants(janus.ws_url, room_id)
        assert sorted(p["display"] for p in listed) == ["Alice", "Bob"]
    finally:
        await connector.close()
        await asyncio.gather(*(p.leave() for p in everyone), return_exceptions=True)


async def test_a_destroyed_room_ends_the_recording(janus: JanusServer) -> None:
    room_id = new_room_id()
    await create_room(janus.ws_url, room_id)
    alice = await publishing(janus, room_id, tone_participant(ALICE, "Alice"))
    sink = ColourSink()
    connector = JanusConnector(room_config(janus, room_id), sink, timings=FAST)
    try:
        await connector.join()
        events = EventLog(connector)
        await _published(events, alice.participant_id, TrackKind.CAMERA)
        await destroy_room(janus.ws_url, room_id)
        ended = await events.wait_for(RoomEnded, timeout_s=EVENT_TIMEOUT_S)
        assert isinstance(ended, RoomEnded) and "does not exist" in ended.reason
        # Its tracks were unpublished before the end.
        unpublished = [e for e in events.events if isinstance(e, TrackUnpublished)]
        assert {e.kind for e in unpublished} == {TrackKind.AUDIO, TrackKind.CAMERA}
        assert events.events.index(ended) > max(events.events.index(e) for e in unpublished)
    finally:
        await connector.close()
        await alice.leave()


async def test_joining_needs_the_room_its_pin_and_janus(janus: JanusServer) -> None:
    room_id = new_room_id()
    with pytest.raises(JoinError, match="does not exist"):
        await JanusConnector(room_config(janus, room_id), ColourSink(), timings=FAST).join()

    await create_room(janus.ws_url, room_id, pin="1234")
    alice = await publishing(janus, room_id, tone_participant(ALICE, "Alice"), pin="1234")
    try:
        wrong = JanusConnector(room_config(janus, room_id, pin="0000"), ColourSink(), timings=FAST)
        with pytest.raises(JoinError, match="refuses the recorder"):
            await wrong.join()
        sink = ColourSink()
        right = JanusConnector(room_config(janus, room_id, pin="1234"), sink, timings=FAST)
        await right.join()
        try:
            events = EventLog(right)
            await _published(events, alice.participant_id, TrackKind.CAMERA)
        finally:
            await right.close()
    finally:
        await alice.leave()

    janus.stop()
    with pytest.raises(JoinError, match="could not be reached"):
        await JanusConnector(room_config(janus, room_id), ColourSink(), timings=FAST).join()
