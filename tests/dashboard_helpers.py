"""Recordings for the dashboard's tests: rendered offline, stored by the storage code itself.

`render_media` records a small scripted room with the offline pipeline (the same engine as the
worker). `store_recording` delivers a copy of it exactly as a worker does at its stop
(`RecordingDelivery`: media, verification, then the manifest from `ManifestBuilder`), into any
sink, so the dashboard reads what production writes. `serve` runs the dashboard's application
on a free port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from layouts.model import Orientation
from recorder.dashboard.server import dashboard_app
from recorder.dashboard.stores import RecordingStore
from recorder.dashboard.thumbnails import ThumbnailCache
from recorder.job import validate_job
from recorder.lifecycle import RecordingIds, StopReason
from recorder.media.encoder import EncoderSettings
from recorder.media.offline import render, scripted_participants
from recorder.presets import PRESETS, Mode, Quality
from recorder.storage.delivery import DeliveredRecording, RecordingDelivery
from recorder.storage.keys import DeliveryTarget
from recorder.storage.manifest import ManifestBuilder
from recorder.storage.sink import Sink
from recorder.storage.spool import SpoolProgress
from recorder.testing.stills import StillSpec

MEDIA_DURATION_S = 3.0
MEDIA_QUALITY = Quality.LOW  # 854x480: small and quick to render
STARTED_AT = datetime(2026, 11, 24, 14, 0, 5, tzinfo=UTC)
# Names come from the room: untrusted. These would run script or break the markup if unescaped.
HOSTILE_NAME = "<img src=x onerror=\"document.title='pwned'\">"
AMPERSAND_NAME = 'Zoë & "Bob" <b>'


def render_media(path: Path, mode: Mode = Mode.VIDEO_AND_AUDIO) -> Path:
    """A 3-second recording of a three-person GRID room at the low preset."""
    spec = StillSpec(participants=3, quality=MEDIA_QUALITY)
    settings = EncoderSettings.for_preset(
        PRESETS[MEDIA_QUALITY], mode, Orientation.LANDSCAPE, queue_max_wait_s=None
    )
    render(path, scripted_participants(spec), settings, spec.layout_spec, MEDIA_DURATION_S)
    return path


async def store_recording(
    sink: Sink,
    media: Path,
    spool_dir: Path,
    *,
    recording_id: str,
    aws_dir_path: str = "",
    names: Sequence[str] = ("Ann", "Ben"),
    started_at: datetime = STARTED_AT,
    mode: Mode = Mode.VIDEO_AND_AUDIO,
) -> DeliveredRecording:
    """Deliver a copy of `media` into `sink` as the recording `recording_id`, with its manifest."""
    job = validate_job(
        {
            "recordingId": recording_id,
            "awsDirPath": aws_dir_path,
            "config": {
                "layout": {"type": "grid"},
                "quality": MEDIA_QUALITY.value,
                "mode": mode.value,
            },
            "room": {"connector": "loopback", "url": "ws://127.0.0.1:1/", "roomId": "room-1"},
        }
    )
    spool = spool_dir / f"{recording_id}.spool{job.media_extension}"
    await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(shutil.copyfile, media, spool)
    manifest = ManifestBuilder(job, RecordingIds(recording_id=recording_id, meeting_id="room-1"))
    manifest.recording_started(started_at)
    for number, name in enumerate(names, start=1):
        manifest.participant_joined(f"p{number}", name, 0.0)
        if number > 1:  # the later ones leave early: their presence differs
            manifest.participant_left(f"p{number}", 1.0)
    document = manifest.build(
        stopped_at=started_at + timedelta(seconds=MEDIA_DURATION_S),
        stop_reason=StopReason.CONTROL,
    )
    progress = SpoolProgress.complete((await asyncio.to_thread(spool.stat)).st_size)
    delivery = RecordingDelivery(sink, spool, DeliveryTarget.for_job(job), progress)
    await delivery.start(document)
    return await delivery.finish(document)


@asynccontextmanager
async def serve(
    store: RecordingStore, cache_dir: Path
) -> AsyncIterator[tuple[str, ThumbnailCache]]:
    """The dashboard over `store` at `http://127.0.0.1:<free port>`; its URL and cache."""
    thumbnails = ThumbnailCache(cache_dir)
    runner = web.AppRunner(await dashboard_app(store, thumbnails), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", thumbnails
    finally:
        await runner.cleanup()
