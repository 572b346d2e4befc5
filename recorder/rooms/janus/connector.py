"""The recorder in a Janus VideoRoom: a hidden subscriber that follows the room.

Hidden: the recorder never joins as a publisher. In a VideoRoom, whoever joins as a publisher
(even one that never publishes) is in every `listparticipants` and announced to everyone when it
leaves; subscriber handles are never announced. So the recorder has no publisher handle, and
gets none of the room events Janus sends to publishers (`publishers`, `leaving`, `talking`).
It follows the room instead by asking:

- a *control* handle, attached and never joined, asks `listparticipants` every
  `POLL_INTERVAL_S`: who is present (publishing or not), their display names, and from that who
  joined or left (a publisher's plain `leave` gives subscribers nothing at all, so this is also
  how a departure is noticed);
- a *probe*, a throw-away subscriber handle that joins with every publisher and is detached at
  once without answering, lists every publisher's streams with their descriptions; it runs
  whenever the set of publishers changes and every `PROBE_INTERVAL_S` otherwise, since a stream a
  publisher adds later (a screen share) is announced to publishers only (about 2 ms of Janus'
  time per probe). Janus 1.1 still lists a stream its publisher disabled; the probe's offer,
  where that m-line is inactive, gives it away (`streams.publisher_streams`);
- the *subscription*, one subscriber handle and one peer connection (`JanusPeerConnection`:
  max-bundle, RTP routed by MID) carrying every wanted stream of every publisher, is kept equal
  to what the probe found with one `update` request per change (`streams.plan_update`); every
  offer Janus sends, as a reply or on its own (after a publisher unpublishes), is answered with
  `start`, and each `streams[]` re-routes the m-lines (`streams.routes`).

Events follow from that: `ParticipantJoined`/`ParticipantLeft` from the participant list (a
participant who is present but not publishing is in the recording, with their avatar);
`TrackPublished`/`TrackUnpublished` when an m-line starts or stops carrying a participant's
audio, camera or screen share (`streams.track_kinds` says which is which); `RoomEnded` when the
room is destroyed, or when Janus cannot be reached again within `RECONNECT_TIMEOUT_S`. Janus has
no mute, camera or pin signalling of its own, so those events are never sent (a publisher that
stops sending a stream unpublishes it), and no channel for telling participants the recording's
status (`announce_status` only logs: the application that started the recording tells them).
Speaking comes from the recording's own audio levels, since `talking` events reach publishers
only. A participant's display name is taken when they join.

Every track stays drained: an m-line that carries nobody is drained into a sink that discards.
An m-line that starts carrying another feed is held back until that feed's first keyframe
(`peer.JanusPeerConnection.hold_until_keyframe`), so its decoder never paints the new feed's
frames onto the previous one's picture.

Simulcast: `prefer_video_size(feed_id, size)` says how large the layout draws a video feed; for a
simulcast stream the connector asks Janus (`configure`) for the smallest layer that fills that
tile (`simulcast.substream_for_tile`), from the top layer's size learnt from decoded frames and
the layer Janus says it forwards, and helps the switch along with keyframe requests.

Reconnecting: when the session is lost (the WebSocket closes, a keep-alive or request goes
unanswered, Janus restarts and forgets the session) or the media connection fails, every track is
unpublished (the tiles show placeholders), the participants stay, and the connector opens a new
session with growing back-off. Once Janus answers again the room is polled as usual: the same
feed ids keep their tiles, newcomers join, and those still missing `REJOIN_GRACE_S` after the
room answers again leave (their clients had as long to reconnect). A room missing after a
reconnect is waited for (a restarted Janus has it again once the application creates it) until
the reconnect deadline.

One task (`_run`) owns all of this state: Janus events and the poll timer are handled in turn,
so no handler ever runs beside another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import av
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from layouts.model import Fit, Size
from recorder.errors import JoinError
from recorder.job import RoomConfig
from recorder.lifecycle import Status
from recorder.rooms.base import (
    FrameSink,
    MonotonicNow,
    ParticipantJoined,
    ParticipantLeft,
    RoomConnector,
    RoomEnded,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
    feed_id,
)
from recorder.rooms.consumer import FeedStats, TrackConsumer
from recorder.rooms.janus.api import (
    HANDLE_NOT_FOUND,
    SESSION_NOT_FOUND,
    VIDEOROOM_NO_SUCH_FEED,
    VIDEOROOM_NO_SUCH_ROOM,
    VIDEOROOM_UNAUTHORIZED,
    JanusConnectionLostError,
    JanusError,
    JanusEvent,
    JanusHandle,
    JanusSession,
)
from recorder.rooms.janus.peer import JanusPeerConnection
from recorder.rooms.janus.simulcast import (
    ALL_TEMPORAL_LAYERS,
    TOP_SUBSTREAM,
    substream_for_tile,
    top_layer_size,
)
from recorder.rooms.janus.streams import (
    FeedId,
    PublisherStream,
    StreamKey,
    SubscribedStream,
    SubscriptionUpdate,
    parse_streams,
    plan_update,
    publisher_streams,
    routes,
    wanted_streams,
)

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5  # who is in the room: a join or leave is seen within this (+ a round trip)
PROBE_INTERVAL_S = 1.0  # a stream added by a present publisher (screen share) is seen within this
RECONNECT_TIMEOUT_S = 60.0  # Janus (and the room) unreachable for longer: the room has ended
RECONNECT_FIRST_DELAY_S = 0.2
RECONNECT_MAX_DELAY_S = 2.0
# After a reconnect, a participant missing from the room is kept this long: its client is likely
# reconnecting to the same restarted Janus (with its feed id), and its tile should wait for it.
REJOIN_GRACE_S = 10.0
JOIN_TIMEOUT_S = 10.0
OFFER_TIMEOUT_S = 5.0  # Janus postponed a renegotiation ("updating") and owes us this offer
PEER_CLOSE_TIMEOUT_S = 2.0
# Frames decoded this long after Janus says it switched layers are from the new layer.
LAYER_SWITCH_SETTLE_S = 0.2
KEYFRAME_REQUEST_INTERVAL_S = 0.5  # a video m-line held back for a keyframe asks this often
LAYER_SWITCH_KEYFRAME_INTERVAL_S = 1.0  # past Janus' own limit of about one PLI a second
LAYER_SWITCH_KEYFRAME_REQUESTS = 5
INBOX_SIZE = 256  # Janus events for the subscription: a few per change in the room
VIDEOROOM_INVALID_ELEMENT = 456  # e.g. a room id of the wrong type (string vs integer ids)
VIDEOROOM_MISSING_ELEMENT = 429
WS_SCHEMES = ("ws://", "wss://")


@dataclass(frozen=True, slots=True)
class JanusTimings:
    """The connector's pacing; tests shorten it."""

    poll_interval_s: float = POLL_INTERVAL_S
    probe_interval_s: float = PROBE_INTERVAL_S
    reconnect_timeout_s: float = RECONNECT_TIMEOUT_S
    reconnect_first_delay_s: float = RECONNECT_FIRST_DELAY_S
    reconnect_max_delay_s: float = RECONNECT_MAX_DELAY_S
    rejoin_grace_s: float = REJOIN_GRACE_S


class _LostError(Exception):
    """The session or the media connection is gone: rebuild everything."""


class _RoomGoneError(Exception):
    """The room no longer exists."""


_PEER_FAILED = "peer failed"
_PREFERENCES_CHANGED = "preferences changed"
_SESSION_LOST = "session lost"
_InboxItem = JanusEvent | str


class _DiscardingSink:
    """Where an m-line that carries nobody is drained: its frames are counted by its consumer
    and dropped."""

    def push_video(self, feed_id: str, frame: av.VideoFrame, arrival_s: float) -> None:
        pass

    def push_audio(self, feed_id: str, frame: av.AudioFrame, arrival_s: float) -> None:
        pass

    def end_feed(self, feed_id: str) -> None:
        pass


class _SizeWatchingSink:
    """The recording's sink, noting each video feed's latest decoded size and when (simulcast:
    with the layer Janus says it forwards, that size tells the top layer's)."""

    def __init__(self, sink: FrameSink) -> None:
        self._sink = sink
        self.latest: dict[str, tuple[int, int, float]] = {}  # width, height, arrival

    def push_video(self, feed_id: str, frame: av.VideoFrame, arrival_s: float) -> None:
        self.latest[feed_id] = (frame.width, frame.height, arrival_s)
        self._sink.push_video(feed_id, frame, arrival_s)

    def push_audio(self, feed_id: str, frame: av.AudioFrame, arrival_s: float) -> None:
        self._sink.push_audio(feed_id, frame, arrival_s)

    def end_feed(self, feed_id: str) -> None:
        self.latest.pop(feed_id, None)
        self._sink.end_feed(feed_id)


_DISCARD = _DiscardingSink()


@dataclass(slots=True)
class _Participant:
    feed: FeedId
    name: str
    publisher: bool


@dataclass(slots=True)
class _Slot:
    """One m-line of the subscription: its track, whom it carries now, its drain."""

    mid: str
    track: MediaStreamTrack
    route: tuple[FeedId, TrackKind] | None = None
    consumer: TrackConsumer | None = None
    substream: int = TOP_SUBSTREAM  # the simulcast layer asked for (Janus starts at the top)
    forwarded: int | None = None  # the layer Janus says it forwards now, since `forwarded_s`
    forwarded_s: float = 0.0
    top: Size | None = None  # the simulcast top layer's size, once known
    switch_keyframe_requests: int = 0  # PLIs sent for the current layer switch
    keyframe_asked_s: float | None = None  # the last PLI for the route's first keyframe


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


class JanusConnector(RoomConnector):
    """A hidden subscriber in one Janus VideoRoom (`room.url`: Janus' WebSocket API)."""

    def __init__(
        self,
        room: RoomConfig,
        sink: FrameSink,
        *,
        clock: MonotonicNow = time.monotonic,
        timings: JanusTimings | None = None,
    ) -> None:
        self._watching = _SizeWatchingSink(sink)
        super().__init__(self._watching, clock=clock)
        self._room = room
        self._room_id: int | str = room.room_id
        self._token = _secret(room.token)
        self._pin = _secret(room.pin)
        self._timings = timings or JanusTimings()
        self._where = f"Janus room {room.room_id!r} at {room.url}"
        self._session: JanusSession | None = None
        self._control: JanusHandle | None = None
        self._subscriber: JanusHandle | None = None
        self._peer: JanusPeerConnection | None = None
        self._subscription: list[SubscribedStream] = []
        self._wanted: dict[StreamKey, TrackKind] = {}
        self._slots: dict[str, _Slot] = {}
        self._participants: dict[FeedId, _Participant] = {}
        self._stats: dict[str, FeedStats] = {}
        self._tiles: dict[str, Size] = {}
        self._inbox: asyncio.Queue[_InboxItem] = asyncio.Queue(maxsize=INBOX_SIZE)
        self._inbox_overflowed = False
        self._probed: frozenset[FeedId] | None = None
        self._next_probe_s = 0.0
        self._offer_owed_since: float | None = None
        self._room_wait_until: float | None = None  # after a reconnect: the room may come back
        self._rejoin_grace_until: float | None = None  # after a reconnect: absentees may return
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self.reconnects = 0
        self.probes = 0

    # --- what tests and the worker may ask ---------------------------------------------------

    def feed_stats(self) -> dict[str, FeedStats]:
        """Frames received per feed since joining (the run's summary line, tests)."""
        return dict(self._stats)

    @property
    def session_id(self) -> int | None:
        """The current Janus session's id (a new one after each reconnect)."""
        return self._session.id if self._session is not None else None

    def subscribed_mids(self) -> dict[str, tuple[str, TrackKind]]:
        """Which participant's track each m-line carries now (participant id, kind)."""
        return {
            mid: (str(slot.route[0]), slot.route[1])
            for mid, slot in self._slots.items()
            if slot.route is not None
        }

    def prefer_video_size(self, video_feed_id: str, size: Size) -> None:
        """The layout draws this video feed at `size` now: for a simulcast publisher, the
        smallest layer that fills it is asked for (`simulcast.substream_for_tile`).

        Call it whenever the tiles change; cheap, and safe to call with the same size again.
        """
        if self._tiles.get(video_feed_id) == size:
            return
        self._tiles[video_feed_id] = size
        with contextlib.suppress(asyncio.QueueFull):  # the next poll applies it anyway
            self._inbox.put_nowait(_PREFERENCES_CHANGED)

    # --- RoomConnector -----------------------------------------------------------------------

    async def join(self) -> None:
        if not self._room.url.startswith(WS_SCHEMES):
            raise JoinError(
                f"{self._where}: the janus connector speaks Janus' WebSocket API; "
                f"give its ws:// or wss:// URL"
            )
        try:
            await asyncio.wait_for(self._join(), JOIN_TIMEOUT_S)
        except JanusError as error:
            await self.close()
            raise JoinError(f"{self._where} refused the recorder: {error}") from None
        except _RoomGoneError as error:
            await self.close()
            raise JoinError(f"{self._where}: {error}") from None
        except (OSError, aiohttp.ClientError, TimeoutError, _LostError) as error:
            await self.close()
            raise JoinError(
                f"{self._where} could not be reached: {error or type(error).__name__}"
            ) from None
        self._runner = asyncio.create_task(self._run(), name=f"janus: {self._where}")
        log.info("joined %s hidden (session %s)", self._where, self.session_id)

    async def _join(self) -> None:
        """Joined once the room is known to let us in and who is in it; the subscription is
        made by the runner's first poll, at once (the recording's start waits for the join,
        and answering an offer is the costly part: a certificate, ICE gathering, decoders)."""
        await self._connect()
        await self._check_access()
        await self._list_participants()

    async def _check_access(self) -> None:
        """Refuse a room that does not exist or whose PIN we lack, publishers or not.

        Nothing asks a room for its PIN without joining it, so this joins as a subscriber to
        no stream at all: Janus checks the room and the PIN before it complains that no feed
        was named, which is the answer that means "allowed".
        """
        session = self._session
        if session is None:
            raise _LostError("no session")
        handle = await session.attach()
        try:
            await handle.message(self._subscriber_join([]))
        except JanusError as error:
            if error.code == VIDEOROOM_INVALID_ELEMENT and self._numeric_room_id():
                await self._check_access()
            elif error.code == VIDEOROOM_NO_SUCH_ROOM:
                raise _RoomGoneError("the room does not exist") from None
            elif error.code == VIDEOROOM_UNAUTHORIZED or "(pin)" in error.reason:
                raise _RoomGoneError(f"the room refuses the recorder: {error.reason}") from None
            elif error.code != VIDEOROOM_MISSING_ELEMENT:
                raise
        finally:
            with contextlib.suppress(JanusError, ConnectionError, TimeoutError):
                await handle.detach()

    async def announce_status(
        self, status: Status, *, recording_id: str, reason: dict[str, object] | None = None
    ) -> None:
        log.debug(
            "recording %s is %s (a Janus room has no channel to tell its participants)",
            recording_id,
            status,
        )

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(runner), PEER_CLOSE_TIMEOUT_S)
        await self._drop_media("the recorder left", emit=False)
        await self._disconnect()
        self._close_events()
        summary = ", ".join(f"{feed} {stats.frames}" for feed, stats in self._stats.items())
        log.info(
            "left %s; %d reconnects; frames received: %s",
            self._where,
            self.reconnects,
            summary or "none",
        )

    # --- the connection ----------------------------------------------------------------------

    async def _connect(self) -> None:
        """A new session, and its control handle (attached, never joined)."""
        session = await JanusSession.open(
            self._room.url,
            token=self._token,
            on_event=self._on_janus_event,
            on_lost=self._on_session_lost,
            name=f"recorder in {self._where}",
        )
        try:
            self._control = await session.attach()
        except BaseException:
            await session.close()
            raise
        self._session = session

    async def _disconnect(self) -> None:
        session, self._session = self._session, None
        self._control = self._subscriber = None
        if session is not None:
            await session.close()

    def _on_janus_event(self, event: JanusEvent) -> None:
        subscriber = self._subscriber
        if subscriber is None or event.handle_id != subscriber.id:
            return  # the control handle gets nothing; probes are detached at once
        try:
            self._inbox.put_nowait(event)
        except asyncio.QueueFull:
            # The runner reads the inbox between requests of a few ms; a full inbox means it is
            # stuck, and a lost offer would leave the subscription wrong: start afresh.
            if not self._inbox_overflowed:
                log.error("%s: too many Janus events waiting; reconnecting", self._where)
            self._inbox_overflowed = True

    def _on_session_lost(self, _reason: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # `_follow` checks `lost` each turn too
            self._inbox.put_nowait(_SESSION_LOST)

    # --- the one task ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._follow()
            except _RoomGoneError as error:
                log.info("%s: %s", self._where, error)
                await self._drop_media("the room ended")
                await self._emit(RoomEnded(str(error), at_s=self._clock()))
                return
            except (
                _LostError,
                JanusConnectionLostError,
                JanusError,
                OSError,
                aiohttp.ClientError,
                TimeoutError,
            ) as error:
                if self._closing:
                    return
                log.warning("%s: the connection is lost (%s); reconnecting", self._where, error)
                await self._drop_media("the connection to Janus was lost")
                await self._disconnect()
                if not await self._reconnect():
                    await self._emit(
                        RoomEnded(
                            f"Janus could not be reached again within "
                            f"{self._timings.reconnect_timeout_s:g} s",
                            at_s=self._clock(),
                        )
                    )
                    return

    async def _follow(self) -> None:
        """Handle Janus' events as they come and poll the room on time, until something breaks."""
        next_poll_s = time.monotonic()
        while True:
            session = self._session
            if session is None or session.lost.is_set():
                raise _LostError(session.lost_reason if session else "no session")
            if self._inbox_overflowed:
                self._inbox_overflowed = False
                while not self._inbox.empty():
                    self._inbox.get_nowait()
                raise _LostError("Janus events overflowed the inbox")
            wait_s = max(0.0, next_poll_s - time.monotonic())
            try:
                item = await asyncio.wait_for(self._inbox.get(), wait_s) if wait_s else None
            except TimeoutError:
                item = None
            if item is None and not self._inbox.empty():
                item = self._inbox.get_nowait()
            if item is not None:
                await self._handle(item)
            if time.monotonic() >= next_poll_s:
                await self._poll()
                next_poll_s = time.monotonic() + self._timings.poll_interval_s

    async def _handle(self, item: _InboxItem) -> None:
        if item == _SESSION_LOST:
            raise _LostError("the Janus session is lost")
        if item == _PEER_FAILED:
            raise _LostError("the media connection to Janus failed")
        if item == _PREFERENCES_CHANGED:
            await self._apply_preferences()
            return
        if not isinstance(item, JanusEvent):
            return
        if item.kind in ("hangup", "detached"):
            raise _LostError(f"Janus {item.kind} the subscription")
        if item.kind != "event":
            return
        videoroom = item.data.get("videoroom")
        slot = self._slots.get(str(item.data.get("mid")))
        if slot is not None and isinstance(item.data.get("substream"), int):
            slot.forwarded, slot.forwarded_s = item.data["substream"], self._clock()
            return
        if videoroom == "destroyed":
            raise _RoomGoneError("the room was destroyed")
        if videoroom in ("attached", "updated") or item.jsep is not None:
            await self._on_subscription(item.data, item.jsep)

    async def _reconnect(self) -> bool:
        """A new session, with growing back-off, within the reconnect deadline."""
        deadline_s = time.monotonic() + self._timings.reconnect_timeout_s
        delay_s = self._timings.reconnect_first_delay_s
        while not self._closing:
            try:
                await self._connect()
            except (OSError, aiohttp.ClientError, TimeoutError, JanusError, ConnectionError) as e:
                log.debug("%s: reconnecting failed: %s", self._where, e)
            else:
                self.reconnects += 1
                self._room_wait_until = deadline_s
                self._rejoin_grace_until = None  # counted from when the room answers again
                log.info("%s: reconnected (session %s)", self._where, self.session_id)
                return True
            if time.monotonic() + delay_s > deadline_s:
                return False
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self._timings.reconnect_max_delay_s)
        return False

    # --- the room ----------------------------------------------------------------------------

    async def _poll(self) -> None:
        """Who is present now, and the subscription to match."""
        publishers = await self._list_participants()
        if publishers is None:
            return
        if publishers != self._probed or time.monotonic() >= self._next_probe_s:
            await self._reconcile(publishers)
        await self._request_keyframes()
        await self._apply_preferences()  # first frames may have told a simulcast top size

    async def _list_participants(self) -> frozenset[FeedId] | None:
        """Who is present now (joins and leaves are told); the publishers among them, or None
        while a restarted Janus does not have the room yet."""
        control = self._control
        if control is None:
            raise _LostError("no control handle")
        try:
            reply = await control.message({"request": "listparticipants", "room": self._room_id})
        except JanusError as error:
            if error.code == VIDEOROOM_INVALID_ELEMENT and self._numeric_room_id():
                return await self._list_participants()  # again, with the id as a number
            if error.code == VIDEOROOM_NO_SUCH_ROOM:
                if self._room_wait_until is not None and time.monotonic() < self._room_wait_until:
                    return None  # Janus came back without the room: its application recreates it
                raise _RoomGoneError("the room does not exist (any more)") from None
            if error.code in (SESSION_NOT_FOUND, HANDLE_NOT_FOUND):
                raise _LostError(str(error)) from None
            raise
        if self._room_wait_until is not None:
            self._room_wait_until = None
            self._rejoin_grace_until = time.monotonic() + self._timings.rejoin_grace_s
        listed: dict[FeedId, tuple[str, bool]] = {}
        for entry in reply.data.get("participants") or []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), (int, str)):
                display = entry.get("display")
                name = display if isinstance(display, str) and display else str(entry["id"])
                listed[entry["id"]] = (name, bool(entry.get("publisher")))
        await self._update_participants(listed)
        return frozenset(feed for feed, (_, publishing) in listed.items() if publishing)

    def _numeric_room_id(self) -> bool:
        """Switch a room id given as digits to the number Janus expects; False if it is not."""
        if isinstance(self._room_id, str) and self._room_id.isdigit():
            self._room_id = int(self._room_id)
            return True
        return False

    async def _update_participants(self, listed: dict[FeedId, tuple[str, bool]]) -> None:
        grace_until = self._rejoin_grace_until
        if grace_until is not None and time.monotonic() >= grace_until:
            grace_until = self._rejoin_grace_until = None
        gone = [] if grace_until else [f for f in self._participants if f not in listed]
        for feed in gone:
            del self._participants[feed]
        if gone:
            await self._route(reason="the participant left")
            for feed in gone:
                await self._emit(ParticipantLeft(str(feed), "left", at_s=self._clock()))
        for feed, (name, publishing) in listed.items():
            known = self._participants.get(feed)
            if known is None:
                self._participants[feed] = _Participant(feed, name, publishing)
                await self._emit(ParticipantJoined(str(feed), name, at_s=self._clock()))
                continue
            known.publisher = publishing
            if name != known.name:
                log.info("participant %s is now called %r (was %r)", feed, name, known.name)
                known.name = name

    async def _reconcile(self, publishers: frozenset[FeedId]) -> None:
        """Make the subscription carry exactly the wanted streams of `publishers`."""
        if self._offer_owed_since is not None:
            if time.monotonic() - self._offer_owed_since < OFFER_TIMEOUT_S:
                return  # Janus postponed our last update: asking again would duplicate streams
            raise _LostError("Janus never sent the offer it postponed")
        streams = await self._probe(publishers) if publishers else {}
        if streams is None:
            return  # a publisher left between the list and the probe: next poll
        self._probed = publishers
        self._next_probe_s = time.monotonic() + self._timings.probe_interval_s
        self._wanted = wanted_streams(streams)
        update = plan_update(self._wanted, self._subscription)
        if update:
            await self._update_subscription(update)
        else:
            await self._route(reason="unpublished")

    async def _probe(
        self, publishers: frozenset[FeedId]
    ) -> dict[FeedId, list[PublisherStream]] | None:
        """Every publisher's streams, from a subscriber handle that is detached unanswered."""
        session = self._session
        if session is None:
            raise _LostError("no session")
        handle = await session.attach()
        self.probes += 1
        try:
            reply = await handle.message(self._subscriber_join(publishers))
        except JanusError as error:
            if error.code in (VIDEOROOM_NO_SUCH_FEED, VIDEOROOM_NO_SUCH_ROOM):
                log.debug("%s: probe: %s", self._where, error)
                return None
            if error.code == VIDEOROOM_UNAUTHORIZED:
                raise _RoomGoneError(f"the room refuses the recorder: {error.reason}") from None
            raise
        finally:
            with contextlib.suppress(JanusError, ConnectionError, TimeoutError):
                await handle.detach()
        offer = (reply.jsep or {}).get("sdp")
        return publisher_streams(reply.data.get("streams"), str(offer) if offer else None)

    def _subscriber_join(self, feeds: Any) -> dict[str, Any]:
        """A subscriber `join` for `feeds` (feed ids, or `{feed, mid}` entries)."""
        body: dict[str, Any] = {
            "request": "join",
            "ptype": "subscriber",
            "room": self._room_id,
            "streams": [entry if isinstance(entry, dict) else {"feed": entry} for entry in feeds],
        }
        if self._pin is not None:
            body["pin"] = self._pin
        return body

    # --- the subscription --------------------------------------------------------------------

    async def _update_subscription(self, update: SubscriptionUpdate) -> None:
        session = self._session
        if session is None:
            raise _LostError("no session")
        try:
            if self._subscriber is None:
                if not update.subscribe:
                    return
                handle = await session.attach()
                self._subscriber = handle
                reply = await handle.message(self._subscriber_join(update.subscribe_entries()))
            else:
                reply = await self._subscriber.message(update.request())
        except JanusError as error:
            if error.code in (SESSION_NOT_FOUND, HANDLE_NOT_FOUND):
                raise _LostError(str(error)) from None
            if error.code == VIDEOROOM_UNAUTHORIZED:
                raise _RoomGoneError(f"the room refuses the recorder: {error.reason}") from None
            log.warning("%s: the subscription was not updated: %s", self._where, error)
            self._next_probe_s = 0.0  # look again at the next poll
            return
        if reply.data.get("videoroom") == "updating":
            self._offer_owed_since = time.monotonic()
            return
        await self._on_subscription(reply.data, reply.jsep)

    async def _on_subscription(self, data: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        """An `attached`/`updated` from Janus: the new layout, and an offer to answer."""
        if isinstance(data.get("streams"), list):
            self._subscription = parse_streams(data["streams"])
        if jsep is not None and jsep.get("type") == "offer":
            self._offer_owed_since = None
            await self._answer(str(jsep.get("sdp")))
        await self._route(reason="unpublished")

    async def _answer(self, sdp: str) -> None:
        subscriber = self._subscriber
        if subscriber is None:
            return
        peer = self._peer
        if peer is None:
            peer = self._peer = JanusPeerConnection()
            peer.on("connectionstatechange", lambda: self._on_peer_state(peer))
        await peer.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in peer.getTransceivers():
            mid = transceiver.mid
            if mid is None or mid in self._slots or transceiver.kind not in ("audio", "video"):
                continue
            transceiver.direction = "recvonly"
            slot = _Slot(mid, transceiver.receiver.track)
            self._slots[mid] = slot
            await self._drain(slot)
        await peer.setLocalDescription(await peer.createAnswer())
        answer = {"type": "answer", "sdp": peer.localDescription.sdp}
        await subscriber.message({"request": "start"}, jsep=answer)

    def _on_peer_state(self, peer: JanusPeerConnection) -> None:
        if peer is self._peer and peer.connectionState == "failed" and not self._closing:
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(_PEER_FAILED)

    async def _route(self, *, reason: str) -> None:
        """Point every m-line's drain at the participant track it carries now; tell the room's
        reader what stopped (first) and what started."""
        table = routes(self._subscription, self._wanted, self._participants)
        changed = [slot for slot in self._slots.values() if slot.route != table.get(slot.mid)]
        for slot in changed:
            if slot.route is not None:
                feed, kind = slot.route
                slot.route = None
                await self._drain(slot)
                await self._emit(TrackUnpublished(str(feed), kind, reason, at_s=self._clock()))
        for slot in changed:
            target = table.get(slot.mid)
            if target is not None:
                slot.route = target
                slot.substream, slot.forwarded, slot.top = TOP_SUBSTREAM, None, None
                await self._drain(slot)
                feed, kind = target
                await self._emit(TrackPublished(str(feed), kind, slot.track, at_s=self._clock()))
        if changed:
            await self._request_keyframes()
            await self._apply_preferences()

    async def _drain(self, slot: _Slot) -> None:
        """(Re)start the slot's consumer for its current route; the old one stops first, which
        ends its feed in the sink."""
        old, slot.consumer = slot.consumer, None
        if old is not None:
            await old.stop()
        if slot.route is None:
            slot.consumer = TrackConsumer(
                slot.track, f"janus m-line {slot.mid} (unused)", _DISCARD, clock=self._clock
            )
        else:
            feed, kind = slot.route
            name = feed_id(str(feed), kind)
            stats = self._stats.setdefault(name, FeedStats())
            slot.consumer = TrackConsumer(
                slot.track, name, self._watching, clock=self._clock, stats=stats
            )
            if kind.media_kind == "video" and self._peer is not None:
                # Its decoder may hold another feed's picture: start it again from a keyframe.
                self._peer.hold_until_keyframe(slot.mid)
                slot.keyframe_asked_s = None
        slot.consumer.start()

    async def _request_keyframes(self) -> None:
        """A PLI for every video m-line still waiting for its route's first keyframe, or for
        the keyframe Janus needs to switch simulcast layers.

        Janus asks the publisher for that keyframe itself, but at most about once a second: a
        switch asked for right after another one (a thumbnail, then a larger tile) otherwise
        waits for the publisher's next keyframe of its own accord, which a browser may not send
        for minutes. A layer switch is helped `LAYER_SWITCH_KEYFRAME_REQUESTS` times at most:
        a layer the publisher does not send (its bandwidth) never comes, however often asked.
        """
        peer = self._peer
        if peer is None:
            return
        now_s = time.monotonic()
        for slot in self._slots.values():
            if slot.route is None:
                continue
            if peer.waiting_for_keyframe(slot.mid):
                interval_s = KEYFRAME_REQUEST_INTERVAL_S
            elif slot.forwarded is not None and slot.forwarded != slot.substream:
                if slot.switch_keyframe_requests >= LAYER_SWITCH_KEYFRAME_REQUESTS:
                    continue
                interval_s = LAYER_SWITCH_KEYFRAME_INTERVAL_S
            else:
                continue
            asked_s = slot.keyframe_asked_s
            if asked_s is not None and now_s - asked_s < interval_s:
                continue
            slot.keyframe_asked_s = now_s
            if not peer.waiting_for_keyframe(slot.mid):
                slot.switch_keyframe_requests += 1
            await peer.request_keyframe(slot.mid)

    async def _apply_preferences(self) -> None:
        """Ask for the simulcast layer each simulcast video's tile needs."""
        subscriber = self._subscriber
        if subscriber is None:
            return
        by_mid = {stream.mid: stream for stream in self._subscription}
        changes: list[tuple[_Slot, int]] = []
        for slot in self._slots.values():
            stream = by_mid.get(slot.mid)
            if slot.route is None or stream is None or not stream.simulcast:
                continue
            feed, kind = slot.route
            name = feed_id(str(feed), kind)
            tile = self._tiles.get(name)
            if tile is None:
                continue
            fit = Fit.FIT if kind is TrackKind.SCREEN else Fit.FILL
            wanted = substream_for_tile(tile, self._top_layer(slot, name), fit)
            if wanted != slot.substream:
                changes.append((slot, wanted))
        if not changes:
            return
        body = {
            "request": "configure",
            "streams": [
                {"mid": slot.mid, "substream": substream, "temporal": ALL_TEMPORAL_LAYERS}
                for slot, substream in changes
            ],
        }
        try:
            await subscriber.message(body)
        except JanusError as error:
            log.warning("%s: simulcast layers not changed: %s", self._where, error)
            return
        for slot, substream in changes:
            slot.substream = substream
            slot.switch_keyframe_requests = 0
            slot.keyframe_asked_s = time.monotonic()  # Janus asks first; we follow up
            log.info("m-line %s (%s): simulcast layer %d", slot.mid, slot.route, substream)

    def _top_layer(self, slot: _Slot, name: str) -> Size | None:
        """The simulcast top layer's size: from a frame decoded after Janus said which layer it
        forwards (a frame from before the switch would mislead by a factor of 2 or 4)."""
        if slot.top is None and slot.forwarded is not None:
            latest = self._watching.latest.get(name)
            if latest is not None and latest[2] > slot.forwarded_s + LAYER_SWITCH_SETTLE_S:
                slot.top = top_layer_size(Size(latest[0], latest[1]), slot.forwarded)
        return slot.top

    async def _drop_media(self, reason: str, *, emit: bool = True) -> None:
        """Unpublish every track, stop every drain, close the peer connection."""
        for slot in self._slots.values():
            route, slot.route = slot.route, None
            if slot.consumer is not None:
                await slot.consumer.stop()
                slot.consumer = None
            if emit and route is not None:
                feed, kind = route
                await self._emit(TrackUnpublished(str(feed), kind, reason, at_s=self._clock()))
        self._slots.clear()
        peer, self._peer = self._peer, None
        if peer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.close(), PEER_CLOSE_TIMEOUT_S)
        self._subscriber = None
        self._subscription = []
        self._wanted = {}
        while not self._inbox.empty():  # events of the subscription that is gone
            self._inbox.get_nowait()
        self._probed = None
        self._offer_owed_since = None
