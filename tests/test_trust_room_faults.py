"""Faults of the room around a running recording: signalling lost and regained (or not), the room
ending, everyone gone and one back.

The signalling connection is cut by a TCP relay on 127.0.0.1 in front of the room's WebSocket
port; the room itself goes on. The relay can also refuse new connections for a while (a room
server that cannot be reached), so a test decides when the recorder may get back in.

* **Dropped and regained** (the real worker): the loopback connector rejoins, hidden, as the same
  recording; the participant's feeds come back under the same ids, so the roster keeps her
  present throughout; the file holds her picture and tone after the rejoin, and the hole in her
  tone around the drop is bounded (`MEDIA_GAP_BOUND_S`).
* **Who left and came during the gap** (the connector, with a counting sink): reported as left
  and joined once the rejoin's participant list arrives; a mute made in the gap is reported then.
* **Never regained**: the room counts as ended when the reconnect window runs out (a window of
  `WINDOW_S`, given as the connector's parameter, through a `Recording` in this process), not
  before, and the recording stops with `room-ended`.
* **A room that really ends** ends the recording at once, whatever the window: when it says so,
  and when it ended while the recorder was away (the rejoin is refused).
* **Closing while rejoining** cancels the rejoin at once and leaves no task behind.
* **Every participant leaves and one comes back before `emptyRoomTimeoutSec`**: the recording
  goes on; the timeout counts again from the last leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from live_helpers import (
    camera_feed,
    file_time,
    frames_at,
    grid,
    join_publishing,
    seen_in,
    tone_amplitude,
    tone_participant,
    views,
)
from test_room_helpers import CountingSink, EventLog, camera, microphone, until
from worker_helpers import (
    STARTED_TIMEOUT_S,
    WorkerProcess,
    reap_workers,  # noqa: F401 - autouse fixture
    room_job,
    worker_env,
)

from recorder.client import RoomParticipant, join
from recorder.embedded_room.protocol import DEFAULT_ROOM_ID
from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode
from recorder.inspect import probe, read_audio
from recorder.job import RoomConfig, validate_job
from recorder.lifecycle import Status, Transition
from recorder.media.timeline import PLAYOUT_DELAY_S, VIDEO_STALE_AFTER_S
from recorder.presets import PRESETS, Quality
from recorder.recording import Recording, RecordingOptions
from recorder.rooms.base import (
    ConnectorClosedError,
    FrameSink,
    MonotonicNow,
    MuteChanged,
    ParticipantJoined,
    ParticipantLeft,
    RoomConnector,
    RoomEnded,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
    feed_id,
)
from recorder.rooms.loopback import LEFT_DURING_GAP, LoopbackConnector
from recorder.storage.from_env import OUTPUT_DIR_ENV_VAR
from recorder.testing.audio import participant_tone_hz

STARTED_LOG = "RECORDING_STARTED"
REJOINED_LOG = re.compile(r"rejoined .* hidden as \S+, ([0-9.]+) s after the signalling was lost")
RELAY_CLOSE_TIMEOUT_S = 2.0
CLOSE_WITHIN_S = 5.0  # the worker's own bound on closing a connector (CONNECTOR_CLOSE_TIMEOUT_S)
# A stop that follows a drop or a timeout: the next tick and the closing of a small file.
STOP_WITHIN_S = 5.0
# The first rejoin is tried at once: the room answers in milliseconds on 127.0.0.1; the bound is
# for two shared, loaded cores.
REJOIN_WITHIN_S = 3.0
# Signalling lost -> the participant's tone back in the file: the rejoin, the participant's new
# offer, ICE, DTLS and the first decoded frames (about 0.2 s here, see docs/reliability.md), with
# room for two shared, loaded cores.
MEDIA_GAP_BOUND_S = 4.0
WINDOW_S = 1.5  # the reconnect window of the test that never gets back in (30 s by default)
FINISHED_TIMEOUT_S = 40.0
QUALITY = Quality.LOW
CANVAS = PRESETS[QUALITY].landscape
EVE = 1  # palette index: her camera's colour and her tone
RECORD_BEFORE_CUT_S = 1.5
# A last picture held from before the drop is replaced by a placeholder this long after the drop:
# a picture of hers after that is live.
HELD_PICTURE_GONE_S = VIDEO_STALE_AFTER_S + PLAYOUT_DELAY_S
# Recorded once her media is connected again: past that point, plus a second and a half to look at.
RECORD_AFTER_REJOIN_S = HELD_PICTURE_GONE_S + 1.5
TONE_WINDOW_S = 0.02  # the tone is measured over windows this long (9 periods of 450 Hz)
AUDIBLE_TONE = 0.03  # her tone's amplitude is ~0.18 when present, 0 in a hole
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)
COLOUR_TOLERANCE = 25.0  # VP8 and YUV420 move a solid colour by a few levels


class CuttableRelay:
    """A TCP relay on 127.0.0.1 in front of the room's WebSocket port, whose connections the
    test can cut at once (a dropped signalling connection, the room server untouched), and which
    can refuse new ones for a while (`refusing`: accepted and reset at once, the room out of
    reach)."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.upstream_port = int(urlsplit(upstream_url).port or 0)
        self.port = 0
        self.refusing = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The room's URL through the relay."""
        return self.upstream_url.replace(f":{self.upstream_port}/", f":{self.port}/")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
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


async def _keep_recording(worker: WorkerProcess, seconds: float) -> None:
    """Let the worker record for `seconds` (inherent: live media takes its time); fails at once
    if it exits on its own meanwhile."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert worker.process.returncode is None, worker.stderr
        await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))


def _tone_hole(
    samples: np.ndarray, start_s: float, rate: int, hz: float, span: tuple[float, float]
) -> tuple[float, float]:
    """The longest stretch of `span` (file time) where the tone is not heard: (start, end).

    A handover faster than a window leaves no hole at all: (span start, span start).
    """
    edges = np.arange(span[0], span[1] - TONE_WINDOW_S, TONE_WINDOW_S)
    heard = [
        tone_amplitude(samples, start_s, rate, hz, (t, t + TONE_WINDOW_S)) > AUDIBLE_TONE
        for t in edges
    ]
    best, run_from = (0, 0), None
    for i, on in enumerate([*heard, True]):
        if not on and run_from is None:
            run_from = i
        elif on and run_from is not None:
            best = max(best, (run_from, i), key=lambda run: run[1] - run[0])
            run_from = None
    return span[0] + best[0] * TONE_WINDOW_S, span[0] + best[1] * TONE_WINDOW_S


def _connected_to_another(participant: RoomParticipant, recorder_id: str) -> bool:
    """Whether the participant's media goes to a recorder other than `recorder_id` now."""
    return any(
        other != recorder_id and peer.connectionState == "connected"
        for other, peer in participant.peer_connections.items()
    )


async def test_a_dropped_signalling_connection_is_rejoined_and_the_recording_goes_on(
    tmp_path: Path,
) -> None:
    async with RoomServer() as server:
        eve = await join_publishing(server.url, tone_participant(EVE, "Eve"))
        relay = CuttableRelay(server.url)
        await relay.start()
        try:
            job = room_job(
                server,
                config={"quality": str(QUALITY), "layout": {"type": "GRID"}},
                limits={"emptyRoomTimeoutSec": 0},
            )
            job["room"]["url"] = relay.url
            worker = await WorkerProcess.launch(job, worker_env(tmp_path))
            await worker.wait_for_log(STARTED_LOG)
            await until(lambda: len(eve.peer_connections) == 1)
            (recorder_before,) = eve.peer_connections
            await _keep_recording(worker, RECORD_BEFORE_CUT_S)

            cut_wall = time.time()
            await relay.cut()
            await worker.wait_for_log("rejoined", REJOIN_WITHIN_S)
            # Back in as a new hidden peer: the room lists Eve alone, Eve's media goes to it.
            await until(lambda: _connected_to_another(eve, recorder_before))
            assert server.participant_names(DEFAULT_ROOM_ID) == ["Eve"]
            assert [p.name for p in eve.participants.values()] == ["Eve"]
            await _keep_recording(worker, RECORD_AFTER_REJOIN_S)
            worker.signal(signal.SIGTERM)
            result = await worker.finish()
        finally:
            await relay.close()
            await eve.leave()
    assert result.returncode == ExitCode.OK, result.stderr
    match = REJOINED_LOG.search(result.stderr)
    assert match is not None, result.stderr
    signalling_gap_s = float(match.group(1))
    assert signalling_gap_s < REJOIN_WITHIN_S
    manifest = _manifest(tmp_path)
    assert manifest["stopReason"] == "signal"
    # Eve never left: one presence from start to end, her feeds kept their ids.
    (eve_entry,) = [p for p in manifest["participants"] if p["name"] == "Eve"]
    assert len(eve_entry["present"]) == 1, eve_entry

    (media,) = (tmp_path / "out").rglob("*.mp4")
    report = probe(media)
    assert report.damage is None and report.video is not None
    assert report.video.duration_s == pytest.approx(manifest["durationS"], abs=0.2)

    # The hole in her tone: from the drop to her media back over the new connection.
    samples, start_s, rate = read_audio(media)
    cut_s = file_time(manifest, cut_wall)
    hz = participant_tone_hz(EVE)
    end_s = manifest["durationS"] - 0.3  # the last frames may be cut by the stop
    silent_from, heard_again = _tone_hole(samples, start_s, rate, hz, (cut_s - 0.5, end_s))
    assert heard_again - silent_from < MEDIA_GAP_BOUND_S, (cut_s, silent_from, heard_again)
    assert heard_again < cut_s + MEDIA_GAP_BOUND_S, (cut_s, silent_from, heard_again)
    # After it, her tone and her live picture are in the file to the end.
    assert tone_amplitude(samples, start_s, rate, hz, (heard_again, end_s)) > AUDIBLE_TONE
    tile = grid(CANVAS).tiles(views([camera_feed(eve.id)]))[camera_feed(eve.id)]
    live_from = max(cut_s + HELD_PICTURE_GONE_S, heard_again) + 0.1
    times = [float(t) for t in np.arange(live_from, end_s, 0.25)]
    assert times, (live_from, end_s)
    frames = frames_at(media, times)
    assert {t: seen_in(frames[t], tile) for t in times} == dict.fromkeys(times, EVE)


async def test_who_left_or_joined_while_the_signalling_was_down_is_reported_on_rejoining() -> None:
    async with RoomServer() as server:
        relay = CuttableRelay(server.url)
        await relay.start()
        token = server.issue_recorder_token(DEFAULT_ROOM_ID)
        room = RoomConfig(connector="loopback", url=relay.url, room_id=DEFAULT_ROOM_ID, token=token)
        sink = CountingSink()
        connector = LoopbackConnector(room, sink)
        alice = await join(server.url, "Alice")
        bob = await join(server.url, "Bob")
        carol = None
        try:
            await alice.publish(TrackKind.CAMERA, camera(RED))
            await alice.publish(TrackKind.AUDIO, microphone(440.0))
            await bob.publish(TrackKind.CAMERA, camera(GREEN))
            await connector.join()
            events = EventLog(connector)
            alice_camera = feed_id(alice.id, TrackKind.CAMERA)
            for feed in (alice_camera, feed_id(bob.id, TrackKind.CAMERA)):
                await events.wait_for(TrackPublished, lambda e, feed=feed: e.feed_id == feed)
            await until(lambda: sink.frames[alice_camera] > 0)
            first_peer = connector.peer_id

            relay.refusing = True  # out of reach until the room has changed
            cut_at = time.monotonic()  # the connector's clock
            await relay.cut()
            await until(lambda: connector.reconnecting)
            await bob.leave()
            carol = await join(server.url, "Carol")
            await carol.publish(TrackKind.CAMERA, camera(BLUE))
            await alice.mute()
            relay.refusing = False

            bob_left = await events.wait_for(ParticipantLeft, lambda e: e.participant_id == bob.id)
            assert bob_left.reason == LEFT_DURING_GAP
            bob_events = [e for e in events.events if getattr(e, "participant_id", "") == bob.id]
            assert isinstance(bob_events[-2], TrackUnpublished)  # tracks first, then the leave
            await events.wait_for(ParticipantJoined, lambda e: e.participant_id == carol.id)
            muted = await events.wait_for(MuteChanged, lambda e: e.participant_id == alice.id)
            assert muted.muted is True
            # Alice's old media connection ended; her camera comes back under the same feed.
            lost = await events.wait_for(TrackUnpublished, lambda e: e.feed_id == alice_camera)
            assert lost.reason == "media connection lost" and lost.at_s > cut_at
            again = await events.wait_for(
                TrackPublished, lambda e: e.feed_id == alice_camera and e.at_s > cut_at
            )
            assert events.events.index(lost) < events.events.index(again)
            await events.wait_for(TrackPublished, lambda e: e.participant_id == carol.id)
            await until(lambda: sink.arrivals[alice_camera][-1] > again.at_s)  # new media
            await until(lambda: sink.frames[feed_id(carol.id, TrackKind.CAMERA)] > 0)
            assert np.abs(sink.colors[alice_camera] - np.array(RED)).max() < COLOUR_TOLERANCE
            assert not any(
                isinstance(e, ParticipantLeft) and e.participant_id == alice.id
                for e in events.events
            )
            # A new hidden peer: nobody lists it.
            assert connector.peer_id != first_peer and connector.reconnects == 1
            assert server.participant_names(DEFAULT_ROOM_ID) == ["Alice", "Carol"]
            assert {p.name for p in alice.participants.values()} == {"Alice", "Carol"}
        finally:
            await connector.close()
            for participant in (alice, bob, carol):
                if participant is not None:
                    await participant.leave()
            await relay.close()
    assert not connector.reconnecting


async def test_a_signalling_connection_that_never_comes_back_ends_the_recording_after_the_window(
    tmp_path: Path,
) -> None:
    reached: dict[Status, float] = {}

    def note(transition: Transition) -> None:
        reached.setdefault(transition.status, time.monotonic())

    def connector(room: RoomConfig, sink: FrameSink, clock: MonotonicNow) -> RoomConnector:
        return LoopbackConnector(room, sink, clock=clock, reconnect_window_s=WINDOW_S)

    async with RoomServer() as server:
        eve = await join(server.url, "Eve")
        relay = CuttableRelay(server.url)
        await relay.start()
        try:
            data = room_job(server, config={"quality": str(QUALITY)})
            data["room"]["url"] = relay.url
            data["limits"] = {"emptyRoomTimeoutSec": 0}
            options = RecordingOptions(
                spool_dir=tmp_path / "spool",
                environ={OUTPUT_DIR_ENV_VAR: str(tmp_path / "out")},
                connector_factory=connector,
            )
            recording = Recording(validate_job(data), options)
            recording.lifecycle.add_listener(note)
            running = asyncio.create_task(recording.run(), name="recording under test")
            await until(lambda: Status.STARTED in reached or running.done(), STARTED_TIMEOUT_S)
            assert Status.STARTED in reached, recording.summary()

            relay.refusing = True  # never back
            cut_at = time.monotonic()
            await relay.cut()
            code = await asyncio.wait_for(running, FINISHED_TIMEOUT_S)
        finally:
            await relay.close()
            await eve.leave()
    assert code == ExitCode.OK
    stopping_after_s = reached[Status.STOPPING] - cut_at
    assert WINDOW_S <= stopping_after_s < WINDOW_S + STOP_WITHIN_S
    manifest = _manifest(tmp_path)
    assert manifest["stopReason"] == "room-ended"
    (media,) = (tmp_path / "out").rglob("*.mp4")
    report = probe(media)
    assert report.damage is None and report.video is not None


async def test_a_room_that_ends_ends_the_recording_at_once_whatever_the_window() -> None:
    async with RoomServer() as server:
        relay = CuttableRelay(server.url)
        await relay.start()
        connectors: list[LoopbackConnector] = []
        try:
            for room_id in ("said-so", "ended-meanwhile"):
                token = server.issue_recorder_token(room_id)
                room = RoomConfig(connector="loopback", url=relay.url, room_id=room_id, token=token)
                connectors.append(LoopbackConnector(room, CountingSink()))  # 30 s window
                await connectors[-1].join()
            said_so, ended_meanwhile = connectors

            # The room says it ended: at once, no rejoining.
            ended_at = time.monotonic()
            await server.end_room("said-so", reason="ended by the host")
            ended = await EventLog(said_so).wait_for(RoomEnded)
            assert ended.reason == "ended by the host"
            assert time.monotonic() - ended_at < STOP_WITHIN_S
            assert not said_so.reconnecting

            # The room ended while the recorder was away: its rejoin is refused, and that ends it.
            relay.refusing = True
            await relay.cut()
            await until(lambda: ended_meanwhile.reconnecting)
            await server.end_room("ended-meanwhile", reason="ended by the host")
            back_at = time.monotonic()
            relay.refusing = False
            refused = await EventLog(ended_meanwhile).wait_for(RoomEnded)
            assert "refused" in refused.reason
            # Within the back-off's longest wait and one attempt: far inside the window.
            assert time.monotonic() - back_at < STOP_WITHIN_S
        finally:
            for connector in connectors:
                await connector.close()
            await relay.close()


async def test_closing_while_rejoining_cancels_the_rejoin_at_once() -> None:
    async with RoomServer() as server:
        relay = CuttableRelay(server.url)
        await relay.start()
        token = server.issue_recorder_token(DEFAULT_ROOM_ID)
        room = RoomConfig(connector="loopback", url=relay.url, room_id=DEFAULT_ROOM_ID, token=token)
        connector = LoopbackConnector(room, CountingSink())
        try:
            await connector.join()
            relay.refusing = True
            await relay.cut()
            await until(lambda: connector.reconnecting)
            closing_at = time.monotonic()
            await connector.close()
            assert time.monotonic() - closing_at < CLOSE_WITHIN_S
        finally:
            await connector.close()
            await relay.close()
    assert not connector.reconnecting
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("recorder: rejoin")]
    with pytest.raises(ConnectorClosedError):  # closed without a RoomEnded: the recorder left
        await asyncio.wait_for(connector.next_event(), 1.0)


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
