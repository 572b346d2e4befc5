"""The room connector interface: how a recording joins a room, whatever technology the room is.

A connector joins as a hidden, receive-only peer (it is never in anyone's participant list and
publishes nothing), reports what happens in the room as events, drains every track it accepts into
the recording's frame sink, and announces the recording's status to the room. The Recording only
ever talks to this interface, so a platform adds its own connector (see `recorder.rooms`) without
touching anything else.

Events are dataclasses on a bounded queue read with `RoomConnector.next_event()`. The policy when
the queue is full is backpressure, never a drop: the connector's signalling reader waits for space.
Events are a handful per participant action (media never goes through this queue: tracks are
drained by `TrackConsumer`s straight into the sink), so a full queue means the reader of events is
stuck, and losing a `ParticipantLeft` or `TrackUnpublished` would corrupt the roster for the rest
of the recording, which is worse than a late event.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from layouts.model import Size
from recorder.lifecycle import Status

if TYPE_CHECKING:  # annotations only: a worker imports aiortc with its connector, after the
    # media has started (start latency), not with these events
    import av
    from aiortc.mediastreams import MediaStreamTrack

ROOM_EVENT_QUEUE_SIZE = 256  # a few events per participant action; far more than a room makes

# A monotonic reading in seconds: `time.monotonic`, or the recording clock's `now` so that arrival
# times are on the media timeline's clock; tests inject their own.
MonotonicNow = Callable[[], float]


class TrackKind(StrEnum):
    """What a published track carries; a participant has at most one track of each kind."""

    AUDIO = "audio"
    CAMERA = "camera"
    SCREEN = "screen"  # a screen share: a second video track of the same participant

    @classmethod
    def parse(cls, value: object) -> TrackKind | None:
        """The kind named by `value`, or None for anything else (input from the network)."""
        try:
            return cls(value)
        except ValueError:
            return None

    @property
    def media_kind(self) -> str:
        """aiortc's kind of the track: `audio` or `video`."""
        return "audio" if self is TrackKind.AUDIO else "video"


def feed_id(participant_id: str, kind: TrackKind) -> str:
    """The id under which a participant's track is fed to the media timeline.

    Stable for the participant's whole presence, across unpublish and publish again, so the
    timeline and the roster can key their state on it.
    """
    return f"{participant_id}/{kind}"


def participant_of_feed(feed: str) -> str | None:
    """The participant id in a `feed_id`; None for an id not made by it.

    The timeline links one participant's feeds by it (one sender clock: `_Link` in
    `recorder/media/timeline.py`). A participant id may hold "/" itself; a kind never does.
    """
    participant_id, separator, kind = feed.rpartition("/")
    return participant_id if separator and TrackKind.parse(kind) is not None else None


class FrameSink(Protocol):
    """Where received frames go: the media timeline (`recorder/media/timeline.py`).

    Both calls are made on the event loop for every decoded frame and must not block: the sink
    keeps the latest video frame and a bounded audio buffer and counts what it drops.
    `arrival_s` is the connector's monotonic clock when the frame came out of the decoder.
    `end_feed` follows a feed's last frame (its track ended: the publisher left or its media
    connection closed); the same feed id may start again later (a publisher that reconnects).
    """

    def push_video(self, feed_id: str, frame: av.VideoFrame, arrival_s: float) -> None: ...

    def push_audio(self, feed_id: str, frame: av.AudioFrame, arrival_s: float) -> None: ...

    def end_feed(self, feed_id: str) -> None: ...


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    """A participant is present, with the state they joined with (also sent for those present
    when the connector joins)."""

    participant_id: str
    name: str
    muted: bool = False
    camera_on: bool = True
    pinned: bool = False
    at_s: float = field(kw_only=True)  # the connector's clock when it learned of it


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    """A participant is gone: left, disconnected or killed. Their tracks were unpublished first."""

    participant_id: str
    reason: str = "left"
    at_s: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class TrackPublished:
    """A participant's track is on and its media is reaching the recorder.

    `track` is already being drained into the sink under `feed_id` by the connector: never call
    its `recv()`. The same track may be published again after an unpublish.
    """

    participant_id: str
    kind: TrackKind
    track: MediaStreamTrack
    at_s: float = field(kw_only=True)

    @property
    def feed_id(self) -> str:
        return feed_id(self.participant_id, self.kind)


@dataclass(frozen=True, slots=True)
class TrackUnpublished:
    """A participant's track stopped: unpublished, screen share ended, media connection lost."""

    participant_id: str
    kind: TrackKind
    reason: str = "unpublished"
    at_s: float = field(kw_only=True)

    @property
    def feed_id(self) -> str:
        return feed_id(self.participant_id, self.kind)


@dataclass(frozen=True, slots=True)
class MuteChanged:
    """The participant's microphone was muted or unmuted (a muted participant sends no audio)."""

    participant_id: str
    muted: bool
    at_s: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class CameraChanged:
    """The participant's camera was turned off or on (off: the tile shows their avatar)."""

    participant_id: str
    on: bool
    at_s: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class PinChanged:
    """A participant was pinned or unpinned for the whole room."""

    participant_id: str
    pinned: bool
    at_s: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class RoomEnded:
    """The room is over (ended by a participant or its server, or its signalling was lost)."""

    reason: str
    at_s: float = field(kw_only=True)


RoomEvent = (
    ParticipantJoined
    | ParticipantLeft
    | TrackPublished
    | TrackUnpublished
    | MuteChanged
    | CameraChanged
    | PinChanged
    | RoomEnded
)


class ConnectorClosedError(ConnectionError):
    """`next_event()` after the connector was closed and every queued event was read."""


# --- the interface -------------------------------------------------------------------------------


class RoomConnector(abc.ABC):
    """One hidden, receive-only presence in one room, for one recording.

    Life: `await join()` (raises `recorder.errors.JoinError` when the room cannot be joined),
    then read `await next_event()` until `RoomEnded` or until the recording stops, announcing each
    status with `announce_status()`; `await close()` last (idempotent, bounded). Subclasses emit
    events with `_emit()` and drain every track they accept with a `TrackConsumer`.
    """

    def __init__(self, sink: FrameSink, *, clock: MonotonicNow = time.monotonic) -> None:
        self._sink = sink
        self._clock = clock
        self._events: asyncio.Queue[RoomEvent] = asyncio.Queue(maxsize=ROOM_EVENT_QUEUE_SIZE)
        self._events_closed = False
        self._wakeup: asyncio.Event = asyncio.Event()

    @abc.abstractmethod
    async def join(self) -> None:
        """Join the room hidden; the participants already present arrive as events."""

    @abc.abstractmethod
    async def announce_status(
        self, status: Status, *, recording_id: str, reason: dict[str, object] | None = None
    ) -> None:
        """Tell every participant the recording's status (CONTRACT.md §3).

        Best effort: a room that cannot be told is logged, never an error for the recording.
        """

    def prefer_video_size(self, video_feed_id: str, size: Size) -> None:
        """The layout now draws this video feed at `size` (called on the event loop when tiles
        change). A room that forwards several qualities of a track (simulcast) asks for the one
        that fills the tile; others ignore it."""
        return  # a room with one quality per track has nothing to choose

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave the room, stop draining, release every connection; idempotent and bounded."""

    async def next_event(self) -> RoomEvent:
        """The next room event, waiting for one; `ConnectorClosedError` once closed and read."""
        while True:
            if not self._events.empty():
                return self._events.get_nowait()
            if self._events_closed:
                raise ConnectorClosedError("the room connector is closed")
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _emit(self, event: RoomEvent) -> None:
        """Queue an event, waiting for space when full (backpressure: events are never dropped)."""
        if self._events_closed:
            return
        await self._events.put(event)
        self._wakeup.set()

    def _close_events(self) -> None:
        """No more events: readers get what is queued, then `ConnectorClosedError`."""
        self._events_closed = True
        self._wakeup.set()
