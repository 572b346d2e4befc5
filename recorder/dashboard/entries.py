"""What the page shows of one recording, read from its manifest (docs/delivery.md, "Manifest").

A manifest is untrusted input: a file anyone with write access to the bucket or directory may
have written. `entry_from_manifest` reads only the fields the page shows, tolerates any of them
missing or of the wrong type (shown as unknown), and refuses a document whose media would not
sit next to it under the contract's keys (`P/R.json` describes `P/R.mp4` or `P/R.m4a`), so a
manifest can never point the dashboard at another object.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recorder.storage.keys import (
    MANIFEST_EXTENSION,
    MEDIA_CONTENT_TYPES,
    UnsafeKeyError,
    split_media_key,
)

MAX_NAME_CHARS = 200  # a longer participant name is cut for the page


@dataclass(frozen=True, slots=True)
class ParticipantSummary:
    """A participant as listed: their name and how long they were present."""

    name: str
    present_s: float


@dataclass(frozen=True, slots=True)
class RecordingEntry:
    """One recording as the page lists it; None where the manifest does not say."""

    manifest_key: str
    media_key: str
    recording_id: str
    started_at: datetime | None
    duration_s: float | None
    size_bytes: int | None
    sha256: str | None
    layout: str | None
    theme: str | None
    quality: str | None
    mode: str | None
    width: int | None
    height: int | None
    stop_reason: str | None
    recovered: bool
    participants: tuple[ParticipantSummary, ...]

    @property
    def has_video(self) -> bool:
        return self.media_key.endswith(".mp4")

    @property
    def content_type(self) -> str:
        return MEDIA_CONTENT_TYPES["." + self.media_key.rsplit(".", 1)[-1]]

    @property
    def fingerprint(self) -> str:
        """Changes whenever the media could have: the key for cached thumbnails."""
        identity = f"{self.media_key}\0{self.size_bytes}\0{self.sha256}\0{self.duration_s}"
        return hashlib.sha256(identity.encode("utf-8")).hexdigest()


def media_keys_for(manifest_key: str) -> tuple[str, ...]:
    """The keys the media of `manifest_key` may have: `P/R.json` -> `P/R.mp4`, `P/R.m4a`."""
    stem = manifest_key.removesuffix(MANIFEST_EXTENSION)
    return tuple(stem + extension for extension in MEDIA_CONTENT_TYPES)


def entry_from_manifest(manifest_key: str, document: object) -> RecordingEntry | None:
    """The entry a manifest describes; None when the document is not one of our manifests."""
    if not isinstance(document, Mapping) or not isinstance(document.get("manifestVersion"), int):
        return None
    output = _mapping(document.get("output"))
    media_key = output.get("key")
    if media_key not in media_keys_for(manifest_key):
        return None
    try:
        split_media_key(media_key)  # the checks a job's keys pass: safe prefix and recording id
    except UnsafeKeyError:
        return None
    config = _mapping(document.get("config"))
    video = _mapping(output.get("video"))
    return RecordingEntry(
        manifest_key=manifest_key,
        media_key=media_key,
        recording_id=_text(document.get("recordingId")) or manifest_key,
        started_at=_timestamp(document.get("startedAt")),
        duration_s=_number(document.get("durationS")),
        size_bytes=_integer(output.get("sizeBytes")),
        sha256=_text(output.get("sha256")),
        layout=_text(_mapping(config.get("layout")).get("type")),
        theme=_text(config.get("theme")),
        quality=_text(config.get("quality")),
        mode=_text(config.get("mode")),
        width=_integer(video.get("width")),
        height=_integer(video.get("height")),
        stop_reason=_text(document.get("stopReason")),
        recovered=document.get("recovered") is True,
        participants=_participants(document.get("participants")),
    )


def newest_first(entries: list[RecordingEntry]) -> list[RecordingEntry]:
    """By start time, newest first; recordings without one last, by key."""

    def order(entry: RecordingEntry) -> tuple[bool, float, str]:
        started = entry.started_at
        return (started is None, -started.timestamp() if started else 0.0, entry.manifest_key)

    return sorted(entries, key=order)


def _participants(value: object) -> tuple[ParticipantSummary, ...]:
    if not isinstance(value, list):
        return ()
    result = []
    for item in value:
        participant = _mapping(item)
        name = _text(participant.get("name")) or _text(participant.get("id")) or "?"
        result.append(ParticipantSummary(name=name[:MAX_NAME_CHARS], present_s=_total(participant)))
    return tuple(result)


def _total(participant: Mapping[str, Any]) -> float:
    """Seconds present: the sum of the closed `present` intervals."""
    intervals = participant.get("present")
    total = 0.0
    for interval in intervals if isinstance(intervals, list) else ():
        if isinstance(interval, list) and len(interval) == 2:
            start, end = _number(interval[0]), _number(interval[1])
            if start is not None and end is not None and end > start:
                total += end - start
    return total


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
