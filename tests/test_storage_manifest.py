"""The manifest (CONTRACT.md §5): ids, times, config, layout changes, output, timeline, no
secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from recorder.job import Job, validate_job
from recorder.layout_change import parse_layout_change
from recorder.lifecycle import RecordingIds, StopReason
from recorder.storage.manifest import (
    MANIFEST_VERSION,
    LayoutChangeEntry,
    ManifestBuilder,
    TimelineKind,
    recovered_manifest,
    with_stored_media,
)
from recorder.storage.sink import StoredObject

T0 = datetime(2026, 11, 24, 14, 0, 0, tzinfo=UTC)
SECRET_TOKEN = "room-token-SECRET"
SECRET_HOOK = "https://hooks.example.com/in?key=hook-SECRET"


def job(**overrides: object) -> Job:
    data: dict[str, object] = {
        "recordingId": "rec-1",
        "awsDirPath": "team",
        "webhookUrl": SECRET_HOOK,
        "config": {"layout": {"type": "spotlight"}, "quality": "high"},
        "room": {
            "connector": "janus",
            "url": "wss://janus.example.com/?apisecret=url-SECRET",
            "roomId": 1234,
            "token": SECRET_TOKEN,
        },
    }
    data.update(overrides)
    return validate_job(data)


def builder(**overrides: object) -> ManifestBuilder:
    return ManifestBuilder(
        job(**overrides),
        RecordingIds(recording_id="rec-1", meeting_id="1234", session_id="s-1"),
    )


def test_the_final_manifest_holds_ids_times_config_and_output() -> None:
    manifest = builder()
    manifest.recording_started(T0)
    document = manifest.build(
        stopped_at=T0 + timedelta(seconds=95.5), stop_reason=StopReason.CONTROL
    )
    assert document["manifestVersion"] == MANIFEST_VERSION
    assert (document["recordingId"], document["meetingId"], document["sessionId"]) == (
        "rec-1",
        "1234",
        "s-1",
    )
    assert document["startedAt"] == "2026-11-24T14:00:00.000Z"
    assert document["stoppedAt"] == "2026-11-24T14:01:35.500Z"
    assert document["durationS"] == 95.5
    assert document["stopReason"] == "control"
    assert document["config"]["layout"] == {
        "type": "SPOTLIGHT",
        "priority": "SPEAKER",
        "gridSize": 4,
    }
    assert document["config"]["quality"] == "high"
    assert document["awsDirPath"] == "team"
    assert document["room"] == {"connector": "janus", "roomId": 1234}
    output = document["output"]
    assert output["key"] == "team/rec-1.mp4" and output["manifestKey"] == "team/rec-1.json"
    assert output["format"] == "mp4"
    assert output["video"] == {
        "codec": "h264",
        "width": 1920,
        "height": 1080,
        "fps": 30,
        "bitrateBps": 4_500_000,
    }
    assert output["audio"] == {"codec": "aac", "sampleRateHz": 48_000, "bitrateBps": 160_000}
    assert document["layoutChanges"] == []  # nothing changed: an empty list, not a missing one


def test_no_secret_reaches_the_manifest() -> None:
    manifest = builder()
    manifest.recording_started(T0)
    text = json.dumps(manifest.build(stopped_at=T0 + timedelta(seconds=1)))
    assert "SECRET" not in text


def test_audio_recordings_have_no_video_output() -> None:
    document = builder(config={"mode": "AUDIO", "quality": "low"}).build()
    assert document["output"]["format"] == "m4a"
    assert document["output"]["key"] == "team/rec-1.m4a"
    assert document["output"]["video"] is None
    assert document["output"]["audio"]["bitrateBps"] == 96_000


def test_the_timeline_records_intervals_and_closes_them_at_the_end() -> None:
    manifest = builder()
    manifest.recording_started(T0)
    manifest.participant_joined("p1", "Ann", 0.0)
    manifest.mark("p1", TimelineKind.VISIBLE, True, 0.0)
    manifest.mark("p1", TimelineKind.SPEAKING, True, 2.0)
    manifest.mark("p1", TimelineKind.SPEAKING, True, 2.5)  # repeated report: ignored
    manifest.mark("p1", TimelineKind.SPEAKING, False, 4.25)
    manifest.participant_joined("p2", "Bob", 3.0)
    manifest.mark("p2", TimelineKind.PINNED, True, 5.0)
    manifest.mark("p2", TimelineKind.VISIBLE, True, 5.0)
    manifest.mark("p1", TimelineKind.VISIBLE, False, 5.0)  # Bob pinned takes Ann's place
    manifest.participant_left("p2", 8.0)  # closes everything of Bob's
    manifest.participant_joined("p2", "Bob (phone)", 9.0)  # back, renamed
    manifest.mark("p1", TimelineKind.SPEAKING, True, 9.5)

    draft = manifest.build()
    ann = draft["participants"][0]
    assert ann["speaking"] == [[2.0, 4.25], [9.5, None]]  # still open in a draft

    document = manifest.build(stopped_at=T0 + timedelta(seconds=10))
    ann, bob = document["participants"]
    assert ann == {
        "id": "p1",
        "name": "Ann",
        "present": [[0.0, 10.0]],
        "visible": [[0.0, 5.0]],
        "speaking": [[2.0, 4.25], [9.5, 10.0]],
        "pinned": [],
    }
    assert bob == {
        "id": "p2",
        "name": "Bob (phone)",
        "present": [[3.0, 8.0], [9.0, 10.0]],
        "visible": [[5.0, 8.0]],
        "speaking": [],
        "pinned": [[5.0, 8.0]],
    }


def test_layout_changes_are_kept_in_order_with_the_config_as_applied() -> None:
    manifest = builder()
    manifest.recording_started(T0)
    manifest.participant_joined("p1", "Ann", 0.0)
    asked = job()
    switched = parse_layout_change(
        {"layout": {"type": "grid", "gridSize": 2}, "theme": "light"}, asked, asked.config
    ).config
    assert switched is not None
    manifest.layout_changed(LayoutChangeEntry.applied(3.21049, switched))
    manifest.mark("p1", TimelineKind.PINNED, True, 4.5)
    manifest.layout_changed(LayoutChangeEntry.applied(4.5, None, pin="p1"))
    themed = parse_layout_change({"theme": "dark"}, asked, switched).config
    manifest.layout_changed(LayoutChangeEntry.applied(6.0, themed, unpin="p1"))
    manifest.mark("p1", TimelineKind.PINNED, False, 6.0)

    document = manifest.build(stopped_at=T0 + timedelta(seconds=10))
    grid = {"type": "GRID", "priority": "SPEAKER", "gridSize": 2}
    assert document["layoutChanges"] == [
        # Milliseconds, like the timeline; both layout and theme as applied after the change.
        {"atS": 3.21, "layout": grid, "theme": "LIGHT", "pin": None, "unpin": None},
        {"atS": 4.5, "layout": None, "theme": None, "pin": "p1", "unpin": None},
        {"atS": 6.0, "layout": grid, "theme": "DARK", "pin": None, "unpin": "p1"},
    ]
    # `config` stays what the job asked for; the pins are in the timeline as well.
    assert document["config"]["layout"]["type"] == "SPOTLIGHT"
    assert document["config"]["theme"] == "DEFAULT"
    assert document["participants"][0]["pinned"] == [[4.5, 6.0]]
    assert json.loads(json.dumps(document)) == document  # plain JSON, no shared dicts
    document["layoutChanges"][0]["layout"]["gridSize"] = 4
    assert manifest.build()["layoutChanges"][0]["layout"]["gridSize"] == 2


def test_stored_media_facts_are_added_after_storage() -> None:
    document = builder().build(stopped_at=T0)
    media = StoredObject(
        key="team/rec-1.mp4",
        url="https://b.s3.us-east-1.amazonaws.com/team/rec-1.mp4",
        size_bytes=1234,
        sha256_hex="ab" * 32,
        content_type="video/mp4",
        verified=("size",),
    )
    final = with_stored_media(document, media)
    assert final["output"]["sizeBytes"] == 1234
    assert final["output"]["sha256"] == "ab" * 32
    assert final["output"]["url"] == media.url
    assert final["output"]["video"] == document["output"]["video"]
    assert document["output"]["sizeBytes"] is None  # the input is not changed


def test_recovered_manifests_complete_a_draft_and_keep_a_final_one() -> None:
    manifest = builder()
    manifest.recording_started(T0)
    manifest.participant_joined("p1", "Ann", 0.0)
    manifest.layout_changed(LayoutChangeEntry.applied(1.5, None, pin="p1"))
    died_at = T0 + timedelta(seconds=42)
    recovered = recovered_manifest(
        manifest.build(),
        recording_id="rec-1",
        media_key="team/rec-1.mp4",
        manifest_key="team/rec-1.json",
        stopped_at=died_at,
    )
    assert recovered["recovered"] is True
    assert recovered["stoppedAt"] == "2026-11-24T14:00:42.000Z"
    assert recovered["durationS"] == 42.0
    assert recovered["layoutChanges"] == [
        {"atS": 1.5, "layout": None, "theme": None, "pin": "p1", "unpin": None}
    ]
    final = manifest.build(stopped_at=T0 + timedelta(seconds=30))
    kept = recovered_manifest(
        final,
        recording_id="rec-1",
        media_key="team/rec-1.mp4",
        manifest_key="team/rec-1.json",
        stopped_at=died_at,
    )
    assert kept == final
    bare = recovered_manifest(
        None, recording_id="r", media_key="p/r.mp4", manifest_key="p/r.json", stopped_at=died_at
    )
    assert bare["recordingId"] == "r" and bare["output"]["key"] == "p/r.mp4"
    assert bare["recovered"] is True and bare["startedAt"] is None
    assert bare["layoutChanges"] == [] and bare["participants"] == []


def test_a_recovered_manifest_closes_the_drafts_open_intervals_at_the_kill() -> None:
    """The draft leaves open what was still on when it was written (`null` ends); recovery
    closes them at `durationS` (the spool's last write), as the stop closes them at the end."""
    manifest = builder()
    manifest.recording_started(T0)
    manifest.participant_joined("p1", "Ann", 0.0)
    manifest.mark("p1", TimelineKind.SPEAKING, True, 2.0)
    manifest.mark("p1", TimelineKind.SPEAKING, False, 4.0)
    manifest.mark("p1", TimelineKind.SPEAKING, True, 30.0)
    manifest.participant_joined("p2", "Bob", 10.0)
    manifest.participant_left("p2", 20.0)
    # Stamped a playout delay ahead, past the spool's last write: closed where it began.
    manifest.mark("p1", TimelineKind.PINNED, True, 42.1)
    draft = manifest.build()
    snapshot = json.loads(json.dumps(draft))

    recovered = recovered_manifest(
        draft,
        recording_id="rec-1",
        media_key="team/rec-1.mp4",
        manifest_key="team/rec-1.json",
        stopped_at=T0 + timedelta(seconds=42),
    )
    ann, bob = recovered["participants"]
    assert recovered["durationS"] == 42.0
    assert ann["present"] == [[0.0, 42.0]]
    assert ann["speaking"] == [[2.0, 4.0], [30.0, 42.0]]
    assert ann["pinned"] == [[42.1, 42.1]]
    assert bob["present"] == [[10.0, 20.0]]  # closed in the draft: kept
    assert draft == snapshot  # the draft itself is not changed
    # What no draft says anything about is left alone: no start time, no duration to close at.
    unknown = recovered_manifest(
        {**snapshot, "startedAt": None},
        recording_id="rec-1",
        media_key="team/rec-1.mp4",
        manifest_key="team/rec-1.json",
        stopped_at=T0,
    )
    assert unknown["participants"][0]["present"] == [[0.0, None]]
