"""Who is in the room, as the recording sees it: the roster between the connector and the media.

The connector reports what happens in the room as events (`recorder.rooms.base`); the roster turns
them into the participants' state (present, muted, camera, tracks, pins) and gives the media thread
what it needs once per tick: an immutable tuple of `RosterEntry` (one `ParticipantView` per video
feed: a camera, and a screen share as a second feed whose `screen_of` names the camera). It is the
engine's `Roster`: `entries(t)` answers with the room as it was at recording time `t`, because the
engine asks one playout delay behind the tick (a participant's tile appears when their first
frame is due, not before).

It also keeps the manifest's participant timeline (`recorder.storage.manifest`): present and
pinned from the events, speaking and visible from each tick of the engine (`on_tick`: the mixer's
speech states with their hysteresis, and the feeds the layout actually drew), and it tells the
recording since when the room has been empty, for `emptyRoomTimeoutSec`.

Times are seconds on the recording clock (0 = the first tick). Events carry readings of the
connector's clock, which is the recording clock's own (`to_recording_s` converts them).

Threads: events and control requests arrive on the event loop, `entries` and `on_tick` run on the
media thread; one lock guards the state, held only for dictionary work. The pending history of
snapshots is bounded (`SNAPSHOT_HISTORY_LIMIT`): in audio mode nobody reads it, and the oldest
snapshots are then folded into the current one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from layouts.model import ParticipantView
from recorder.media.engine import RosterEntry, TickReport
from recorder.rooms.base import (
    CameraChanged,
    MuteChanged,
    ParticipantJoined,
    ParticipantLeft,
    PinChanged,
    RoomEnded,
    RoomEvent,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
    feed_id,
)
from recorder.storage.manifest import ManifestBuilder, TimelineKind

log = logging.getLogger(__name__)

# Snapshots waiting for the media thread (one per change); past this the oldest are folded into
# the current one. A room makes a handful of changes per participant action, a few per second at
# most, and the engine reads every tick, so this only bounds the audio mode, where nobody reads.
SNAPSHOT_HISTORY_LIMIT = 256


class UnknownParticipantError(KeyError):
    """A participant id that is not in the room (a control request naming nobody)."""


@dataclass(slots=True)
class _Member:
    """One participant's state, as the events told it."""

    id: str
    name: str
    joined_at: float
    muted: bool = False
    camera_on: bool = True
    pinned_at: float | None = None
    published: set[TrackKind] = field(default_factory=set)
    screen_since: float | None = None
    # Set from the media thread's tick reports.
    speaking: bool = False
    visible: bool = False

    def entries(self) -> list[RosterEntry]:
        """The member's video feeds as the layouts see them (speech is filled in by the engine)."""
        camera = feed_id(self.id, TrackKind.CAMERA)
        entries = [
            RosterEntry(
                ParticipantView(
                    id=camera,
                    name=self.name,
                    video_on=self.camera_on and TrackKind.CAMERA in self.published,
                    muted=self.muted or TrackKind.AUDIO not in self.published,
                    pinned_at=self.pinned_at,
                    joined_at=self.joined_at,
                ),
                feed_id(self.id, TrackKind.AUDIO),
            )
        ]
        if TrackKind.SCREEN in self.published:
            entries.append(
                RosterEntry(
                    ParticipantView(
                        id=feed_id(self.id, TrackKind.SCREEN),
                        name=self.name,
                        joined_at=self.screen_since if self.screen_since is not None else 0.0,
                        screen_of=camera,
                    )
                )
            )
        return entries


@dataclass(frozen=True, slots=True)
class ParticipantState:
    """One participant as the control endpoint reports it."""

    id: str
    name: str
    tracks: tuple[str, ...]
    muted: bool
    camera_on: bool
    pinned: bool
    speaking: bool
    visible: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "tracks": list(self.tracks),
            "muted": self.muted,
            "cameraOn": self.camera_on,
            "pinned": self.pinned,
            "speaking": self.speaking,
            "visible": self.visible,
        }


class RoomRoster:
    """The participants of one recording; see the module docstring."""

    def __init__(
        self,
        *,
        to_recording_s: Callable[[float], float],
        now_s: Callable[[], float],
        manifest: ManifestBuilder | None = None,
    ) -> None:
        """`to_recording_s` converts an event's clock reading; `now_s` is the recording time now
        (for changes that do not come with a time: pins from the control endpoint)."""
        self._to_recording_s = to_recording_s
        self._now_s = now_s
        self._manifest = manifest
        self._lock = threading.Lock()
        self._members: dict[str, _Member] = {}
        self._owners: dict[str, str] = {}  # feed id -> participant id, for the tick reports
        self._empty_since_s: float | None = 0.0  # nobody yet: empty since the start
        self._pending: deque[tuple[float, tuple[RosterEntry, ...]]] = deque()
        self._current: tuple[RosterEntry, ...] = ()
        self._latest: tuple[RosterEntry, ...] = ()

    # --- the event loop's side ---------------------------------------------------------------

    def apply(self, event: RoomEvent) -> None:
        """Take one connector event into the roster (and the manifest)."""
        if isinstance(event, RoomEnded):
            return
        at_s = max(0.0, self._to_recording_s(event.at_s))
        with self._lock:
            if isinstance(event, ParticipantJoined):
                self._join(event, at_s)
            elif isinstance(event, ParticipantLeft):
                self._leave(event.participant_id, at_s)
            else:
                member = self._members.get(event.participant_id)
                if member is None:
                    log.debug("roster: %s for %s, who is not present", event, event.participant_id)
                    return
                self._change(member, event, at_s)
            self._publish(at_s)

    def set_pinned(self, participant_id: str, pinned: bool) -> float:
        """Pin or unpin a participant for this recording only (the room is not told); the time.

        `UnknownParticipantError` for someone not in the room.
        """
        at_s = max(0.0, self._now_s())
        with self._lock:
            member = self._members.get(participant_id)
            if member is None:
                raise UnknownParticipantError(participant_id)
            self._pin(member, pinned, at_s)
            self._publish(at_s)
        return at_s

    # --- what the recording asks -------------------------------------------------------------

    @property
    def empty_since_s(self) -> float | None:
        """Since when (recording seconds) nobody has been present; None while someone is."""
        with self._lock:
            return self._empty_since_s

    def present(self) -> list[ParticipantState]:
        """Everyone present now, in joining order."""
        with self._lock:
            return [
                ParticipantState(
                    id=member.id,
                    name=member.name,
                    tracks=tuple(sorted(member.published)),
                    muted=member.muted,
                    camera_on=member.camera_on,
                    pinned=member.pinned_at is not None,
                    speaking=member.speaking,
                    visible=member.visible,
                )
                for member in self._members.values()
            ]

    def pinned(self) -> list[str]:
        """The pinned participants' ids, in pin order."""
        with self._lock:
            pins = [(m.pinned_at, m.id) for m in self._members.values() if m.pinned_at is not None]
        return [participant_id for _, participant_id in sorted(pins)]

    def snapshot(self) -> tuple[ParticipantView, ...]:
        """The views of every feed present now (not delayed): for status and tests."""
        with self._lock:
            return tuple(entry.view for entry in self._latest)

    # --- the media thread's side -------------------------------------------------------------

    def entries(self, recording_s: float) -> tuple[RosterEntry, ...]:
        """The engine's `Roster`: the feeds present at `recording_s`, an immutable tuple."""
        with self._lock:
            while self._pending and self._pending[0][0] <= recording_s:
                self._current = self._pending.popleft()[1]
            return self._current

    def on_tick(self, report: TickReport) -> None:
        """The engine's `on_tick`: speaking and visibility into the participant timeline."""
        with self._lock:
            speaking = {
                owner
                for feed, state in report.speech.items()
                if state.speaking and (owner := self._owners.get(feed)) is not None
            }
            visible = None
            if report.shown is not None:
                visible = {owner for feed in report.shown if (owner := self._owners.get(feed))}
            for member in self._members.values():
                is_speaking = member.id in speaking
                if is_speaking != member.speaking:
                    member.speaking = is_speaking
                    self._mark(member.id, TimelineKind.SPEAKING, is_speaking, report.tick_s)
                if visible is not None and (member.id in visible) != member.visible:
                    member.visible = member.id in visible
                    self._mark(member.id, TimelineKind.VISIBLE, member.visible, report.tick_s)

    # --- inside (under the lock) -------------------------------------------------------------

    def _join(self, event: ParticipantJoined, at_s: float) -> None:
        if event.participant_id in self._members:
            return
        member = _Member(
            id=event.participant_id,
            name=event.name,
            joined_at=at_s,
            muted=event.muted,
            camera_on=event.camera_on,
        )
        self._members[member.id] = member
        for kind in TrackKind:
            self._owners[feed_id(member.id, kind)] = member.id
        self._empty_since_s = None
        if self._manifest is not None:
            self._manifest.participant_joined(member.id, member.name, at_s)
        if event.pinned:
            self._pin(member, True, at_s)
        log.info("roster: %s (%s) is present", member.id, member.name)

    def _leave(self, participant_id: str, at_s: float) -> None:
        member = self._members.pop(participant_id, None)
        if member is None:
            return
        for kind in TrackKind:
            self._owners.pop(feed_id(participant_id, kind), None)
        if self._manifest is not None:
            self._manifest.participant_left(participant_id, at_s)
        if not self._members:
            self._empty_since_s = at_s
        log.info("roster: %s (%s) left", member.id, member.name)

    def _change(self, member: _Member, event: RoomEvent, at_s: float) -> None:
        if isinstance(event, TrackPublished):
            member.published.add(event.kind)
            if event.kind is TrackKind.SCREEN:
                member.screen_since = at_s
        elif isinstance(event, TrackUnpublished):
            member.published.discard(event.kind)
            if event.kind is TrackKind.SCREEN:
                member.screen_since = None
        elif isinstance(event, MuteChanged):
            member.muted = event.muted
        elif isinstance(event, CameraChanged):
            member.camera_on = event.on
        elif isinstance(event, PinChanged):
            self._pin(member, event.pinned, at_s)

    def _pin(self, member: _Member, pinned: bool, at_s: float) -> None:
        if pinned == (member.pinned_at is not None):
            return
        member.pinned_at = at_s if pinned else None
        self._mark(member.id, TimelineKind.PINNED, pinned, at_s)

    def _mark(self, participant_id: str, kind: TimelineKind, active: bool, at_s: float) -> None:
        if self._manifest is not None:
            self._manifest.mark(participant_id, kind, active, at_s)

    def _publish(self, at_s: float) -> None:
        """A new snapshot, due at `at_s` for the media thread."""
        snapshot = tuple(entry for member in self._members.values() for entry in member.entries())
        self._latest = snapshot
        if self._pending and self._pending[-1][0] >= at_s:
            # Same instant (or an out-of-order stamp): the newer state replaces the queued one.
            at_s = self._pending[-1][0]
            self._pending.pop()
        self._pending.append((at_s, snapshot))
        while len(self._pending) > SNAPSHOT_HISTORY_LIMIT:
            self._current = self._pending.popleft()[1]
