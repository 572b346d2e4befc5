"""Webhook bodies in the platform's shape (CONTRACT.md §4).

`{"webhookType": "recording-started", "data": {meetingId, sessionId, recordingId, status,
sequence, timestamp, ...}}`. STOPPED adds where the file is and what it is (`stopped_details`,
which the recording passes to `Lifecycle.stopped`); FAILED adds `reason` with a stable `code`, a
readable `message`, whose fault it is, and `localPath` where a local copy survives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recorder.lifecycle import Status, Transition, iso_utc
from recorder.storage.delivery import DeliveredRecording


def payload_for(transition: Transition) -> dict[str, Any]:
    """The webhook body of one status change."""
    ids = transition.ids
    data: dict[str, Any] = {
        "meetingId": ids.meeting_id,
        "sessionId": ids.session_id,
        "recordingId": ids.recording_id,
        "status": str(transition.status),
        "sequence": transition.sequence,
        "timestamp": iso_utc(transition.at),
    }
    if transition.stop_reason is not None:
        data["stopReason"] = str(transition.stop_reason)
    if transition.status is Status.FAILED:
        if transition.error is not None:
            data["reason"] = transition.error.as_reason()
        else:  # not reachable through Lifecycle.fail; kept so FAILED always carries a reason
            data["reason"] = {"code": "INTERNAL", "message": "failed"}
    data.update(transition.details)
    return {"webhookType": transition.status.webhook_type, "data": data}


def stopped_details(delivered: DeliveredRecording) -> dict[str, Any]:
    """What `recording-stopped` says about the stored file (pass to `Lifecycle.stopped`)."""
    document: Mapping[str, Any] = delivered.manifest_document
    output: Mapping[str, Any] = document.get("output") or {}
    video: Mapping[str, Any] | None = output.get("video")
    audio: Mapping[str, Any] | None = output.get("audio")
    return {
        "filePath": delivered.media.key,
        "fileUrl": delivered.media.url,
        "fileSize": delivered.media.size_bytes,
        "duration": document.get("durationS"),
        "format": output.get("format"),
        "codecs": {
            "video": video.get("codec") if video else None,
            "audio": audio.get("codec") if audio else None,
        },
        "resolution": {"width": video["width"], "height": video["height"]} if video else None,
        "manifestKey": delivered.manifest.key,
        "manifestUrl": delivered.manifest.url,
        "sha256": delivered.media.sha256_hex,
    }
