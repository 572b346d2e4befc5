"""The recorder's connector for the embedded room (`recorder room`, docs/room-protocol.md).

It joins with its recorder token, so the room keeps it out of every participant list; each
publisher then offers it one peer connection carrying that publisher's audio, camera and screen
tracks (on 127.0.0.1 only), which it answers receive-only. Every received track is drained from
the moment it arrives by a `TrackConsumer` into the frame sink; `TrackPublished` is emitted while
the room says the track is published *and* its media connection is up, so an unpublish, a screen
share that stops, a publisher that leaves and a peer connection that dies all end in
`TrackUnpublished`, before `ParticipantLeft` where the participant is gone.

Everything the room says is handled in order on the signalling channel's dispatcher task; the
peer connection's state callbacks take the same lock, so a participant's state is never changed
by two handlers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from recorder.embedded_room.channel import SignallingChannel
from recorder.embedded_room.ice import LoopbackPeerConnection
from recorder.embedded_room.protocol import RoomRequestError
from recorder.errors import JoinError
from recorder.job import RoomConfig
from recorder.lifecycle import Status
from recorder.rooms.base import (
    CameraChanged,
    FrameSink,
    MonotonicNow,
    MuteChanged,
    ParticipantJoined,
    ParticipantLeft,
    PinChanged,
    RoomConnector,
    RoomEnded,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
    feed_id,
)
from recorder.rooms.consumer import FeedStats, TrackConsumer

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0
ANNOUNCE_TIMEOUT_S = 2.0  # a status the room does not acknowledge by then is logged and left
PEER_CLOSE_TIMEOUT_S = 2.0


@dataclass(slots=True)
class _Publisher:
    """What the connector knows of one participant."""

    id: str
    name: str
    published: set[TrackKind] = field(default_factory=set)  # what the room says
    announced: set[TrackKind] = field(default_factory=set)  # TrackPublished sent, not undone
    peer: LoopbackPeerConnection | None = None
    tracks: dict[TrackKind, MediaStreamTrack] = field(default_factory=dict)  # of `peer`
    consumers: list[TrackConsumer] = field(default_factory=list)  # of `peer`


class LoopbackConnector(RoomConnector):
    """A hidden, receive-only recorder in one embedded room."""

    def __init__(
        self, room: RoomConfig, sink: FrameSink, *, clock: MonotonicNow = time.monotonic
    ) -> None:
        super().__init__(sink, clock=clock)
        self._room = room
        self._room_id = str(room.room_id)
        self._channel: SignallingChannel | None = None
        self._peer_id: str | None = None
        self._publishers: dict[str, _Publisher] = {}
        self._stats: dict[str, FeedStats] = {}
        self._joined = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closing = False
        self._watchers: set[asyncio.Task[None]] = set()

    @property
    def peer_id(self) -> str | None:
        """The id the room gave this recorder (never listed to participants)."""
        return self._peer_id

    def feed_stats(self) -> dict[str, FeedStats]:
        """Frames received per feed since joining (for the run's summary line and tests)."""
        return dict(self._stats)

    # --- RoomConnector -----------------------------------------------------------------------

    async def join(self) -> None:
        token = self._room.token.get_secret_value() if self._room.token is not None else None
        where = f"room {self._room_id!r} at {self._room.url}"
        try:
            self._channel = await SignallingChannel.connect(
                self._room.url,
                on_event=self._on_message,
                on_disconnect=self._on_disconnect,
                name=f"recorder in room {self._room_id}",
                timeout_s=JOIN_TIMEOUT_S,
            )
            reply = await self._channel.request(
                "join", timeout_s=JOIN_TIMEOUT_S, role="recorder", roomId=self._room_id, token=token
            )
        except RoomRequestError as error:
            await self.close()
            raise JoinError(f"{where} refused the recorder: {error.message}") from None
        except (OSError, aiohttp.ClientError, TimeoutError) as error:
            await self.close()
            raise JoinError(
                f"{where} could not be reached: {error or type(error).__name__}"
            ) from None
        self._peer_id = str(reply.get("peerId"))
        for participant in reply.get("participants") or []:
            await self._participant_joined(participant)
        self._joined.set()
        log.info("joined %s hidden as %s", where, self._peer_id)

    async def announce_status(
        self, status: Status, *, recording_id: str, reason: dict[str, object] | None = None
    ) -> None:
        channel = self._channel
        if channel is None or not channel.connected:
            log.warning("recording %s is %s, but the room cannot be told", recording_id, status)
            return
        fields: dict[str, Any] = {"status": str(status), "recordingId": recording_id}
        if reason is not None:
            fields["reason"] = reason
        try:
            await channel.request("recordingStatus", timeout_s=ANNOUNCE_TIMEOUT_S, **fields)
        except (RoomRequestError, ConnectionError, TimeoutError) as error:
            log.warning("the room was not told recording %s is %s: %s", recording_id, status, error)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._channel is not None:
            await self._channel.close()
        for watcher in list(self._watchers):
            watcher.cancel()
        for publisher in list(self._publishers.values()):
            await self._drop_media(publisher, reason="the recorder left", emit=False)
        self._close_events()
        summary = ", ".join(f"{feed} {stats.frames}" for feed, stats in self._stats.items())
        log.info("left room %s; frames received: %s", self._room_id, summary or "none")

    # --- what the room says ------------------------------------------------------------------

    async def _on_message(self, message: dict[str, Any]) -> None:
        await self._joined.wait()  # the join reply's snapshot comes before any event
        kind = message.get("type")
        async with self._lock:
            if kind == "participantJoined":
                await self._participant_joined(message.get("participant") or {})
                return
            if kind == "roomEnded":
                await self._emit(RoomEnded(str(message.get("reason")), at_s=self._clock()))
                return
            publisher = self._publishers.get(
                str(message.get("participantId") or message.get("from"))
            )
            if publisher is None:
                log.debug("ignoring %s for a participant not in the room", kind)
                return
            await self._on_publisher_message(publisher, kind, message)

    async def _on_publisher_message(
        self, publisher: _Publisher, kind: object, message: dict[str, Any]
    ) -> None:
        now = self._clock()
        pid = publisher.id
        if kind == "offer":
            await self._answer(publisher, message)
        elif kind in ("trackPublished", "trackUnpublished"):
            track_kind = TrackKind.parse(message.get("kind"))
            if track_kind is None:
                return
            if kind == "trackPublished":
                publisher.published.add(track_kind)
            else:
                publisher.published.discard(track_kind)
            await self._sync_tracks(publisher, reason="unpublished")
        elif kind == "muteChanged":
            await self._emit(MuteChanged(pid, bool(message.get("muted")), at_s=now))
        elif kind == "cameraChanged":
            await self._emit(CameraChanged(pid, bool(message.get("on")), at_s=now))
        elif kind == "pinChanged":
            await self._emit(PinChanged(pid, bool(message.get("pinned")), at_s=now))
        elif kind == "participantLeft":
            reason = str(message.get("reason") or "left")
            publisher.published.clear()
            await self._drop_media(publisher, reason=f"participant {reason}")
            del self._publishers[pid]
            await self._emit(ParticipantLeft(pid, reason, at_s=self._clock()))

    async def _on_disconnect(self) -> None:
        if not self._closing:
            await self._emit(
                RoomEnded("the room's signalling connection was lost", at_s=self._clock())
            )

    async def _participant_joined(self, participant: dict[str, Any]) -> None:
        pid = str(participant.get("id"))
        if pid in self._publishers:
            return
        publisher = _Publisher(pid, str(participant.get("name")))
        publisher.published = {
            kind for value in participant.get("tracks") or [] if (kind := TrackKind.parse(value))
        }
        self._publishers[pid] = publisher
        await self._emit(
            ParticipantJoined(
                pid,
                publisher.name,
                muted=bool(participant.get("muted")),
                camera_on=bool(participant.get("cameraOn", True)),
                pinned=bool(participant.get("pinned")),
                at_s=self._clock(),
            )
        )

    # --- media -------------------------------------------------------------------------------

    async def _answer(self, publisher: _Publisher, message: dict[str, Any]) -> None:
        """Accept a publisher's offer on a new peer connection (it replaces any previous one)."""
        mids = message.get("tracks")
        if not isinstance(mids, dict):
            log.warning("offer from %s without its track map: ignored", publisher.id)
            return
        await self._drop_media(publisher, reason="reconnected")
        peer = LoopbackPeerConnection()
        publisher.peer = peer
        await peer.setRemoteDescription(RTCSessionDescription(sdp=message["sdp"], type="offer"))
        for transceiver in peer.getTransceivers():
            track_kind = TrackKind.parse(mids.get(transceiver.mid))
            if track_kind is None or track_kind.media_kind != transceiver.kind:
                continue
            transceiver.direction = "recvonly"
            track = transceiver.receiver.track
            publisher.tracks[track_kind] = track
            feed = feed_id(publisher.id, track_kind)
            stats = self._stats.setdefault(feed, FeedStats())
            consumer = TrackConsumer(track, feed, self._sink, clock=self._clock, stats=stats)
            consumer.start()
            publisher.consumers.append(consumer)
        peer.on("connectionstatechange", lambda: self._watch_peer(publisher, peer))
        await peer.setLocalDescription(await peer.createAnswer())
        channel = self._channel
        if channel is not None:
            await channel.request("answer", to=publisher.id, sdp=peer.localDescription.sdp)
        await self._sync_tracks(publisher, reason="unpublished")

    def _watch_peer(self, publisher: _Publisher, peer: LoopbackPeerConnection) -> None:
        if peer.connectionState not in ("failed", "closed") or self._closing:
            return
        task = asyncio.create_task(
            self._peer_lost(publisher, peer), name=f"recorder: peer of {publisher.id} lost"
        )
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _peer_lost(self, publisher: _Publisher, peer: LoopbackPeerConnection) -> None:
        async with self._lock:
            if publisher.peer is peer:
                log.info("media connection of %s is %s", publisher.id, peer.connectionState)
                await self._drop_media(publisher, reason="media connection lost")

    async def _drop_media(self, publisher: _Publisher, *, reason: str, emit: bool = True) -> None:
        """Close a publisher's peer connection and stop draining it."""
        peer, consumers = publisher.peer, publisher.consumers
        publisher.peer, publisher.consumers = None, []
        publisher.tracks.clear()
        if emit:
            await self._sync_tracks(publisher, reason=reason)
        if peer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.close(), PEER_CLOSE_TIMEOUT_S)
        for consumer in consumers:
            await consumer.stop()

    async def _sync_tracks(self, publisher: _Publisher, *, reason: str) -> None:
        """Emit what changed: a track is published while the room says so and its media is in."""
        now = self._clock()
        for kind in TrackKind:
            track = publisher.tracks.get(kind)
            live = kind in publisher.published and track is not None
            if live and kind not in publisher.announced:
                publisher.announced.add(kind)
                await self._emit(TrackPublished(publisher.id, kind, track, at_s=now))
            elif not live and kind in publisher.announced:
                publisher.announced.discard(kind)
                await self._emit(TrackUnpublished(publisher.id, kind, reason, at_s=now))
