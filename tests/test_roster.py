"""The roster: connector events in, the media thread's feeds and the manifest's timeline out.

Events are made the way a connector makes them (with real aiortc tracks, which the roster never
reads); times are readings of a clock whose recording time 0 is at `ORIGIN_S`, so every test also
checks the conversion. No network, no media thread: `entries` and `on_tick` are called as the
engine calls them.
"""

from __future__ import annotations

import pytest
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from layouts.model import ParticipantView
from recorder.job import validate_job
from recorder.lifecycle import RecordingIds
from recorder.media.engine import TickReport
from recorder.media.mixer import SpeechState
from recorder.rooms.base import (
    CameraChanged,
    MuteChanged,
    ParticipantJoined,
    ParticipantLeft,
    PinChanged,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
    feed_id,
)
from recorder.roster import SNAPSHOT_HISTORY_LIMIT, RoomRoster, UnknownParticipantError
from recorder.storage.manifest import ManifestBuilder

ORIGIN_S = 100.0  # the connector clock's reading at recording time 0
# Where a test asks for the roster at exactly an event's time, that time is a multiple of 1/4 s:
# exact in binary, so the change is seen at exactly its own time after the conversion.


class Clock:
    """The recording time `now_s` answers for changes without a time (control pins)."""

    def __init__(self) -> None:
        self.now = 0.0


def make_roster(clock: Clock | None = None) -> tuple[RoomRoster, ManifestBuilder]:
    job = validate_job(
        {"recordingId": "r1", "room": {"connector": "loopback", "url": "ws://x", "roomId": "a"}}
    )
    manifest = ManifestBuilder(job, RecordingIds("r1", "a"))
    clock = clock or Clock()
    roster = RoomRoster(
        to_recording_s=lambda reading: reading - ORIGIN_S,
        now_s=lambda: clock.now,
        manifest=manifest,
    )
    return roster, manifest


def at(recording_s: float) -> float:
    """A connector clock reading at `recording_s`."""
    return ORIGIN_S + recording_s


def publish(roster: RoomRoster, pid: str, kind: TrackKind, t: float) -> None:
    track = AudioStreamTrack() if kind is TrackKind.AUDIO else VideoStreamTrack()
    roster.apply(TrackPublished(pid, kind, track, at_s=at(t)))


def views_at(roster: RoomRoster, t: float) -> dict[str, ParticipantView]:
    return {entry.view.id: entry.view for entry in roster.entries(t)}


def test_a_participant_becomes_camera_and_screen_feeds_with_their_state() -> None:
    roster, _ = make_roster()
    roster.apply(ParticipantJoined("p1", "Alice", at_s=at(1.0)))
    publish(roster, "p1", TrackKind.CAMERA, 1.25)
    camera = feed_id("p1", TrackKind.CAMERA)
    alice = views_at(roster, 1.25)[camera]
    # A camera without a microphone is drawn muted; its joining time is on the recording clock.
    assert (alice.name, alice.video_on, alice.muted, alice.joined_at) == ("Alice", True, True, 1.0)
    (entry,) = roster.entries(1.25)
    assert entry.audio_feed_id == feed_id("p1", TrackKind.AUDIO)

    publish(roster, "p1", TrackKind.AUDIO, 1.5)
    assert views_at(roster, 1.5)[camera].muted is False
    roster.apply(MuteChanged("p1", True, at_s=at(1.75)))
    assert views_at(roster, 1.75)[camera].muted is True
    roster.apply(CameraChanged("p1", False, at_s=at(2.0)))
    assert views_at(roster, 2.0)[camera].video_on is False  # the avatar, at once

    publish(roster, "p1", TrackKind.SCREEN, 2.5)
    screen = views_at(roster, 2.5)[feed_id("p1", TrackKind.SCREEN)]
    assert (screen.screen_of, screen.joined_at, screen.video_on) == (camera, 2.5, True)
    (_, screen_entry) = roster.entries(2.5)
    assert screen_entry.audio_feed_id is None  # the share has no voice of its own
    roster.apply(TrackUnpublished("p1", TrackKind.SCREEN, at_s=at(3.0)))
    assert list(views_at(roster, 3.0)) == [camera]
    assert isinstance(roster.entries(3.0), tuple)


def test_the_media_thread_sees_each_change_from_its_own_time_on() -> None:
    """The engine asks one playout delay behind the tick: a change is not seen before it happened
    on the recording clock, and is seen from then on, even when asked later."""
    roster, _ = make_roster()
    roster.apply(ParticipantJoined("p1", "Alice", at_s=at(1.0)))
    roster.apply(ParticipantJoined("p2", "Bob", at_s=at(2.0)))
    roster.apply(ParticipantLeft("p1", at_s=at(3.0)))
    # The latest state is known at once (for /status) ...
    assert [view.name for view in roster.snapshot()] == ["Bob"]
    # ... while the media thread walks through the history in time order.
    assert roster.entries(0.5) == ()
    assert [e.view.name for e in roster.entries(1.0)] == ["Alice"]
    assert [e.view.name for e in roster.entries(2.5)] == ["Alice", "Bob"]
    assert [e.view.name for e in roster.entries(3.0)] == ["Bob"]
    assert [e.view.name for e in roster.entries(9.0)] == ["Bob"]


def test_unread_history_is_bounded_and_ends_at_the_latest_state() -> None:
    roster, _ = make_roster()
    for index in range(SNAPSHOT_HISTORY_LIMIT * 2):
        roster.apply(MuteChanged("nobody", True, at_s=at(0.0)))  # ignored: not present
        roster.apply(ParticipantJoined(f"p{index}", f"P{index}", at_s=at(index * 0.01)))
    assert len(roster._pending) <= SNAPSHOT_HISTORY_LIMIT
    assert len(roster.entries(1e9)) == SNAPSHOT_HISTORY_LIMIT * 2


def test_pins_keep_their_order_from_the_room_and_from_the_control_endpoint() -> None:
    clock = Clock()
    roster, manifest = make_roster(clock)
    for pid, name in (("p1", "Alice"), ("p2", "Bob"), ("p3", "Carol")):
        roster.apply(ParticipantJoined(pid, name, pinned=pid == "p3", at_s=at(0.5)))
    roster.apply(PinChanged("p2", True, at_s=at(1.0)))
    clock.now = 2.0
    assert roster.set_pinned("p1", True) == 2.0
    assert roster.pinned() == ["p3", "p2", "p1"]
    assert views_at(roster, 2.0)[feed_id("p2", TrackKind.CAMERA)].pinned_at == 1.0
    clock.now = 3.0
    roster.set_pinned("p3", False)  # for this recording only: the room is not told
    assert roster.pinned() == ["p2", "p1"]
    with pytest.raises(UnknownParticipantError):
        roster.set_pinned("p9", True)
    people = {p["id"]: p for p in manifest.build(duration_s=4.0)["participants"]}
    assert people["p3"]["pinned"] == [[0.5, 3.0]]
    assert people["p2"]["pinned"] == [[1.0, 4.0]]
    assert people["p1"]["pinned"] == [[2.0, 4.0]]


def test_ticks_turn_speech_and_drawn_feeds_into_the_manifest_timeline() -> None:
    roster, manifest = make_roster()
    roster.apply(ParticipantJoined("p1", "Alice", at_s=at(0.2)))
    roster.apply(ParticipantJoined("p2", "Bob", at_s=at(0.2)))
    alice_mic, alice_cam = feed_id("p1", TrackKind.AUDIO), feed_id("p1", TrackKind.CAMERA)
    bob_cam, bob_screen = feed_id("p2", TrackKind.CAMERA), feed_id("p2", TrackKind.SCREEN)
    talking = {alice_mic: SpeechState(-20.0, True, 1.0)}
    quiet = {alice_mic: SpeechState(-70.0, False, 1.0)}
    roster.on_tick(TickReport(30, 1.0, talking, (alice_cam, bob_cam)))
    roster.on_tick(TickReport(45, 1.5, talking, None))  # a late tick: nothing drawn, no change
    roster.on_tick(TickReport(60, 2.0, quiet, (bob_screen,)))  # Bob's share only
    assert {p.id: (p.speaking, p.visible) for p in roster.present()} == {
        "p1": (False, False),
        "p2": (False, True),
    }
    roster.apply(ParticipantLeft("p2", at_s=at(2.5)))
    roster.on_tick(TickReport(90, 3.0, quiet, (bob_screen, alice_cam)))  # Bob's share drains
    people = {p["id"]: p for p in manifest.build(duration_s=4.0)["participants"]}
    assert people["p1"]["speaking"] == [[1.0, 2.0]]
    assert people["p1"]["visible"] == [[1.0, 2.0], [3.0, 4.0]]
    assert people["p2"]["visible"] == [[1.0, 2.5]]  # closed when he left, not reopened
    assert people["p2"]["present"] == [[0.2, 2.5]]
    assert people["p2"]["speaking"] == []


def test_the_room_is_empty_from_the_start_until_someone_joins_and_after_the_last_leaves() -> None:
    roster, _ = make_roster()
    assert roster.empty_since_s == 0.0
    roster.apply(ParticipantJoined("p1", "Alice", at_s=at(1.0)))
    roster.apply(ParticipantJoined("p2", "Bob", at_s=at(1.5)))
    assert roster.empty_since_s is None
    roster.apply(ParticipantLeft("p1", at_s=at(2.0)))
    assert roster.empty_since_s is None
    roster.apply(ParticipantLeft("p2", at_s=at(3.0)))
    assert roster.empty_since_s == 3.0
    # Events stamped before the first tick (the join's snapshot) count from 0.
    roster.apply(ParticipantJoined("p3", "Carol", at_s=at(-0.3)))
    assert views_at(roster, 9.0)[feed_id("p3", TrackKind.CAMERA)].joined_at == 0.0
