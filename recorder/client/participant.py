"""A participant of the embedded room, in Python: the SDK calls that tests, the demo and
developers use (`join`, publish, mute, camera, screen share, pin, `start_recording`, ...).

Media: the participant keeps one source track per kind it publishes. When a recorder is in the
room, the participant opens one peer connection to it (on 127.0.0.1 only) with three send-only
transceivers, always in the order audio, camera, screen, and tells the recorder which mid is which;
it never renegotiates. Publishing, muting, turning the camera off and stopping a screen share only
switch what each sender's `SwitchableTrack` reads (the source, or nothing), so a change takes
effect at once and costs no new offer. Each sender reads its own `MediaRelay` proxy of the source
(latest frame only), so several recorders can receive the same source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCSessionDescription
from aiortc.contrib.media import MediaPlayer, MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from recorder.client.media import SendStats, SwitchableTrack
from recorder.embedded_room.channel import SignallingChannel
from recorder.embedded_room.ice import LoopbackPeerConnection
from recorder.embedded_room.protocol import DEFAULT_ROOM_ID, Role
from recorder.lifecycle import Status
from recorder.rooms.base import TrackKind

log = logging.getLogger(__name__)

PEER_CLOSE_TIMEOUT_S = 2.0
TRANSCEIVER_ORDER = (TrackKind.AUDIO, TrackKind.CAMERA, TrackKind.SCREEN)


@dataclass(slots=True)
class ParticipantInfo:
    """A participant as everyone in the room sees them (recorders are never listed)."""

    id: str
    name: str
    tracks: set[TrackKind] = field(default_factory=set)
    muted: bool = False
    camera_on: bool = True
    pinned: bool = False


@dataclass(frozen=True, slots=True)
class RecordingState:
    """One `recordingStateChanged`: the status of CONTRACT.md §3 and, on failure, why."""

    status: Status
    recording_id: str | None
    reason: dict[str, Any] | None = None


RecordingStateListener = Callable[[RecordingState], None]


@dataclass(slots=True)
class _RecorderLink:
    """This participant's peer connection to one hidden recorder."""

    peer: LoopbackPeerConnection
    outputs: dict[TrackKind, SwitchableTrack]  # what each sender sends
    # kind -> (the source, the relay proxy the sender reads it through)
    sent: dict[TrackKind, tuple[MediaStreamTrack, MediaStreamTrack]] = field(default_factory=dict)


class RoomParticipant:
    """One joined participant. Make one with `await join(url, name)`; end with `leave()`.

    Every call waits for the room's acknowledgement and raises `RoomRequestError` (with the
    room's `code`) when the room refuses it; `start_recording` and `stop_recording` refuse with
    START_RECORDING_FAILED and STOP_RECORDING_FAILED.
    """

    def __init__(self, name: str, room_id: str) -> None:
        self.name = name
        self.room_id = room_id
        self.id = ""
        self.participants: dict[str, ParticipantInfo] = {}
        self.recording: RecordingState | None = None
        self.room_ended = asyncio.Event()
        self.on_recording_state_changed: RecordingStateListener | None = None
        self._channel: SignallingChannel | None = None
        self._sources: dict[TrackKind, MediaStreamTrack] = {}
        self._muted = False
        self._camera_on = True
        self._relay = MediaRelay()
        self._links: dict[str, _RecorderLink] = {}
        self._sent_before: dict[TrackKind, SendStats] = {}  # by links that are gone
        self._lock = asyncio.Lock()  # media changes and recorder (dis)connections, one at a time
        self._joined = asyncio.Event()
        self._players: list[MediaPlayer] = []
        self._left = False

    # --- joining and leaving -----------------------------------------------------------------

    async def _join(self, url: str) -> None:
        self._channel = await SignallingChannel.connect(
            url,
            on_event=self._on_message,
            on_disconnect=self._on_disconnect,
            name=f"participant {self.name}",
        )
        try:
            reply = await self._channel.request(
                "join", role=Role.PARTICIPANT, roomId=self.room_id, name=self.name
            )
        except BaseException:
            await self._channel.close()
            raise
        self.id = str(reply["peerId"])
        for participant in reply.get("participants") or []:
            self._upsert(participant)
        if reply.get("recording"):
            self.recording = _recording_state(reply["recording"])
        self._joined.set()
        for recorder_id in reply.get("recorders") or []:
            async with self._lock:
                await self._connect_recorder(str(recorder_id))

    async def leave(self) -> None:
        """Say goodbye, close every media connection and the room connection; idempotent."""
        if self._left:
            return
        self._left = True
        channel = self._channel
        if channel is not None and channel.connected:
            with contextlib.suppress(Exception):
                await channel.request("leave")
        async with self._lock:
            for recorder_id in list(self._links):
                await self._disconnect_recorder(recorder_id)
        if channel is not None:
            await channel.close()
        for source in self._sources.values():
            source.stop()
        for player in self._players:
            for track in (player.audio, player.video):
                if track is not None:
                    track.stop()

    async def end_room(self) -> None:
        """End the room for everyone (a running recording is stopped by its worker)."""
        await self._request("endRoom")

    # --- media -------------------------------------------------------------------------------

    async def publish(self, kind: TrackKind, track: MediaStreamTrack) -> None:
        """Publish (or replace) this participant's track of a kind."""
        if track.kind != kind.media_kind:
            raise ValueError(f"a {kind} track must be {kind.media_kind}, not {track.kind}")
        self._sources[kind] = track
        await self._update_senders()
        await self._request("publish", kind=kind)

    async def unpublish(self, kind: TrackKind) -> None:
        """Stop publishing a kind of track; its source is stopped."""
        source = self._sources.pop(kind, None)
        await self._update_senders()
        if source is not None:
            source.stop()
        await self._request("unpublish", kind=kind)

    async def publish_media_file(self, path: str, *, loop: bool = True) -> None:
        """Publish a media file's audio and video (aiortc's `MediaPlayer`, paced in real time)."""
        player = MediaPlayer(path, loop=loop)
        self._players.append(player)
        if player.audio is not None:
            await self.publish(TrackKind.AUDIO, player.audio)
        if player.video is not None:
            await self.publish(TrackKind.CAMERA, player.video)

    async def mute(self) -> None:
        """Mute the microphone: no audio is sent until `unmute()`."""
        self._muted = True
        await self._update_senders()
        await self._request("mute")

    async def unmute(self) -> None:
        self._muted = False
        await self._update_senders()
        await self._request("unmute")

    async def camera_off(self) -> None:
        """Turn the camera off: no video is sent, the recording shows the avatar."""
        self._camera_on = False
        await self._update_senders()
        await self._request("cameraOff")

    async def camera_on(self) -> None:
        self._camera_on = True
        await self._update_senders()
        await self._request("cameraOn")

    async def start_screen_share(self, track: MediaStreamTrack) -> None:
        """Share a screen: a second video track, beside the camera."""
        await self.publish(TrackKind.SCREEN, track)

    async def stop_screen_share(self) -> None:
        await self.unpublish(TrackKind.SCREEN)

    async def pin(self, participant_id: str) -> None:
        """Pin a participant for the whole room (the recording favours pinned participants)."""
        await self._request("pin", participantId=participant_id)

    async def unpin(self, participant_id: str) -> None:
        await self._request("unpin", participantId=participant_id)

    def sent(self) -> dict[TrackKind, SendStats]:
        """What this participant's senders took from its tracks so far, per kind, summed over
        every recorder it has sent to (a bench has one: "did the sender keep real time")."""
        totals = dict(self._sent_before)
        for link in self._links.values():
            for kind, output in link.outputs.items():
                totals[kind] = totals.get(kind, SendStats()).merged(output.sent)
        return {kind: stats for kind, stats in totals.items() if stats.frames}

    @property
    def peer_connections(self) -> dict[str, LoopbackPeerConnection]:
        """This participant's media connections, by recorder id (for stats and inspection)."""
        return {recorder_id: link.peer for recorder_id, link in self._links.items()}

    # --- recording ---------------------------------------------------------------------------

    async def start_recording(
        self,
        *,
        webhook_url: str | None = None,
        aws_dir_path: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> str:
        """`room.startRecording({webhookUrl, awsDirPath, config})`: the new recording's id.

        Statuses then arrive through `on_recording_state_changed`.
        """
        params: dict[str, Any] = {}
        if webhook_url is not None:
            params["webhookUrl"] = webhook_url
        if aws_dir_path is not None:
            params["awsDirPath"] = aws_dir_path
        if config is not None:
            params["config"] = config
        reply = await self._request("startRecording", params=params)
        return str(reply["recordingId"])

    async def stop_recording(self) -> str:
        """`room.stopRecording()`: the stopped recording's id (its worker was sent SIGTERM)."""
        reply = await self._request("stopRecording")
        return str(reply["recordingId"])

    # --- internals ---------------------------------------------------------------------------

    async def _request(self, message_type: str, **fields: Any) -> dict[str, Any]:
        if self._channel is None:
            raise ConnectionError("not joined")
        return await self._channel.request(message_type, **fields)

    def _wanted(self, kind: TrackKind) -> MediaStreamTrack | None:
        """The source a sender should send now: nothing while muted or with the camera off."""
        if kind is TrackKind.AUDIO and self._muted:
            return None
        if kind is TrackKind.CAMERA and not self._camera_on:
            return None
        return self._sources.get(kind)

    async def _update_senders(self) -> None:
        async with self._lock:
            for link in self._links.values():
                self._apply(link)

    def _apply(self, link: _RecorderLink) -> None:
        for kind, output in link.outputs.items():
            wanted = self._wanted(kind)
            current = link.sent.get(kind)
            if (current[0] if current is not None else None) is wanted:
                continue
            if wanted is None:
                output.switch(None)
                del link.sent[kind]
            else:
                proxy = self._relay.subscribe(wanted, buffered=False)
                output.switch(proxy)
                link.sent[kind] = (wanted, proxy)
            if current is not None:
                current[1].stop()  # unsubscribes the old proxy from the relay

    async def _connect_recorder(self, recorder_id: str) -> None:
        if recorder_id in self._links or self._left:
            return
        peer = LoopbackPeerConnection()
        outputs = {kind: SwitchableTrack(kind.media_kind) for kind in TRANSCEIVER_ORDER}
        for output in outputs.values():
            peer.addTransceiver(output, direction="sendonly")
        link = _RecorderLink(peer, outputs)
        self._links[recorder_id] = link
        self._apply(link)
        await peer.setLocalDescription(await peer.createOffer())
        mids = {
            transceiver.mid: kind
            for transceiver, kind in zip(peer.getTransceivers(), TRANSCEIVER_ORDER, strict=True)
        }
        await self._request("offer", to=recorder_id, sdp=peer.localDescription.sdp, tracks=mids)

    async def _disconnect_recorder(self, recorder_id: str) -> None:
        link = self._links.pop(recorder_id, None)
        if link is None:
            return
        for _source, proxy in link.sent.values():
            proxy.stop()
        for kind, output in link.outputs.items():
            output.stop()
            self._sent_before[kind] = self._sent_before.get(kind, SendStats()).merged(output.sent)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.peer.close(), PEER_CLOSE_TIMEOUT_S)

    def _upsert(self, participant: dict[str, Any]) -> None:
        pid = str(participant.get("id"))
        self.participants[pid] = ParticipantInfo(
            id=pid,
            name=str(participant.get("name")),
            tracks={
                kind
                for value in participant.get("tracks") or []
                if (kind := TrackKind.parse(value))
            },
            muted=bool(participant.get("muted")),
            camera_on=bool(participant.get("cameraOn", True)),
            pinned=bool(participant.get("pinned")),
        )

    async def _on_message(self, message: dict[str, Any]) -> None:
        await self._joined.wait()
        kind = message.get("type")
        info = self.participants.get(str(message.get("participantId")))
        if kind == "participantJoined":
            self._upsert(message.get("participant") or {})
        elif kind == "participantLeft":
            self.participants.pop(str(message.get("participantId")), None)
        elif kind in ("trackPublished", "trackUnpublished") and info is not None:
            track_kind = TrackKind.parse(message.get("kind"))
            if track_kind is not None and kind == "trackPublished":
                info.tracks.add(track_kind)
            elif track_kind is not None:
                info.tracks.discard(track_kind)
        elif kind == "muteChanged" and info is not None:
            info.muted = bool(message.get("muted"))
        elif kind == "cameraChanged" and info is not None:
            info.camera_on = bool(message.get("on"))
        elif kind == "pinChanged" and info is not None:
            info.pinned = bool(message.get("pinned"))
        elif kind == "recorderJoined":
            async with self._lock:
                await self._connect_recorder(str(message.get("recorderId")))
        elif kind == "recorderLeft":
            async with self._lock:
                await self._disconnect_recorder(str(message.get("recorderId")))
        elif kind == "answer":
            link = self._links.get(str(message.get("from")))
            if link is not None:
                await link.peer.setRemoteDescription(
                    RTCSessionDescription(sdp=str(message.get("sdp")), type="answer")
                )
        elif kind == "recordingStateChanged":
            self.recording = _recording_state(message)
            if self.on_recording_state_changed is not None:
                self.on_recording_state_changed(self.recording)
        elif kind == "roomEnded":
            self.room_ended.set()

    async def _on_disconnect(self) -> None:
        if not self._left:
            log.warning("participant %s: the room connection was lost", self.name)
            self.room_ended.set()


def _recording_state(message: dict[str, Any]) -> RecordingState:
    reason = message.get("reason")
    recording_id = message.get("recordingId")
    return RecordingState(
        status=Status(message.get("status")),
        recording_id=str(recording_id) if recording_id is not None else None,
        reason=reason if isinstance(reason, dict) else None,
    )


async def join(url: str, name: str, *, room_id: str = DEFAULT_ROOM_ID) -> RoomParticipant:
    """Join the embedded room at `url` (`ws://127.0.0.1:PORT/ws`) as `name`."""
    participant = RoomParticipant(name, room_id)
    await participant._join(url)
    return participant
