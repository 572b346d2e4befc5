"""A participant of a Janus VideoRoom, in Python: what tests, the demo and the benchmark publish.

`participant = await JanusPublisher.join(url, room_id, name)` joins as a publisher (visible in
the room, unlike the recorder), `publish({TrackKind.AUDIO: ..., TrackKind.CAMERA: ...})` sends
its tracks on one peer connection, one stream per kind, described as `microphone`, `camera` and
`screen` (the description is how the recorder tells a screen share from a camera). A screen
share started or stopped later renegotiates that connection (`configure` with a new offer), as a
browser adding or removing a track does. `reconnect()` plays a client whose Janus restarted: a
new session, the same feed id, the same sources published again.

Each sender reads its own `MediaRelay` proxy of the source, so a source outlives the peer
connections that sent it (a reconnect publishes it again). ICE: no STUN or TURN, host candidates
of whatever network the caller runs in (the tests' sealed network).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from recorder.rooms.base import TrackKind
from recorder.rooms.janus.api import JanusHandle, JanusSession

log = logging.getLogger(__name__)

PUBLISH_ORDER = (TrackKind.AUDIO, TrackKind.CAMERA, TrackKind.SCREEN)
DESCRIPTIONS = {
    TrackKind.AUDIO: "microphone",
    TrackKind.CAMERA: "camera",
    TrackKind.SCREEN: "screen",
}
PEER_CLOSE_TIMEOUT_S = 2.0
ROOM_PUBLISHERS = 16  # a test or demo room's publisher limit


async def create_room(
    url: str, room_id: int | str, *, pin: str | None = None, description: str = ""
) -> None:
    """Create a (non-permanent) VideoRoom through the API: VP8 and Opus, audio levels on."""
    session = await JanusSession.open(url, name=f"create room {room_id}")
    try:
        handle = await session.attach()
        body: dict[str, Any] = {
            "request": "create",
            "room": room_id,
            "permanent": False,
            "description": description or f"room {room_id}",
            "publishers": ROOM_PUBLISHERS,
            "videocodec": "vp8",
            "audiocodec": "opus",
            "audiolevel_event": True,
            "notify_joining": False,
        }
        if pin is not None:
            body["pin"] = pin
        await handle.message(body)
    finally:
        await session.close()


async def destroy_room(url: str, room_id: int | str) -> None:
    """Destroy a VideoRoom: everyone in it is told, and it stops existing."""
    session = await JanusSession.open(url, name=f"destroy room {room_id}")
    try:
        handle = await session.attach()
        await handle.message({"request": "destroy", "room": room_id})
    finally:
        await session.close()


async def list_participants(url: str, room_id: int | str) -> list[dict[str, Any]]:
    """What `listparticipants` says about a room (who is in it, as everyone can see)."""
    session = await JanusSession.open(url, name=f"list room {room_id}")
    try:
        handle = await session.attach()
        reply = await handle.message({"request": "listparticipants", "room": room_id})
        return [p for p in reply.data.get("participants") or [] if isinstance(p, dict)]
    finally:
        await session.close()


class JanusPublisher:
    """One publishing participant. Make one with `await JanusPublisher.join(...)`."""

    def __init__(
        self, url: str, room_id: int | str, name: str, *, pin: str | None, feed: int | None
    ) -> None:
        self.url = url
        self.room_id = room_id
        self.name = name
        self.id: int | None = feed
        self._pin = pin
        self._session: JanusSession | None = None
        self._handle: JanusHandle | None = None
        self._peer: RTCPeerConnection | None = None
        self._sources: dict[TrackKind, MediaStreamTrack] = {}
        self._transceivers: dict[TrackKind, RTCRtpTransceiver] = {}
        self._relay = MediaRelay()
        self._proxies: list[MediaStreamTrack] = []
        self._lock = asyncio.Lock()
        self._left = False

    @classmethod
    async def join(
        cls,
        url: str,
        room_id: int | str,
        name: str,
        *,
        pin: str | None = None,
        feed: int | None = None,
    ) -> JanusPublisher:
        """Join `room_id` as a publisher named `name` (with feed id `feed`, or one Janus picks)."""
        publisher = cls(url, room_id, name, pin=pin, feed=feed)
        await publisher._join()
        return publisher

    @property
    def participant_id(self) -> str:
        """The id the recorder reports this participant under."""
        return str(self.id)

    async def _join(self) -> None:
        session = await JanusSession.open(self.url, name=f"publisher {self.name}")
        try:
            handle = await session.attach()
            body: dict[str, Any] = {
                "request": "join",
                "ptype": "publisher",
                "room": self.room_id,
                "display": self.name,
            }
            if self.id is not None:
                body["id"] = self.id
            if self._pin is not None:
                body["pin"] = self._pin
            reply = await handle.message(body)
        except BaseException:
            await session.close()
            raise
        self.id = int(reply.data["id"])
        self._session, self._handle = session, handle

    # --- publishing --------------------------------------------------------------------------

    async def publish(self, tracks: Mapping[TrackKind, MediaStreamTrack]) -> None:
        """Publish these tracks (one per kind) on a new peer connection."""
        async with self._lock:
            for kind, track in tracks.items():
                if track.kind != kind.media_kind:
                    raise ValueError(f"a {kind} track must be {kind.media_kind}, not {track.kind}")
            self._sources = dict(tracks)
            await self._close_peer()
            self._peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            for kind in PUBLISH_ORDER:
                if kind in self._sources:
                    self._add(kind)
            await self._negotiate("publish")

    async def start_screen_share(self, track: MediaStreamTrack) -> None:
        """Add a screen share to what is published (a renegotiation)."""
        async with self._lock:
            if self._peer is None:
                raise RuntimeError("publish before sharing a screen")
            self._sources[TrackKind.SCREEN] = track
            self._add(TrackKind.SCREEN)
            await self._negotiate("configure")

    async def stop_screen_share(self) -> None:
        """Stop the screen share: its stream ends for everyone (a renegotiation)."""
        async with self._lock:
            transceiver = self._transceivers.pop(TrackKind.SCREEN, None)
            self._sources.pop(TrackKind.SCREEN, None)
            if transceiver is None or self._peer is None:
                return
            # An inactive m-line is what makes Janus disable the stream (aiortc's `stop()` would
            # still offer it as sendonly); the sender then stops reading the source.
            transceiver.direction = "inactive"
            await self._negotiate("configure")
            await transceiver.sender.stop()

    async def unpublish(self) -> None:
        """Stop publishing everything (the participant stays in the room)."""
        async with self._lock:
            handle = self._handle
            if handle is not None:
                await handle.message({"request": "unpublish"})
            await self._close_peer()

    def _add(self, kind: TrackKind) -> None:
        peer = self._peer
        if peer is None:
            return
        proxy = self._relay.subscribe(self._sources[kind], buffered=False)
        self._proxies.append(proxy)
        self._transceivers[kind] = peer.addTransceiver(proxy, direction="sendonly")

    async def _negotiate(self, request: str) -> None:
        peer, handle = self._peer, self._handle
        if peer is None or handle is None:
            raise ConnectionError("not joined")
        await peer.setLocalDescription(await peer.createOffer())
        descriptions = [
            {"mid": transceiver.mid, "description": DESCRIPTIONS[kind]}
            for kind, transceiver in self._transceivers.items()
            if transceiver.mid is not None
        ]
        offer = {"type": "offer", "sdp": peer.localDescription.sdp, "trickle": False}
        reply = await handle.message({"request": request, "descriptions": descriptions}, jsep=offer)
        if reply.jsep is None:
            raise ConnectionError(f"Janus answered {request} without an SDP answer")
        await peer.setRemoteDescription(
            RTCSessionDescription(sdp=str(reply.jsep["sdp"]), type="answer")
        )

    # --- leaving -----------------------------------------------------------------------------

    async def leave(self) -> None:
        """Leave the room (a plain `leave`, as a client that hangs up), close everything;
        idempotent."""
        if self._left:
            return
        self._left = True
        handle = self._handle
        if handle is not None and not handle.session.lost.is_set():
            with contextlib.suppress(Exception):
                await handle.message({"request": "leave"})
        await self._close_peer()
        await self._close_session()
        for proxy in self._proxies:
            proxy.stop()

    async def reconnect(self) -> None:
        """Join again (same feed id) and publish the same sources: a client whose Janus
        restarted."""
        await self._close_peer()
        await self._close_session()
        await self._join()
        sources = dict(self._sources)
        self._transceivers.clear()
        await self.publish(sources)

    async def _close_peer(self) -> None:
        peer, self._peer = self._peer, None
        self._transceivers.clear()
        if peer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.close(), PEER_CLOSE_TIMEOUT_S)

    async def _close_session(self) -> None:
        session, self._session, self._handle = self._session, None, None
        if session is not None:
            await session.close()
