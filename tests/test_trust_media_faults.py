"""A lossy, jittery publisher that freezes and resumes, recorded live by the real worker.

The publisher's tracks are wrapped before they reach aiortc (`FaultyTrack`): a seeded share of
frames is dropped (video and audio), every frame is held back by a random delay (jitter up to
`JITTER_MAX_S`), and at a moment the test chooses the camera stops sending altogether
(a freeze: the connection stays up), then resumes. This is loss and jitter as the receiver sees
them after the network (frames missing, frames late), not RTP-level packet loss: that would need
a lossy UDP relay or `tc netem`, which the loopback room does not route through.

The file must not stall (every video tick is in it, evenly spaced), the participant's tile must
show its camera before the freeze, the placeholder during it (once the last frame is stale), and
the camera again after it resumes.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from live_helpers import (
    file_time,
    frames_at,
    grid,
    manifest_of,
    seen_in,
    shows_colour,
    tone_participant,
    views,
)
from worker_helpers import (
    WorkerProcess,
    reap_workers,  # noqa: F401 - autouse fixture
    room_job,
    worker_env,
)

from layouts.model import Theme
from layouts.themes import theme_colors
from recorder.client import join
from recorder.client.media import Frame, paced_tracks
from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode
from recorder.inspect import probe
from recorder.media.timeline import PLAYOUT_DELAY_S, VIDEO_STALE_AFTER_S
from recorder.presets import PRESETS, Quality
from recorder.rooms.base import TrackKind, feed_id

FAULT_SEED = 7
VIDEO_LOSS = 0.10  # a tenth of the camera's frames never arrive
AUDIO_LOSS = 0.05
JITTER_MAX_S = 0.03
INDEX = 1  # palette colour of the lossy publisher
CANVAS = PRESETS[Quality.LOW].landscape
FPS = PRESETS[Quality.LOW].fps
BEFORE_FREEZE_S = 2.0
FREEZE_S = 3.0  # longer than the stale time (1.5 s) plus the playout delay
AFTER_RESUME_S = 2.0
# The layout follows within a second (the placeholder after the stale time, the camera back).
REACTS_S = 1.0
TILE = theme_colors(Theme.DEFAULT).tile_background
TILE_MATCH = 20.0


class FaultyTrack(MediaStreamTrack):
    """`inner` with frames dropped (seeded), each delayed by jitter, and frozen on demand."""

    def __init__(self, inner: MediaStreamTrack, loss: float, rng: random.Random) -> None:
        super().__init__()
        self.kind = inner.kind
        self._inner = inner
        self._loss = loss
        self._rng = rng
        self.frozen = False
        self.dropped = 0

    async def recv(self) -> Frame:
        while True:
            frame = await self._inner.recv()  # paced in real time by the inner track
            if self.readyState != "live":
                raise MediaStreamError
            if self.frozen or self._rng.random() < self._loss:
                self.dropped += 1
                continue
            await asyncio.sleep(self._rng.uniform(0.0, JITTER_MAX_S))
            return frame

    def stop(self) -> None:
        self._inner.stop()
        super().stop()


async def test_a_lossy_jittery_publisher_that_freezes_and_resumes_is_recorded_without_a_stall(
    tmp_path: Path,
) -> None:
    rng = random.Random(FAULT_SEED)
    source = tone_participant(INDEX, "Lossy")
    tracks = paced_tracks(source)
    camera = FaultyTrack(tracks[TrackKind.CAMERA], VIDEO_LOSS, rng)
    microphone = FaultyTrack(tracks[TrackKind.AUDIO], AUDIO_LOSS, rng)
    async with RoomServer() as server:
        lossy = await join(server.url, source.name)
        try:
            await lossy.publish(TrackKind.CAMERA, camera)
            await lossy.publish(TrackKind.AUDIO, microphone)
            job = room_job(server, config={"quality": "low"}, limits={"emptyRoomTimeoutSec": 0})
            worker = await WorkerProcess.launch(job, worker_env(tmp_path))
            await worker.wait_for_log("RECORDING_STARTED")
            await asyncio.sleep(BEFORE_FREEZE_S)
            camera.frozen, frozen_wall = True, time.time()
            await asyncio.sleep(FREEZE_S)
            camera.frozen, resumed_wall = False, time.time()
            await asyncio.sleep(AFTER_RESUME_S)
            worker.signal(signal.SIGTERM)
            result = await worker.finish()
        finally:
            await lossy.leave()
    assert result.returncode == ExitCode.OK, result.stderr
    assert camera.dropped > 0 and microphone.dropped > 0

    (media,) = (tmp_path / "out").rglob("*.mp4")
    report = probe(media)
    assert report.damage is None and report.video is not None and report.audio is not None
    assert report.video.irregular_deltas == 0  # no stall: every tick is in the file
    manifest = manifest_of(media)
    assert report.video.duration_s * FPS >= manifest["durationS"] * FPS - 2

    (person,) = manifest["participants"]
    tile = grid(CANVAS).tiles(views([feed_id(person["id"], TrackKind.CAMERA)]))
    (rect,) = tile.values()
    freeze_s = file_time(manifest, frozen_wall)
    resume_s = file_time(manifest, resumed_wall)
    moments = {
        "before": freeze_s - 0.5,
        "frozen": freeze_s + PLAYOUT_DELAY_S + VIDEO_STALE_AFTER_S + 0.5,
        "resumed": resume_s + REACTS_S,
    }
    frames = frames_at(media, list(moments.values()))
    assert seen_in(frames[moments["before"]], rect) == INDEX
    assert shows_colour(frames[moments["frozen"]], rect, TILE, TILE_MATCH)  # the placeholder
    assert seen_in(frames[moments["resumed"]], rect) == INDEX
