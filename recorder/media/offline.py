"""The offline room: test participants joining and leaving on a script, fed to the media engine.

`recorder render`, the pipeline benchmark and the end-to-end tests record a room that exists only
as a script: each participant is a `ParticipantSource` (synthetic camera and microphone, a
clapper, a media file) with a join time and an optional leave time. `ScriptedRoom` is both the
engine's roster (who is present at a time) and its feeder (before each tick it pushes every
source frame due before the tick's end into the timeline, as if it had arrived exactly on time),
so the live loop runs unchanged on a virtual clock.

Offline there is no network jitter, so `OFFLINE_PLAYOUT` sets the playout delay to zero: a
source frame at t seconds is in the file at t seconds, which is what tests compare against.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av

from layouts.model import LayoutSpec, ParticipantView
from recorder.media.clock import ManualClock, RecordingClock
from recorder.media.encoder import Encoder, EncoderSettings
from recorder.media.engine import EngineStats, MediaEngine, RosterEntry
from recorder.media.timeline import AudioFeed, PlayoutSettings, Timeline, VideoFeed, media_time_s
from recorder.rooms.base import TrackKind, feed_id
from recorder.testing.clapper import clapper_participant
from recorder.testing.sources import (
    AudioFormat,
    ParticipantSource,
    Sound,
    VideoFormat,
    synthetic_participant,
)
from recorder.testing.stills import StillSpec, demo_name
from recorder.testing.stills import feed_id as stills_feed_id

log = logging.getLogger(__name__)

OFFLINE_PLAYOUT = PlayoutSettings(playout_delay_s=0.0)
CAMERA_FORMAT = VideoFormat(1280, 720, 30)  # what `scripted_participants` gives each camera


@dataclass(frozen=True, slots=True)
class ScriptedParticipant:
    """A participant of the script: present from `join_s` until `leave_s` (None: to the end)."""

    participant_id: str
    source: ParticipantSource
    join_s: float = 0.0
    leave_s: float | None = None
    muted: bool = False
    pinned_at: float | None = None

    @property
    def camera_feed(self) -> str:
        return feed_id(self.participant_id, TrackKind.CAMERA)

    @property
    def audio_feed(self) -> str:
        return feed_id(self.participant_id, TrackKind.AUDIO)

    def present_at(self, recording_s: float) -> bool:
        return self.join_s <= recording_s and (self.leave_s is None or recording_s < self.leave_s)


@dataclass(slots=True)
class _Track:
    """One track's frames in time order, with the next one kept back until it is due."""

    frames: Iterator[av.VideoFrame] | Iterator[av.AudioFrame]
    pending: av.VideoFrame | av.AudioFrame | None = None
    pending_s: float = 0.0
    ended: bool = False


@dataclass(slots=True)
class _Stream:
    """One participant's tracks. Each track is pushed in its own time order; the order between
    a participant's audio and video does not matter, as every push carries its arrival time and
    each feed has its own anchor (so no merge of the two is needed)."""

    participant: ScriptedParticipant
    video: _Track | None
    audio: _Track | None
    joined: bool = False
    ended: bool = False


def _stream(participant: ScriptedParticipant, with_video: bool) -> _Stream:
    source, join_s, leave_s = participant.source, participant.join_s, participant.leave_s
    video = audio = None
    if with_video and source.video_format is not None:
        video = _Track(iter(source.video_frames(join_s, leave_s)))
    if source.audio_format is not None:
        audio = _Track(iter(source.audio_frames(join_s, leave_s)))
    return _Stream(participant, video, audio)


def _roster_entry(p: ScriptedParticipant) -> RosterEntry:
    return RosterEntry(
        ParticipantView(
            id=p.camera_feed,
            name=p.source.name,
            video_on=p.source.video_format is not None,
            muted=p.muted,
            pinned_at=p.pinned_at,
            joined_at=p.join_s,
        ),
        p.audio_feed if p.source.audio_format is not None else None,
    )


def _time_s(frame: av.VideoFrame | av.AudioFrame) -> float:
    time_s = media_time_s(frame)
    if time_s is None:
        raise ValueError("a scripted source gave a frame without pts/time_base")
    return time_s


class ScriptedRoom:
    """The engine's `Roster` and feeder for a scripted room (see the module docstring)."""

    def __init__(
        self,
        participants: Sequence[ScriptedParticipant],
        timeline: Timeline,
        *,
        with_video: bool = True,
    ) -> None:
        """`with_video=False` (audio recordings) never makes the sources' video frames."""
        ids = [p.participant_id for p in participants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"participant ids must be unique: {ids}")
        self.participants = tuple(participants)
        self.timeline = timeline
        self._streams = [_stream(p, with_video) for p in self.participants]
        self._with_video = with_video
        # A scripted participant's view never changes (the engine adds the speech states), so
        # each roster entry is made once, not every tick.
        self._entries = [(p, _roster_entry(p)) for p in self.participants]
        self._video: dict[str, VideoFeed] = {}  # by participant id, once joined
        self._audio: dict[str, AudioFeed] = {}

    def entries(self, recording_s: float) -> list[RosterEntry]:
        """The camera feeds present at `recording_s`."""
        return [entry for p, entry in self._entries if p.present_at(recording_s)]

    def feed_until(self, until_s: float) -> None:
        """Push every frame of every present participant due before `until_s`; end the feeds of
        those who left before it."""
        for stream in self._streams:
            participant = stream.participant
            if stream.ended:
                continue
            if not stream.joined and participant.join_s < until_s:
                self._add_feeds(participant, self._with_video)
                stream.joined = True
            if not stream.joined:
                continue
            pid = participant.participant_id
            if stream.video is not None:
                self._push_due(stream.video, self._video[pid].push, until_s)
            if stream.audio is not None:
                self._push_due(stream.audio, self._audio[pid].push, until_s)
            if participant.leave_s is not None and participant.leave_s < until_s:
                self.timeline.remove_video_feed(participant.camera_feed)
                self.timeline.remove_audio_feed(participant.audio_feed)
                stream.ended = True

    def _push_due(
        self,
        track: _Track,
        push: Callable[[av.VideoFrame | av.AudioFrame, float], None],
        until_s: float,
    ) -> None:
        """Push the track's frames due before `until_s`, each arriving exactly on its time."""
        to_clock_s = self.timeline.recording_clock.to_clock_s
        while not track.ended:
            if track.pending is None:
                track.pending = next(track.frames, None)
                if track.pending is None:
                    track.ended = True
                    break
                track.pending_s = _time_s(track.pending)
            if track.pending_s >= until_s:
                break
            push(track.pending, to_clock_s(track.pending_s))
            track.pending = None

    def _add_feeds(self, participant: ScriptedParticipant, with_video: bool) -> None:
        if with_video and participant.source.video_format is not None:
            self._video[participant.participant_id] = self.timeline.add_video_feed(
                participant.camera_feed, participant.participant_id
            )
        if participant.source.audio_format is not None:
            self._audio[participant.participant_id] = self.timeline.add_audio_feed(
                participant.audio_feed, participant.participant_id
            )


ProgressCallback = Callable[[float], None]  # recording seconds made so far


def render(
    path: Path,
    participants: Sequence[ScriptedParticipant],
    settings: EncoderSettings,
    layout: LayoutSpec,
    duration_s: float,
    *,
    progress: ProgressCallback | None = None,
) -> EngineStats:
    """Record the scripted room for `duration_s` into `path`: the whole offline pipeline.

    `progress` is called before each tick with the recording time reached.
    """
    clock = RecordingClock(ManualClock(), settings.fps)
    timeline = Timeline(clock, OFFLINE_PLAYOUT)
    room = ScriptedRoom(participants, timeline, with_video=settings.has_video)

    def feed(until_s: float) -> None:
        room.feed_until(until_s)
        if progress is not None:
            progress(until_s)

    engine = MediaEngine(
        clock=clock,
        timeline=timeline,
        roster=room,
        encoder=Encoder(path, settings),
        layout=layout,
        feeder=feed,
    )
    started = time.perf_counter()
    stats = engine.run(threading.Event(), duration_s)
    log.info("render: %s in %.2f s: %s", path, time.perf_counter() - started, stats.summary())
    return stats


def scripted_participants(
    spec: StillSpec,
    *,
    clapper: bool = False,
    sound: Sound = Sound.SPEECH,
    join_every_s: float = 0.0,
) -> list[ScriptedParticipant]:
    """The room of a `StillSpec` as a script: participant n (from 1) joins at (n - 1) times
    `join_every_s`, with a synthetic camera (portrait if asked; none if their video is off) and
    a microphone of `sound` (none if muted); with `clapper`, participant 1 is the clapper."""
    participants = []
    for number in range(1, spec.participants + 1):
        name = demo_name(number)
        camera = None if number in spec.video_off else CAMERA_FORMAT
        if camera is not None and number in spec.portrait_sources:
            camera = VideoFormat(camera.height, camera.width, camera.fps)
        microphone = None if number in spec.muted else AudioFormat()
        if clapper and number == 1:
            source: ParticipantSource = clapper_participant(name, camera, microphone)
        else:
            source = synthetic_participant(number - 1, name, camera, microphone, sound=sound)
        participants.append(
            ScriptedParticipant(
                participant_id=stills_feed_id(number),
                source=source,
                join_s=(number - 1) * join_every_s,
                muted=number in spec.muted,
            )
        )
    return participants
