"""The manifest `<recordingId>.json` (CONTRACT.md §5): what was recorded, how, and who was in it.

The recording feeds a `ManifestBuilder` as things happen: participants joining and leaving, tiles
becoming visible, speaking, pins, and the layout changes asked for through the control endpoint
(`layoutChanges`: `config` stays the job's, what was asked at the start, and these say what the
file shows from when). Times are seconds on the recording clock (0 = the first frame), the same
clock the media uses, so a timeline interval or a change points at the right place in the file.
`build()` gives the document at any moment (a draft while recording, the final one at the stop);
`revision` counts the changes, so that the sidecar's draft is rewritten only when there is
something new (`recorder.storage.sidecar_refresh`); `with_stored_media()` adds what only the
store knows (the object's URL, size and checksum), and the result is written after the media is
stored.

No secrets: the room's URL and token and the webhook URL (which may carry a token) are left out.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from recorder.job import Job, RecordingConfig
from recorder.lifecycle import RecordingIds, StopReason, iso_utc
from recorder.presets import AUDIO_SAMPLE_RATE_HZ, Mode
from recorder.storage.sink import StoredObject

MANIFEST_VERSION = 1
TIME_DECIMALS = 3  # milliseconds: finer than a frame (33 ms) and an audio packet (20 ms)


class TimelineKind(StrEnum):
    """The facts the timeline records, each as a list of [start, end] intervals per participant."""

    PRESENT = "present"  # in the room
    VISIBLE = "visible"  # has a tile on the canvas
    SPEAKING = "speaking"  # speaking (after the mixer's hysteresis)
    PINNED = "pinned"


@dataclass(frozen=True, slots=True)
class OutputInfo:
    """The output as applied: container, codecs, resolution, rates."""

    format: str  # "mp4" or "m4a"
    video_codec: str | None
    width: int | None
    height: int | None
    fps: int | None
    video_bitrate_bps: int | None
    audio_codec: str
    audio_sample_rate_hz: int
    audio_bitrate_bps: int

    @classmethod
    def for_job(cls, job: Job) -> OutputInfo:
        """The preset's output for the job's mode, quality and orientation (CONTRACT.md §5)."""
        config = job.config
        preset = config.preset()
        audio_only = config.mode is Mode.AUDIO
        canvas = config.canvas()
        return cls(
            format=job.media_extension.lstrip("."),
            video_codec=None if audio_only else "h264",
            width=None if audio_only else canvas.width,
            height=None if audio_only else canvas.height,
            fps=None if audio_only else preset.fps,
            video_bitrate_bps=None if audio_only else preset.video_bitrate_bps,
            audio_codec="aac",
            audio_sample_rate_hz=AUDIO_SAMPLE_RATE_HZ,
            audio_bitrate_bps=preset.audio_bitrate_bps,
        )

    def to_dict(self) -> dict[str, Any]:
        video = None
        if self.video_codec is not None:
            video = {
                "codec": self.video_codec,
                "width": self.width,
                "height": self.height,
                "fps": self.fps,
                "bitrateBps": self.video_bitrate_bps,
            }
        return {
            "format": self.format,
            "video": video,
            "audio": {
                "codec": self.audio_codec,
                "sampleRateHz": self.audio_sample_rate_hz,
                "bitrateBps": self.audio_bitrate_bps,
            },
        }


@dataclass(frozen=True, slots=True)
class LayoutChangeEntry:
    """One applied `POST /layout`: when, and what it changed.

    `layout` and `theme` are the config's as applied after the change, in the shape of
    `config.layout` / `config.theme` (both, when the request changed either; None when it only
    pinned or unpinned); `pin` / `unpin` name the participant.
    """

    at_s: float
    layout: Mapping[str, Any] | None = None
    theme: str | None = None
    pin: str | None = None
    unpin: str | None = None

    @classmethod
    def applied(
        cls,
        at_s: float,
        config: RecordingConfig | None,
        *,
        pin: str | None = None,
        unpin: str | None = None,
    ) -> LayoutChangeEntry:
        """The entry for a change whose new config is `config` (None: layout and theme kept)."""
        if config is None:
            return cls(at_s=at_s, pin=pin, unpin=unpin)
        dumped = config.model_dump(mode="json", by_alias=True)
        return cls(at_s=at_s, layout=dumped["layout"], theme=dumped["theme"], pin=pin, unpin=unpin)

    def to_dict(self) -> dict[str, Any]:
        return {
            "atS": _round(self.at_s),
            "layout": dict(self.layout) if self.layout is not None else None,
            "theme": self.theme,
            "pin": self.pin,
            "unpin": self.unpin,
        }


class _Participant:
    def __init__(self, participant_id: str, name: str) -> None:
        self.id = participant_id
        self.name = name
        self.closed: dict[TimelineKind, list[tuple[float, float]]] = {k: [] for k in TimelineKind}
        self.open: dict[TimelineKind, float] = {}

    def copy(self) -> _Participant:
        """A copy that later changes do not reach (list copies: cheap, done under the lock)."""
        twin = _Participant(self.id, self.name)
        twin.closed = {kind: list(intervals) for kind, intervals in self.closed.items()}
        twin.open = dict(self.open)
        return twin

    def intervals(self, kind: TimelineKind, until_s: float | None) -> list[list[float | None]]:
        result: list[list[float | None]] = [[_round(a), _round(b)] for a, b in self.closed[kind]]
        if kind in self.open:  # still on: closed at the end, or open-ended in a draft
            end = None if until_s is None else _round(max(until_s, self.open[kind]))
            result.append([_round(self.open[kind]), end])
        return result


@dataclass(frozen=True, slots=True)
class _State:
    """What the document is made from, copied under the builder's lock."""

    ids: RecordingIds
    started_at: datetime | None
    layout_changes: tuple[LayoutChangeEntry, ...]
    participants: tuple[_Participant, ...]


class ManifestBuilder:
    """Collects the participant timeline and the layout changes of one recording; thread-safe
    (loop and media thread)."""

    def __init__(self, job: Job, ids: RecordingIds, *, output: OutputInfo | None = None) -> None:
        self._job = job
        self._ids = ids
        self._output = output or OutputInfo.for_job(job)
        self._lock = threading.Lock()
        self._participants: dict[str, _Participant] = {}
        self._layout_changes: list[LayoutChangeEntry] = []
        self._started_at: datetime | None = None
        self._revision = 0  # bumped under the lock by every change the document shows

    @property
    def revision(self) -> int:
        """A number that changes whenever `build()` would give a different document: a writer
        that remembers the revision it wrote knows whether it has anything new to write."""
        with self._lock:
            return self._revision

    def draft(self) -> tuple[int, dict[str, Any]]:
        """The draft document and the revision it shows, read together (nothing can change in
        between, so a writer that stores both never misses a change)."""
        with self._lock:
            revision, state = self._revision, self._snapshot()
        return revision, self._render(state, None, None, None)

    def set_ids(self, ids: RecordingIds) -> None:
        """New ids (the room session became known)."""
        with self._lock:
            self._ids = ids
            self._revision += 1

    def recording_started(self, at: datetime) -> None:
        """The wall-clock time of the recording clock's 0 (the first frame)."""
        with self._lock:
            self._started_at = at
            self._revision += 1

    def participant_joined(self, participant_id: str, name: str, at_s: float) -> None:
        with self._lock:
            participant = self._participants.get(participant_id)
            renamed = participant is None or participant.name != name
            if participant is None:
                participant = self._participants[participant_id] = _Participant(
                    participant_id, name
                )
            participant.name = name
            if _turn(participant, TimelineKind.PRESENT, True, at_s) or renamed:
                self._revision += 1

    def participant_left(self, participant_id: str, at_s: float) -> None:
        """Closes every open interval of the participant: gone means not visible either."""
        with self._lock:
            participant = self._participants.get(participant_id)
            if participant is None:
                return
            closed = [_turn(participant, kind, False, at_s) for kind in TimelineKind]
            if any(closed):
                self._revision += 1

    def mark(self, participant_id: str, kind: TimelineKind, active: bool, at_s: float) -> None:
        """`kind` turns on or off for a participant; repeated reports of a state are ignored."""
        with self._lock:
            participant = self._participants.get(participant_id)
            if participant is None:  # a fact about someone not (yet) seen joining
                participant = self._participants[participant_id] = _Participant(
                    participant_id, participant_id
                )
                self._revision += 1
            if _turn(participant, kind, active, at_s):
                self._revision += 1

    def layout_changed(self, entry: LayoutChangeEntry) -> None:
        """A layout change was applied (`POST /layout`); kept in the order they came."""
        with self._lock:
            self._layout_changes.append(entry)
            self._revision += 1

    def build(
        self,
        *,
        stopped_at: datetime | None = None,
        stop_reason: StopReason | None = None,
        duration_s: float | None = None,
    ) -> dict[str, Any]:
        """The manifest now: a draft without `stopped_at`, the final one with it.

        `duration_s` is the media's duration when the encoder knows it; by default the time from
        the start to the stop. Intervals still open are closed at the duration (open-ended,
        `null`, in a draft).
        """
        with self._lock:
            state = self._snapshot()
        return self._render(state, stopped_at, stop_reason, duration_s)

    def _snapshot(self) -> _State:
        """Under the lock: copies of what changes, so that the document is made outside it (the
        media thread reports speaking and visibility through `mark` and must not wait for the
        formatting of a long timeline: ~13 ms for an hour of 50 busy participants)."""
        return _State(
            ids=self._ids,
            started_at=self._started_at,
            layout_changes=tuple(self._layout_changes),
            participants=tuple(p.copy() for p in self._participants.values()),
        )

    def _render(
        self,
        state: _State,
        stopped_at: datetime | None,
        stop_reason: StopReason | None,
        duration_s: float | None,
    ) -> dict[str, Any]:
        started_at = state.started_at
        if duration_s is None and stopped_at is not None and started_at is not None:
            duration_s = max(0.0, (stopped_at - started_at).total_seconds())
        job = self._job
        return {
            "manifestVersion": MANIFEST_VERSION,
            "recordingId": state.ids.recording_id,
            "meetingId": state.ids.meeting_id,
            "sessionId": state.ids.session_id,
            "startedAt": iso_utc(started_at) if started_at else None,
            "stoppedAt": iso_utc(stopped_at) if stopped_at else None,
            "durationS": _round(duration_s) if duration_s is not None else None,
            "stopReason": str(stop_reason) if stop_reason else None,
            "config": job.config.model_dump(mode="json", by_alias=True),
            "layoutChanges": [change.to_dict() for change in state.layout_changes],
            "awsDirPath": job.aws_dir_path,
            "limits": job.limits.model_dump(mode="json", by_alias=True),
            "room": {"connector": job.room.connector, "roomId": job.room.room_id},
            "output": {
                "key": job.media_key(),
                "manifestKey": job.manifest_key(),
                **self._output.to_dict(),
                "sizeBytes": None,
                "sha256": None,
                "url": None,
            },
            "participants": [
                {
                    "id": participant.id,
                    "name": participant.name,
                    **{str(kind): participant.intervals(kind, duration_s) for kind in TimelineKind},
                }
                for participant in state.participants
            ],
        }


def with_stored_media(manifest: Mapping[str, Any], media: StoredObject) -> dict[str, Any]:
    """The manifest with the stored media's key, URL, size and SHA-256 filled in."""
    document = dict(manifest)
    output = dict(document.get("output") or {})
    output.update(key=media.key, url=media.url, sizeBytes=media.size_bytes, sha256=media.sha256_hex)
    document["output"] = output
    return document


def _turn(participant: _Participant, kind: TimelineKind, active: bool, at_s: float) -> bool:
    """Open or close an interval; False when the participant was already in that state."""
    if active and kind not in participant.open:
        participant.open[kind] = at_s
        return True
    if not active and kind in participant.open:
        start = participant.open.pop(kind)
        participant.closed[kind].append((start, max(start, at_s)))
        return True
    return False


def _round(seconds: float) -> float:
    return round(seconds, TIME_DECIMALS)


def recovered_manifest(
    draft: Mapping[str, Any] | None,
    *,
    recording_id: str,
    media_key: str,
    manifest_key: str,
    stopped_at: datetime,
) -> dict[str, Any]:
    """A manifest for a spool whose worker died before writing the final one.

    From the draft of the sidecar when there is one (ids, config, output, the timeline and the
    layout changes as they were when the draft was last written: the worker rewrites it every
    `SIDECAR_REFRESH_S` at most while something changes), otherwise the ids and keys alone;
    `stoppedAt` is the spool's last write. The intervals the draft leaves open (`[start, null]`:
    still present, visible, speaking or pinned when it was written) are closed at `durationS`,
    the kill on the recording clock, as the final manifest closes them at the stop.
    `"recovered": true` tells readers that the timeline and the layout changes may miss what
    happened after the draft was written.
    """
    document: dict[str, Any] = (
        dict(draft)
        if draft
        else {
            "manifestVersion": MANIFEST_VERSION,
            "recordingId": recording_id,
            "startedAt": None,
            "output": {"key": media_key, "manifestKey": manifest_key},
            "layoutChanges": [],
            "participants": [],
        }
    )
    if document.get("stoppedAt") is not None:
        return document  # the final manifest, written when the recording stopped
    document["stoppedAt"] = iso_utc(stopped_at)
    started = document.get("startedAt")
    if started:
        begun = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
        duration_s = _round(max(0.0, (stopped_at - begun).total_seconds()))
        document["durationS"] = duration_s
        document["participants"] = _close_open_intervals(document.get("participants"), duration_s)
    document["recovered"] = True
    return document


def _close_open_intervals(participants: object, end_s: float) -> object:
    """The draft's participants with every `[start, null]` closed at `end_s` (or at its start,
    for one that began after it: a roster change is stamped a playout delay ahead). New lists:
    the draft is not changed. Anything not shaped like a timeline is kept as it is."""
    if not isinstance(participants, list):
        return participants
    closed: list[object] = []
    for participant in participants:
        if not isinstance(participant, Mapping):
            closed.append(participant)
            continue
        entry = dict(participant)
        for kind in TimelineKind:
            intervals = entry.get(str(kind))
            if isinstance(intervals, list):
                entry[str(kind)] = [_close_interval(interval, end_s) for interval in intervals]
        closed.append(entry)
    return closed


def _close_interval(interval: object, end_s: float) -> object:
    if not (isinstance(interval, list) and len(interval) == 2 and interval[1] is None):
        return interval
    start = interval[0]
    if not isinstance(start, int | float) or isinstance(start, bool):
        return interval
    return [start, _round(max(end_s, float(start)))]
