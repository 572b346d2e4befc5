"""The embedded room's signalling server: rooms, participants, the hidden recorders, relayed SDP.

The room is not an SFU and carries no media. Each publisher has one peer connection to each hidden
recorder, directly, on 127.0.0.1; the server only relays their SDP offer and answer and tells
everyone what happens (joins, leaves, tracks, mute, camera, pins, recording status). That keeps
the server a few hundred lines of plain asyncio, and the recorder receives each publisher exactly
as it would from an SFU: one stream per track, decoded by aiortc. Participants do not receive each
other's media: this room exists to be recorded, not to hold a call.

The recorder is never a participant: it joins with a recorder token, is left out of every
participant list, publishes nothing, and only participants are told it is there (`recorderJoined`)
so that they connect their media to it.

Backpressure: each connection has a bounded outbound queue drained by its own writer task, so one
slow client never delays the others; a client whose queue overflows is disconnected (and, being a
participant, announced as left) rather than buffered without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from recorder.embedded_room.control import (
    DEFAULT_WORKER_COMMAND,
    RecorderGrant,
    RecordingControl,
)
from recorder.embedded_room.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_NAME_CHARS,
    MAX_ROOM_ID_CHARS,
    SIGNALLING_PATH,
    ErrorCode,
    Role,
    RoomRequestError,
)
from recorder.rooms.base import TrackKind

log = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"  # the room is for one machine: it never listens elsewhere
OUTBOUND_QUEUE_SIZE = 512  # events per client; a client this far behind is dropped
HEARTBEAT_S = 5.0  # a client that stops answering pings is gone within about twice this
SEND_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0

Message = dict[str, Any]


class _Connection:
    """One WebSocket client and its writer task."""

    def __init__(self, socket: web.WebSocketResponse, number: int) -> None:
        self.socket = socket
        self.label = f"connection {number}"
        self.role: Role | None = None
        self.room: _Room | None = None
        self.peer_id: str | None = None
        self.grant: RecorderGrant | None = None
        # None is the close marker: what was queued before it is still sent.
        self._outbound: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=OUTBOUND_QUEUE_SIZE)
        self._writer = asyncio.create_task(self._write(), name=f"room server: {self.label} writer")

    def send(self, message: Message) -> None:
        """Queue a message for this client without waiting; a client too far behind is cut."""
        try:
            self._outbound.put_nowait(message)
        except asyncio.QueueFull:
            log.warning(
                "%s is %d messages behind: disconnecting it", self.label, OUTBOUND_QUEUE_SIZE
            )
            self._writer.cancel()  # the writer closes the socket; the reader then sees it gone

    async def _write(self) -> None:
        try:
            while True:
                message = await self._outbound.get()
                if message is None:
                    return
                await asyncio.wait_for(self.socket.send_str(json.dumps(message)), SEND_TIMEOUT_S)
        except (ConnectionError, TimeoutError, RuntimeError) as error:
            log.info("%s: sending failed (%s); closing", self.label, error)
        finally:
            with contextlib.suppress(ConnectionError, TimeoutError, RuntimeError):
                await asyncio.wait_for(self.socket.close(), CLOSE_TIMEOUT_S)

    async def close(self) -> None:
        """Send what is queued, then close the socket (bounded); idempotent."""
        try:
            self._outbound.put_nowait(None)
        except asyncio.QueueFull:
            self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._writer), 2 * CLOSE_TIMEOUT_S)
        self._writer.cancel()


@dataclass(slots=True)
class _Participant:
    id: str
    name: str
    connection: _Connection
    published: set[TrackKind] = field(default_factory=set)
    muted: bool = False
    camera_on: bool = True

    def describe(self, pinned: bool) -> Message:
        return {
            "id": self.id,
            "name": self.name,
            "tracks": sorted(self.published),
            "muted": self.muted,
            "cameraOn": self.camera_on,
            "pinned": pinned,
        }


class _Room:
    """One room's state; every change is broadcast by the server."""

    def __init__(self, room_id: str, control_for: Callable[[_Room], RecordingControl]) -> None:
        self.id = room_id
        self.control = control_for(self)
        self.participants: dict[str, _Participant] = {}
        self.recorders: dict[str, _Connection] = {}
        self.pinned: list[str] = []  # in pin order

    def describe_participants(self) -> list[Message]:
        return [p.describe(p.id in self.pinned) for p in self.participants.values()]

    def to_participants(self, message: Message) -> None:
        for participant in self.participants.values():
            participant.connection.send(message)

    def to_everyone(self, message: Message) -> None:
        self.to_participants(message)
        for recorder in self.recorders.values():
            recorder.send(message)


def _text(message: Message, key: str, *, max_chars: int) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise RoomRequestError(
            ErrorCode.INVALID_REQUEST,
            f"{key!r} must be a non-empty string of at most {max_chars} characters",
        )
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise RoomRequestError(ErrorCode.INVALID_REQUEST, f"{key!r} holds control characters")
    return value


def _sdp(message: Message) -> str:
    value = message.get("sdp")
    if not isinstance(value, str) or not value.startswith("v=0"):
        raise RoomRequestError(ErrorCode.INVALID_REQUEST, "'sdp' must be an SDP text")
    return value


def _track_kind(message: Message) -> TrackKind:
    try:
        return TrackKind(message.get("kind"))
    except ValueError:
        allowed = ", ".join(TrackKind)
        raise RoomRequestError(
            ErrorCode.INVALID_REQUEST, f"'kind' must be one of {allowed}"
        ) from None


class RoomServer:
    """The signalling server and control service, on 127.0.0.1.

    `async with RoomServer(port=0) as server:` listens on a free port; `server.url` is what
    clients and the loopback connector connect to. `worker_command` is what `startRecording`
    launches (the job on its standard input); tests give a stand-in worker.
    """

    def __init__(
        self, *, port: int = 0, worker_command: Sequence[str] = DEFAULT_WORKER_COMMAND
    ) -> None:
        self._port = port
        self._worker_command = tuple(worker_command)
        self._rooms: dict[str, _Room] = {}
        self._connections: set[_Connection] = set()
        self._numbers = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """`ws://127.0.0.1:PORT/ws`, once started."""
        if self._url is None:
            raise RuntimeError("the room server is not started")
        return self._url

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(SIGNALLING_PATH, self._serve)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK_HOST, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self._url = f"ws://{LOOPBACK_HOST}:{port}{SIGNALLING_PATH}"
        log.info("room server listening on %s", self._url)

    async def close(self) -> None:
        """End every room (participants and recorders are told), stop workers, stop listening."""
        for room_id in list(self._rooms):
            await self.end_room(room_id, reason="the room server is shutting down")
        for connection in list(self._connections):
            await connection.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RoomServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def issue_recorder_token(self, room_id: str) -> str:
        """A recorder credential for `room_id`, for a recorder joined by hand (tests, debugging);
        `startRecording` makes its own for each worker."""
        return self._room(room_id).control.issue_token()

    def participant_names(self, room_id: str) -> list[str]:
        """Who is listed in a room now (what every participant sees)."""
        room = self._rooms.get(room_id)
        return [p.name for p in room.participants.values()] if room else []

    async def end_room(self, room_id: str, *, reason: str) -> None:
        """Tell everyone the room ended, stop its recording, and forget it."""
        room = self._rooms.pop(room_id, None)
        if room is None:
            return
        log.info("room %s ended: %s", room_id, reason)
        room.to_everyone({"type": "roomEnded", "reason": reason})
        await room.control.close()
        for connection in [p.connection for p in room.participants.values()]:
            connection.room = None
        for connection in room.recorders.values():
            connection.room = None

    # --- connections -------------------------------------------------------------------------

    def _room(self, room_id: str) -> _Room:
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id, self._control_for)
        return room

    def _control_for(self, room: _Room) -> RecordingControl:
        # Statuses go to whoever is still connected, even after the room ended (a worker stopping
        # because the room ended still says STOPPING and STOPPED).
        return RecordingControl(
            room.id,
            signalling_url=self.url,
            worker_command=self._worker_command,
            on_status=lambda change: room.to_participants(
                {"type": "recordingStateChanged", **change}
            ),
        )

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
        await socket.prepare(request)
        connection = _Connection(socket, next(self._numbers))
        self._connections.add(connection)
        try:
            async for frame in socket:
                if frame.type is not WSMsgType.TEXT:
                    continue
                await self._receive(connection, frame.data)
        finally:
            self._connections.discard(connection)
            self._leave(connection, reason="disconnected")
            await connection.close()
        return socket

    async def _receive(self, connection: _Connection, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            connection.send(
                {"type": "error", "code": ErrorCode.INVALID_REQUEST, "message": "not a JSON object"}
            )
            return
        request_id = message.get("requestId")
        try:
            reply = await self._handle(connection, message)
        except RoomRequestError as error:
            connection.send(
                {
                    "type": "error",
                    "requestId": request_id,
                    "code": error.code,
                    "message": error.message,
                }
            )
            return
        if request_id is not None:
            connection.send({"type": "ok", "requestId": request_id, **reply})

    async def _handle(self, connection: _Connection, message: Message) -> Message:
        kind = message.get("type")
        if kind == "join":
            return self._join(connection, message)
        room = connection.room
        if room is None:
            raise RoomRequestError(ErrorCode.NOT_JOINED, f"join a room before {kind!r}")
        if connection.role is Role.RECORDER:
            return self._handle_recorder(connection, room, kind, message)
        participant = room.participants[connection.peer_id or ""]
        if kind == "startRecording":
            return {"recordingId": await room.control.start(message.get("params"))}
        if kind == "stopRecording":
            return {"recordingId": await room.control.stop()}
        if kind == "endRoom":
            await self.end_room(room.id, reason=f"ended by {participant.name}")
            return {}
        return self._handle_participant(participant, room, kind, message)

    def _join(self, connection: _Connection, message: Message) -> Message:
        if connection.room is not None:
            raise RoomRequestError(ErrorCode.ALREADY_JOINED, "this connection already joined")
        room_id = _text(message, "roomId", max_chars=MAX_ROOM_ID_CHARS)
        try:
            role = Role(message.get("role"))
        except ValueError:
            raise RoomRequestError(
                ErrorCode.INVALID_REQUEST, f"'role' must be one of {', '.join(Role)}"
            ) from None
        room = self._room(room_id)
        connection.role = role
        if role is Role.RECORDER:
            grant = room.control.grant_for(message.get("token"))
            if grant is None:
                raise RoomRequestError(
                    ErrorCode.AUTH_FAILED, f"the token is not a recorder token of room {room_id!r}"
                )
            grant.attach()
            connection.grant = grant
            connection.peer_id = f"r{next(self._numbers)}"
            connection.room = room
            room.recorders[connection.peer_id] = connection
            room.to_participants({"type": "recorderJoined", "recorderId": connection.peer_id})
            log.info("room %s: recorder %s joined (hidden)", room_id, connection.peer_id)
            return {"peerId": connection.peer_id, "participants": room.describe_participants()}
        name = _text(message, "name", max_chars=MAX_NAME_CHARS)
        participant = _Participant(f"p{next(self._numbers)}", name, connection)
        connection.peer_id = participant.id
        connection.room = room
        room.participants[participant.id] = participant
        room.to_everyone({"type": "participantJoined", "participant": participant.describe(False)})
        log.info("room %s: %s joined as %s", room_id, name, participant.id)
        return {
            "peerId": participant.id,
            "participants": room.describe_participants(),
            "recorders": list(room.recorders),
            "recording": room.control.current,
        }

    def _handle_participant(
        self, participant: _Participant, room: _Room, kind: object, message: Message
    ) -> Message:
        pid = participant.id
        if kind in ("publish", "unpublish"):
            track = _track_kind(message)
            if kind == "publish":
                participant.published.add(track)
            else:
                participant.published.discard(track)
            event = "trackPublished" if kind == "publish" else "trackUnpublished"
            room.to_everyone({"type": event, "participantId": pid, "kind": track})
        elif kind in ("mute", "unmute"):
            participant.muted = kind == "mute"
            room.to_everyone(
                {"type": "muteChanged", "participantId": pid, "muted": participant.muted}
            )
        elif kind in ("cameraOff", "cameraOn"):
            participant.camera_on = kind == "cameraOn"
            room.to_everyone(
                {"type": "cameraChanged", "participantId": pid, "on": participant.camera_on}
            )
        elif kind in ("pin", "unpin"):
            target = message.get("participantId")
            if target not in room.participants:
                raise RoomRequestError(ErrorCode.UNKNOWN_PEER, f"no participant {target!r} here")
            pinned = kind == "pin"
            if pinned and target not in room.pinned:
                room.pinned.append(target)
            elif not pinned and target in room.pinned:
                room.pinned.remove(target)
            else:
                return {}  # already so: nothing changes, nobody is told
            room.to_everyone({"type": "pinChanged", "participantId": target, "pinned": pinned})
        elif kind == "offer":
            recorder = room.recorders.get(message.get("to"))  # type: ignore[arg-type]
            if recorder is None:
                raise RoomRequestError(ErrorCode.UNKNOWN_PEER, "no such recorder in this room")
            recorder.send(
                {
                    "type": "offer",
                    "from": pid,
                    "sdp": _sdp(message),
                    "tracks": message.get("tracks"),
                }
            )
        elif kind == "leave":
            self._leave(participant.connection, reason="left")
        elif kind in ("answer", "recordingStatus"):
            raise RoomRequestError(ErrorCode.NOT_ALLOWED, f"only a recorder sends {kind!r}")
        else:
            raise RoomRequestError(ErrorCode.INVALID_REQUEST, f"unknown request {kind!r}")
        return {}

    def _handle_recorder(
        self, connection: _Connection, room: _Room, kind: object, message: Message
    ) -> Message:
        if kind == "answer":
            target = room.participants.get(message.get("to"))  # type: ignore[arg-type]
            if target is None:
                raise RoomRequestError(ErrorCode.UNKNOWN_PEER, "no such participant in this room")
            target.connection.send(
                {
                    "type": "answer",
                    "from": connection.peer_id,
                    "sdp": _sdp(message),
                }
            )
        elif kind == "recordingStatus":
            if connection.grant is None:  # not reached: recorders join with a grant
                raise RoomRequestError(ErrorCode.NOT_ALLOWED, "no recording to announce")
            room.control.relay_status(
                connection.grant,
                message.get("status"),
                recording_id=message.get("recordingId"),
                reason=message.get("reason"),
            )
        elif kind == "leave":
            self._leave(connection, reason="left")
        else:
            raise RoomRequestError(
                ErrorCode.NOT_ALLOWED, f"a recorder cannot send {kind!r}: it only receives"
            )
        return {}

    def _leave(self, connection: _Connection, *, reason: str) -> None:
        """Take a connection out of its room and tell the others (idempotent)."""
        room, peer_id = connection.room, connection.peer_id
        connection.room = None
        if room is None or peer_id is None:
            return
        if connection.role is Role.RECORDER:
            room.recorders.pop(peer_id, None)
            if connection.grant is not None:
                connection.grant.detach()
            room.to_participants({"type": "recorderLeft", "recorderId": peer_id})
            log.info("room %s: recorder %s left (%s)", room.id, peer_id, reason)
            return
        participant = room.participants.pop(peer_id, None)
        if participant is None:
            return
        if peer_id in room.pinned:
            room.pinned.remove(peer_id)
        room.to_everyone({"type": "participantLeft", "participantId": peer_id, "reason": reason})
        log.info("room %s: %s (%s) %s", room.id, participant.name, peer_id, reason)
