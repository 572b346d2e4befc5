"""The embedded room's signalling and control service, over real WebSockets on 127.0.0.1.

The control service launches a real process: the stand-in worker of test_room_helpers.py, which
reads the job on standard input, joins hidden with the loopback connector and announces statuses
as `recorder run` does. No media is published here (test_loopback_connector.py does that).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from test_room_helpers import EVENT_TIMEOUT_S, EventLog, until

from recorder.client import RecordingState, RoomParticipant, join
from recorder.embedded_room.channel import SignallingChannel
from recorder.embedded_room.protocol import DEFAULT_ROOM_ID, ErrorCode, RoomRequestError
from recorder.embedded_room.server import RoomServer
from recorder.errors import JoinError
from recorder.job import RoomConfig
from recorder.lifecycle import Status
from recorder.rooms import connector_for
from recorder.rooms.base import ParticipantJoined, RoomEnded
from recorder.rooms.loopback import LoopbackConnector

HELPERS = Path(__file__).with_name("test_room_helpers.py")
NORMAL_ORDER = [Status.STARTING, Status.STARTED, Status.STOPPING, Status.STOPPED]


class _NullSink:
    def push_video(self, feed_id: str, frame: object, arrival_s: float) -> None:
        pass

    def push_audio(self, feed_id: str, frame: object, arrival_s: float) -> None:
        pass

    def end_feed(self, feed_id: str) -> None:
        pass


def _read_job(path: Path) -> dict:
    return json.loads(path.read_text())


def _exists(path: Path) -> bool:
    return path.exists()


def _worker_command(report: Path, *extra: str) -> list[str]:
    return [sys.executable, str(HELPERS), "worker", str(report), *extra]


@pytest.fixture
def job_report(tmp_path: Path) -> Path:
    return tmp_path / "job-the-worker-got.json"


@pytest.fixture
async def server(job_report: Path):
    async with RoomServer(worker_command=_worker_command(job_report)) as room_server:
        yield room_server


def _recorder(server: RoomServer, token: str, room_id: str = DEFAULT_ROOM_ID) -> LoopbackConnector:
    room = RoomConfig(connector="loopback", url=server.url, room_id=room_id, token=token)
    connector = connector_for(room, _NullSink())
    assert isinstance(connector, LoopbackConnector)
    return connector


def _statuses(participant: RoomParticipant) -> list[RecordingState]:
    seen: list[RecordingState] = []
    participant.on_recording_state_changed = seen.append
    return seen


async def test_the_recorder_is_in_no_participant_list(server: RoomServer) -> None:
    alice = await join(server.url, "Alice")
    bob = await join(server.url, "Bob")
    connector = _recorder(server, server.issue_recorder_token(DEFAULT_ROOM_ID))
    await connector.join()
    carol = await join(server.url, "Carol")  # joins while the recorder is there
    events = EventLog(connector)
    try:
        everyone = {"Alice", "Bob", "Carol"}
        for participant in (alice, bob, carol):
            await until(lambda p=participant: {i.name for i in p.participants.values()} == everyone)
        assert set(server.participant_names(DEFAULT_ROOM_ID)) == everyone
        # The recorder learns of everyone, itself excluded.
        for name in everyone:
            await events.wait_for(ParticipantJoined, lambda e, n=name: e.name == n)
        assert connector.peer_id not in {e.participant_id for e in events.events}
        assert connector.peer_id not in alice.participants
    finally:
        await connector.close()
        for participant in (alice, bob, carol):
            await participant.leave()


@pytest.mark.parametrize("token_kind", ["wrong", "other room", "none"])
async def test_a_recorder_needs_a_token_of_its_room(server: RoomServer, token_kind: str) -> None:
    token = {
        "wrong": "not-a-token",
        "other room": server.issue_recorder_token("another-room"),
        "none": None,
    }[token_kind]
    room = RoomConfig(connector="loopback", url=server.url, room_id=DEFAULT_ROOM_ID, token=token)
    connector = connector_for(room, _NullSink())
    with pytest.raises(JoinError, match="refused the recorder"):
        await connector.join()
    assert server.participant_names(DEFAULT_ROOM_ID) == []


async def test_an_unreachable_room_is_a_join_error() -> None:
    async with RoomServer() as room_server:
        url = room_server.url  # a port that was free and is closed again
    room = RoomConfig(connector="loopback", url=url, room_id=DEFAULT_ROOM_ID, token="t")
    with pytest.raises(JoinError, match="could not be reached"):
        await connector_for(room, _NullSink()).join()


async def test_start_and_stop_launch_and_signal_the_worker_and_relay_statuses_in_order(
    server: RoomServer, job_report: Path
) -> None:
    alice = await join(server.url, "Alice")
    bob = await join(server.url, "Bob")
    seen_by = {"Alice": _statuses(alice), "Bob": _statuses(bob)}
    try:
        recording_id = await alice.start_recording(
            webhook_url="https://hooks.example.com/recordings",
            aws_dir_path="/team/standup/",
            config={"layout": {"type": "spotlight"}, "quality": "LOW"},
        )
        for seen in seen_by.values():
            await until(lambda s=seen: Status.STARTED in [c.status for c in s])
        # The worker got the job built from the call and the room's connector info.
        job = _read_job(job_report)
        assert job["recordingId"] == recording_id
        assert job["webhookUrl"] == "https://hooks.example.com/recordings"
        assert job["awsDirPath"] == "team/standup"
        assert job["config"]["layout"]["type"] == "SPOTLIGHT"
        assert job["config"]["quality"] == "low"
        assert job["room"]["connector"] == "loopback"
        assert job["room"]["url"] == server.url
        assert job["room"]["roomId"] == DEFAULT_ROOM_ID
        assert len(job["room"]["token"]) >= 16
        # The worker is in the room, hidden.
        assert sorted(server.participant_names(DEFAULT_ROOM_ID)) == ["Alice", "Bob"]
        assert {p.name for p in bob.participants.values()} == {"Alice", "Bob"}

        # A second start is refused to its caller and disturbs nothing.
        with pytest.raises(RoomRequestError) as refused:
            await bob.start_recording()
        assert refused.value.code == ErrorCode.START_RECORDING_FAILED
        assert recording_id in refused.value.message

        assert await bob.stop_recording() == recording_id
        for seen in seen_by.values():
            await until(lambda s=seen: bool(s) and s[-1].status.is_final)
            assert [c.status for c in seen] == NORMAL_ORDER
            assert {c.recording_id for c in seen} == {recording_id}
        assert alice.recording is not None and alice.recording.status is Status.STOPPED

        # Once it ran, a stop is refused: "already stopping" or "none running", same code.
        with pytest.raises(RoomRequestError) as refused:
            await alice.stop_recording()
        assert refused.value.code == ErrorCode.STOP_RECORDING_FAILED
        assert [c.status for c in seen_by["Alice"]] == NORMAL_ORDER
    finally:
        await alice.leave()
        await bob.leave()


async def test_a_stop_with_no_recording_is_refused(server: RoomServer, job_report: Path) -> None:
    alice = await join(server.url, "Alice")
    seen = _statuses(alice)
    try:
        with pytest.raises(RoomRequestError) as refused:
            await alice.stop_recording()
        assert refused.value.code == ErrorCode.STOP_RECORDING_FAILED
        assert "no recording is running" in refused.value.message
        assert seen == []
        assert not _exists(job_report)
    finally:
        await alice.leave()


async def test_an_invalid_call_is_refused_before_any_worker_starts(
    server: RoomServer, job_report: Path
) -> None:
    alice = await join(server.url, "Alice")
    try:
        with pytest.raises(RoomRequestError) as refused:
            await alice.start_recording(config={"quality": "ultra"})
        assert refused.value.code == ErrorCode.START_RECORDING_FAILED
        assert "config.quality" in refused.value.message
        with pytest.raises(RoomRequestError) as refused:
            await alice._request("startRecording", params={"room": {"connector": "janus"}})
        assert refused.value.code == ErrorCode.START_RECORDING_FAILED
        assert "'room'" in refused.value.message
        assert not _exists(job_report)
        # Nothing is running: a stop is refused as "none running".
        with pytest.raises(RoomRequestError, match="no recording is running"):
            await alice.stop_recording()
    finally:
        await alice.leave()


async def test_a_worker_that_dies_without_a_final_status_is_reported_failed(
    job_report: Path,
) -> None:
    async with RoomServer(worker_command=_worker_command(job_report, "crash")) as crashing:
        alice = await join(crashing.url, "Alice")
        seen = _statuses(alice)
        try:
            recording_id = await alice.start_recording()
            await until(lambda: bool(seen) and seen[-1].status.is_final)
            assert [c.status for c in seen] == [Status.STARTING, Status.STARTED, Status.FAILED]
            failure = seen[-1]
            assert failure.recording_id == recording_id
            assert failure.reason is not None and failure.reason["code"] == "WORKER_EXITED"
            assert "70" in failure.reason["message"]
            # The room is free again: the next stop is refused as "none running".
            await until(lambda: alice.recording is not None)
            with pytest.raises(RoomRequestError, match="no recording is running"):
                await alice.stop_recording()
        finally:
            await alice.leave()


async def test_a_worker_that_dies_before_any_status_is_reported_failed() -> None:
    # It reads its job and exits at once: no STARTING, so FAILED is the room's own verdict.
    silent = [sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(3)"]
    async with RoomServer(worker_command=silent) as room:
        alice = await join(room.url, "Alice")
        seen = _statuses(alice)
        try:
            recording_id = await alice.start_recording()
            await until(lambda: bool(seen))
            assert [c.status for c in seen] == [Status.FAILED]
            assert seen[0].recording_id == recording_id
            assert seen[0].reason is not None and seen[0].reason["code"] == "WORKER_EXITED"
        finally:
            await alice.leave()


async def test_statuses_out_of_order_are_not_relayed(server: RoomServer) -> None:
    alice = await join(server.url, "Alice")
    seen = _statuses(alice)
    connector = _recorder(server, server.issue_recorder_token(DEFAULT_ROOM_ID))
    await connector.join()
    try:
        await connector.announce_status(Status.STARTED, recording_id="r1")  # STARTING first
        await connector.announce_status(Status.STARTING, recording_id="r1")
        await connector.announce_status(Status.STARTING, recording_id="r1")  # twice
        await connector.announce_status(Status.STOPPED, recording_id="r1")  # STOPPING skipped
        await connector.announce_status(Status.FAILED, recording_id="r1")
        await until(lambda: len(seen) == 2)
        assert [(c.status, c.recording_id) for c in seen] == [
            (Status.STARTING, "r1"),
            (Status.FAILED, "r1"),
        ]
    finally:
        await connector.close()
        await alice.leave()


async def test_ending_the_room_reaches_everyone(server: RoomServer) -> None:
    alice = await join(server.url, "Alice")
    bob = await join(server.url, "Bob")
    connector = _recorder(server, server.issue_recorder_token(DEFAULT_ROOM_ID))
    await connector.join()
    try:
        await alice.end_room()
        ended = await EventLog(connector).wait_for(RoomEnded)
        assert "Alice" in ended.reason
        await asyncio.wait_for(bob.room_ended.wait(), EVENT_TIMEOUT_S)
        assert server.participant_names(DEFAULT_ROOM_ID) == []
    finally:
        await connector.close()
        await alice.leave()
        await bob.leave()


async def test_requests_the_room_refuses(server: RoomServer) -> None:
    async def ignore(_message: object = None) -> None:
        pass

    raw = await SignallingChannel.connect(
        server.url, on_event=ignore, on_disconnect=ignore, name="raw client"
    )
    alice = await join(server.url, "Alice")
    try:

        async def code_of(message_type: str, **fields: object) -> str:
            with pytest.raises(RoomRequestError) as refused:
                await raw.request(message_type, **fields)
            return refused.value.code

        assert await code_of("publish", kind="camera") == ErrorCode.NOT_JOINED
        assert await code_of("join", role="participant", roomId="r", name="") == (
            ErrorCode.INVALID_REQUEST
        )
        assert await code_of("join", role="judge", roomId="r", name="x") == (
            ErrorCode.INVALID_REQUEST
        )
        await raw.request("join", role="participant", roomId=DEFAULT_ROOM_ID, name="Raw")
        assert await code_of("join", role="participant", roomId="r", name="x") == (
            ErrorCode.ALREADY_JOINED
        )
        assert await code_of("publish", kind="hologram") == ErrorCode.INVALID_REQUEST
        assert await code_of("pin", participantId="p999") == ErrorCode.UNKNOWN_PEER
        assert await code_of("offer", to="r999", sdp="v=0\r\n", tracks={}) == (
            ErrorCode.UNKNOWN_PEER
        )
        assert await code_of("recordingStatus", status="RECORDING_STARTED") == (
            ErrorCode.NOT_ALLOWED
        )
        assert await code_of("teleport") == ErrorCode.INVALID_REQUEST
        # Pins are room-wide and announced to everyone.
        await raw.request("pin", participantId=alice.id)
        await until(lambda: alice.participants[alice.id].pinned)
    finally:
        await raw.close()
        await alice.leave()


async def test_closing_a_channel_lets_the_closers_cancellation_through(server: RoomServer) -> None:
    """`close()` waits (bounded) for its reader and dispatcher; a task cancelled while it waits
    must end cancelled, not carry on as if the close had returned (its owner is stopping it)."""
    entered, told_to_stop, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def stubborn(_message: object = None) -> None:  # finishes what it does before going
        entered.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            told_to_stop.set()
            await release.wait()

    async def ignore(_message: object = None) -> None:
        pass

    raw = await SignallingChannel.connect(
        server.url, on_event=stubborn, on_disconnect=ignore, name="raw client"
    )
    await raw.request("join", role="participant", roomId=DEFAULT_ROOM_ID, name="Raw")
    alice = await join(server.url, "Alice")  # an event for Raw: its handler holds on
    try:
        await asyncio.wait_for(entered.wait(), EVENT_TIMEOUT_S)
        closer = asyncio.create_task(raw.close())
        # close() cancelled its dispatcher (running this handler) and now waits for it.
        await asyncio.wait_for(told_to_stop.wait(), EVENT_TIMEOUT_S)
        assert not closer.done()
        closer.cancel()
        done, _ = await asyncio.wait({closer}, timeout=EVENT_TIMEOUT_S)
        assert closer in done and closer.cancelled()
    finally:
        release.set()
        await alice.leave()
        await raw.close()
