"""The embedded room's signalling vocabulary (docs/room-protocol.md is the readable version).

Every message is one JSON object in one WebSocket text frame, with a `type`. A message that
carries a `requestId` is a request: the server answers it with `{"type": "ok", "requestId", ...}`
or `{"type": "error", "requestId", "code", "message"}`. Everything else the server sends is an
event. The names here are shared by the server, the participant client and the loopback connector.
"""

from __future__ import annotations

from enum import StrEnum

SIGNALLING_PATH = "/ws"
DEFAULT_ROOM_ID = "default"
MAX_MESSAGE_BYTES = 256 * 1024  # an SDP with three m-lines is a few kB
MAX_NAME_CHARS = 64
MAX_ROOM_ID_CHARS = 128
REQUEST_TIMEOUT_S = 10.0  # a request the server does not answer within this is failed

CONNECTOR_NAME = "loopback"  # what a job's `room.connector` says for this room


class Role(StrEnum):
    """Who joins: participants are listed and publish; recorders are hidden and receive."""

    PARTICIPANT = "participant"
    RECORDER = "recorder"


class ErrorCode(StrEnum):
    """The `code` of an error reply; stable, for programs. The `message` is for people."""

    INVALID_REQUEST = "INVALID_REQUEST"  # malformed, unknown type, wrong field
    NOT_JOINED = "NOT_JOINED"  # anything but `join` before joining
    ALREADY_JOINED = "ALREADY_JOINED"
    AUTH_FAILED = "AUTH_FAILED"  # a recorder with a token that is not valid for the room
    NOT_ALLOWED = "NOT_ALLOWED"  # the role cannot do this (a recorder publishing, a participant
    # announcing a recording status)
    UNKNOWN_PEER = "UNKNOWN_PEER"  # pin, offer or answer for someone not in the room
    START_RECORDING_FAILED = "START_RECORDING_FAILED"
    STOP_RECORDING_FAILED = "STOP_RECORDING_FAILED"


class RoomRequestError(Exception):
    """The room refused a request: `code` is an `ErrorCode` value, `message` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
