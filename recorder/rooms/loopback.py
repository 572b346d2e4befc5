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

Reconnecting: when the signalling connection drops while the room goes on (a proxy or network
cut, the server dropping a client that fell behind), the participants stay and so do the media
connections, which do not go through the signalling (each participant closes its own when the
room tells it `recorderLeft`, which ends those tracks as `media connection lost`). One task,
owned by the connector, then rejoins with the same recorder token: a recorder token stays valid
for its recording's whole run, so the room lets the recorder back in hidden, under a new peer
id, and tells the participants `recorderJoined`, after which each offers its media again and the
same feed ids come back (`TrackPublished`). The rejoin's participant list is compared with what
the connector knew: who left during the gap leaves, who came joins, and a mute, camera or pin
that changed is reported then. Attempts back off (`RECONNECT_RETRY`) within
`RECONNECT_WINDOW_S`; only when that runs out is the room reported ended. A room that really
ended says so (`roomEnded`) and ends the recording at once; a room that refuses the rejoin (it
ended during the gap, and with it the recorder's token) ends it at once too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
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
from recorder.retry import RetryPolicy
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
# A cancelled rejoin ends within this: at its next step, or after closing a channel it had opened.
JOIN_CANCEL_TIMEOUT_S = 2.5
# How long a dropped signalling connection is retried before the room counts as ended. Long
# enough to ride out what drops a connection while the room goes on (a proxy or load balancer
# restarting, a network blip, the server cutting a client that fell behind: seconds), short
# enough that a room server that died without a word costs the recording at most this much of
# held pictures and silence at its end. A room that ends says so and ends the recording at once.
RECONNECT_WINDOW_S = 30.0
# The first attempt is made at once (a cut connection to a room that is up is back in ms); then
# 0.25 s doubling to 2 s, each drawn from the upper half of that bound (see
# `_backoff_jitter`), so the first tries are quick and a dead server is tried about 3 + window /
# 1.5 s times (about 23 in the default window). `attempts` is a second, safety bound: the window
# runs out first.
RECONNECT_RETRY = RetryPolicy(attempts=40, base_delay_s=0.25, max_delay_s=2.0)
RECONNECT_ATTEMPT_TIMEOUT_S = 5.0  # one connect-and-join; a server that answers does in ms
RECONNECT_LAST_ATTEMPT_S = 0.5  # the least an attempt is given, the last one at the window's end
LEFT_DURING_GAP = "left while the recorder was reconnecting"


def _backoff_jitter() -> float:
    """Equal jitter: half the bound plus up to the other half at random. Spreads the rejoins
    of many recorders of one room server (full jitter's spread) without draws near zero, which
    would make attempts, and so the load on a server that is struggling, unbounded."""
    return 0.5 + 0.5 * random.random()


@dataclass(slots=True)
class _Publisher:
    """What the connector knows of one participant."""

    id: str
    name: str
    published: set[TrackKind] = field(default_factory=set)  # what the room says
    announced: set[TrackKind] = field(default_factory=set)  # TrackPublished sent, not undone
    muted: bool = False  # as last reported (compared with the room's list after a rejoin)
    camera_on: bool = True
    pinned: bool = False
    peer: LoopbackPeerConnection | None = None
    tracks: dict[TrackKind, MediaStreamTrack] = field(default_factory=dict)  # of `peer`
    consumers: list[TrackConsumer] = field(default_factory=list)  # of `peer`


def _tracks_of(participant: dict[str, Any]) -> set[TrackKind]:
    return {kind for value in participant.get("tracks") or [] if (kind := TrackKind.parse(value))}


class LoopbackConnector(RoomConnector):
    """A hidden, receive-only recorder in one embedded room.

    `reconnect_window_s`: how long a dropped signalling connection is retried before the room is
    reported ended (`RECONNECT_WINDOW_S`; tests shorten it, 0 never retries).
    """

    def __init__(
        self,
        room: RoomConfig,
        sink: FrameSink,
        *,
        clock: MonotonicNow = time.monotonic,
        reconnect_window_s: float = RECONNECT_WINDOW_S,
    ) -> None:
        super().__init__(sink, clock=clock)
        if reconnect_window_s < 0:
            raise ValueError(f"reconnect_window_s must not be negative, not {reconnect_window_s}")
        self._room = room
        self._room_id = str(room.room_id)
        self._where = f"room {self._room_id!r} at {room.url}"
        self._reconnect_window_s = reconnect_window_s
        self._channel: SignallingChannel | None = None
        # Each connection attempt has a number; what an older channel still delivers is dropped.
        self._generation = 0
        self._peer_id: str | None = None
        self._publishers: dict[str, _Publisher] = {}
        self._stats: dict[str, FeedStats] = {}
        self._joined = asyncio.Event()  # set while joined on the current channel
        self._lock = asyncio.Lock()
        self._closing = False
        self._ended = False  # RoomEnded was emitted: nothing to reconnect to
        self._reconnector: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self.reconnects = 0
        self.last_gap_s: float | None = None  # signalling lost -> rejoined, the last time

    @property
    def peer_id(self) -> str | None:
        """The id the room gave this recorder (never listed to participants); a new one after
        each rejoin."""
        return self._peer_id

    @property
    def reconnecting(self) -> bool:
        """Whether the signalling connection is lost and being regained."""
        return self._reconnector is not None and not self._reconnector.done()

    def feed_stats(self) -> dict[str, FeedStats]:
        """Frames received per feed since joining (for the run's summary line and tests)."""
        return dict(self._stats)

    # --- RoomConnector -----------------------------------------------------------------------

    async def join(self) -> None:
        try:
            channel, reply = await self._connect_and_join(JOIN_TIMEOUT_S)
        except RoomRequestError as error:
            await self.close()
            raise JoinError(f"{self._where} refused the recorder: {error.message}") from None
        except (OSError, aiohttp.ClientError, TimeoutError, ConnectionError) as error:
            await self.close()
            raise JoinError(
                f"{self._where} could not be reached: {error or type(error).__name__}"
            ) from None
        self._channel = channel
        self._peer_id = str(reply.get("peerId"))
        for participant in reply.get("participants") or []:
            await self._participant_joined(participant)
        self._joined.set()
        log.info("joined %s hidden as %s", self._where, self._peer_id)
        if not channel.connected:  # dropped before it counted as joined: `_on_disconnect` let it be
            await self._lost()

    async def announce_status(
        self, status: Status, *, recording_id: str, reason: dict[str, object] | None = None
    ) -> None:
        if self.reconnecting:  # a status in the gap waits a little for the rejoin
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._joined.wait(), ANNOUNCE_TIMEOUT_S)
        channel = self._channel
        if channel is None or not channel.connected or not self._joined.is_set():
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
        reconnector = self._reconnector
        if reconnector is not None and reconnector is not asyncio.current_task():
            reconnector.cancel()
            _, pending = await asyncio.wait({reconnector}, timeout=JOIN_CANCEL_TIMEOUT_S)
            if pending:
                log.warning(
                    "%s: the rejoin did not stop within %g s", self._where, JOIN_CANCEL_TIMEOUT_S
                )
        if self._channel is not None:
            await self._channel.close()
        for watcher in list(self._watchers):
            watcher.cancel()
        for publisher in list(self._publishers.values()):
            await self._drop_media(publisher, reason="the recorder left", emit=False)
        self._close_events()
        summary = ", ".join(f"{feed} {stats.frames}" for feed, stats in self._stats.items())
        log.info(
            "left %s; %d reconnects; frames received: %s",
            self._where,
            self.reconnects,
            summary or "none",
        )

    # --- the signalling connection -----------------------------------------------------------

    async def _connect_and_join(self, timeout_s: float) -> tuple[SignallingChannel, dict[str, Any]]:
        """A new channel, joined as this recorder (hidden); closed again if the join fails."""
        self._generation += 1
        generation = self._generation

        async def on_event(message: dict[str, Any]) -> None:
            await self._on_message(generation, message)

        async def on_disconnect() -> None:
            await self._on_disconnect(generation)

        token = self._room.token.get_secret_value() if self._room.token is not None else None
        channel = await SignallingChannel.connect(
            self._room.url,
            on_event=on_event,
            on_disconnect=on_disconnect,
            name=f"recorder in room {self._room_id}",
            timeout_s=timeout_s,
        )
        try:
            reply = await channel.request(
                "join", timeout_s=timeout_s, role="recorder", roomId=self._room_id, token=token
            )
        except BaseException:
            await channel.close()
            raise
        return channel, reply

    async def _on_disconnect(self, generation: int) -> None:
        """A channel closed by itself (never called for `close()`): rejoin if it was the one
        joined. A channel that drops while joining is seen by whoever is joining on it."""
        if generation != self._generation or not self._joined.is_set() or self.reconnecting:
            return
        await self._lost()

    async def _lost(self) -> None:
        """The joined channel is gone: start rejoining (or end the room with no window)."""
        if self._closing or self._ended:
            return
        self._joined.clear()
        if self._reconnect_window_s <= 0:
            await self._end("the room's signalling connection was lost")
            return
        log.warning(
            "the signalling connection to %s was lost; rejoining for up to %g s",
            self._where,
            self._reconnect_window_s,
        )
        self._reconnector = asyncio.create_task(
            self._reconnect(), name=f"recorder: rejoin room {self._room_id}"
        )

    async def _reconnect(self) -> None:
        """Rejoin with back-off within the window; the room is ended when it runs out or the
        room refuses the recorder."""
        lost_s = time.monotonic()
        deadline_s = lost_s + self._reconnect_window_s
        old, self._channel = self._channel, None
        if old is not None:
            await old.close()  # its tasks are done or ending; this frees its HTTP session
        failures = 0
        # `close()` cancels this task, but a cancellation can be absorbed on the way (closing a
        # channel finishes its own clean-up): the loop also stops on `_closing`.
        while not self._closing:
            left_s = deadline_s - time.monotonic()
            attempt_s = min(RECONNECT_ATTEMPT_TIMEOUT_S, max(left_s, RECONNECT_LAST_ATTEMPT_S))
            try:
                channel, reply = await self._connect_and_join(attempt_s)
            except RoomRequestError as error:
                # The room answered and will not have the recorder: its recording is over.
                await self._end(f"the room refused the recorder's rejoin: {error.message}")
                return
            except (OSError, aiohttp.ClientError, TimeoutError, ConnectionError) as error:
                failures += 1
                log.info(
                    "rejoining %s failed (attempt %d): %s",
                    self._where,
                    failures,
                    error or type(error).__name__,
                )
            else:
                if self._closing:  # `close()` ran meanwhile and will not see this channel
                    await channel.close()
                    return
                self._channel, self._peer_id = channel, str(reply.get("peerId"))
                await self._rejoined(reply)
                # Nothing awaits from here to the return: a drop from now on reaches
                # `_on_disconnect` after this task is done, and starts a new rejoin.
                if channel.connected:
                    self.reconnects += 1
                    self.last_gap_s = time.monotonic() - lost_s
                    log.info(
                        "rejoined %s hidden as %s, %.2f s after the signalling was lost "
                        "(%d failed attempts)",
                        self._where,
                        self._peer_id,
                        self.last_gap_s,
                        failures,
                    )
                    return
                # It dropped again while the room's list was being taken in: go on trying.
                self._joined.clear()
                self._channel = None
                await channel.close()
                failures += 1
                log.info("the rejoined connection to %s dropped at once", self._where)
            left_s = deadline_s - time.monotonic()
            if left_s <= 0 or failures >= RECONNECT_RETRY.attempts:
                await self._end(
                    f"the room's signalling connection was lost and not regained within "
                    f"{self._reconnect_window_s:g} s"
                )
                return
            # The last wait ends at the window's end, for one last attempt there.
            await asyncio.sleep(min(RECONNECT_RETRY.delay_s(failures, _backoff_jitter), left_s))

    async def _rejoined(self, reply: dict[str, Any]) -> None:
        """Take the room's list as it is now: who left and came in the gap, what changed."""
        async with self._lock:
            now = self._clock()
            present = {str(p.get("id")): p for p in reply.get("participants") or []}
            for pid, publisher in list(self._publishers.items()):
                state = present.get(pid)
                if state is None:
                    await self._participant_left(publisher, LEFT_DURING_GAP)
                    continue
                publisher.published = _tracks_of(state)
                await self._sync_tracks(publisher, reason="unpublished")
                muted, camera_on = bool(state.get("muted")), bool(state.get("cameraOn", True))
                pinned = bool(state.get("pinned"))
                if muted != publisher.muted:
                    publisher.muted = muted
                    await self._emit(MuteChanged(pid, muted, at_s=now))
                if camera_on != publisher.camera_on:
                    publisher.camera_on = camera_on
                    await self._emit(CameraChanged(pid, camera_on, at_s=now))
                if pinned != publisher.pinned:
                    publisher.pinned = pinned
                    await self._emit(PinChanged(pid, pinned, at_s=now))
            for participant in present.values():
                await self._participant_joined(participant)
            self._joined.set()

    async def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        log.warning("%s: %s", self._where, reason)
        await self._emit(RoomEnded(reason, at_s=self._clock()))

    # --- what the room says ------------------------------------------------------------------

    async def _on_message(self, generation: int, message: dict[str, Any]) -> None:
        await self._joined.wait()  # the join reply's list comes before any event
        if generation != self._generation:
            return  # from a channel that is gone: the rejoin's list replaced what it said
        kind = message.get("type")
        async with self._lock:
            if kind == "participantJoined":
                await self._participant_joined(message.get("participant") or {})
                return
            if kind == "roomEnded":
                await self._end(str(message.get("reason")))
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
            publisher.muted = bool(message.get("muted"))
            await self._emit(MuteChanged(pid, publisher.muted, at_s=now))
        elif kind == "cameraChanged":
            publisher.camera_on = bool(message.get("on"))
            await self._emit(CameraChanged(pid, publisher.camera_on, at_s=now))
        elif kind == "pinChanged":
            publisher.pinned = bool(message.get("pinned"))
            await self._emit(PinChanged(pid, publisher.pinned, at_s=now))
        elif kind == "participantLeft":
            await self._participant_left(publisher, str(message.get("reason") or "left"))

    async def _participant_joined(self, participant: dict[str, Any]) -> None:
        pid = str(participant.get("id"))
        if pid in self._publishers:
            return
        publisher = _Publisher(
            pid,
            str(participant.get("name")),
            published=_tracks_of(participant),
            muted=bool(participant.get("muted")),
            camera_on=bool(participant.get("cameraOn", True)),
            pinned=bool(participant.get("pinned")),
        )
        self._publishers[pid] = publisher
        await self._emit(
            ParticipantJoined(
                pid,
                publisher.name,
                muted=publisher.muted,
                camera_on=publisher.camera_on,
                pinned=publisher.pinned,
                at_s=self._clock(),
            )
        )

    async def _participant_left(self, publisher: _Publisher, reason: str) -> None:
        """Unpublish every track, then the participant (the order the roster relies on)."""
        publisher.published.clear()
        await self._drop_media(publisher, reason=f"participant {reason}")
        self._publishers.pop(publisher.id, None)
        await self._emit(ParticipantLeft(publisher.id, reason, at_s=self._clock()))

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
        try:
            if self._channel is None:
                raise ConnectionError("the signalling connection is lost")
            await self._channel.request("answer", to=publisher.id, sdp=peer.localDescription.sdp)
        except (ConnectionError, TimeoutError, RoomRequestError) as error:
            # The signalling dropped under the answer (the publisher offers again once the
            # recorder is back), or the publisher is gone: this peer connection will never connect.
            log.info("the answer to %s was not delivered: %s", publisher.id, error)
            await self._drop_media(publisher, reason="media connection lost")
            return
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
