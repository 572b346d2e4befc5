"""A Janus room recorded end to end: the real worker (`recorder run`) through the Janus connector.

Three publishers (a clapper and two palette colours with a tone each) are in a VideoRoom of a real
Janus when the worker is launched with a job naming it (GRID, `low`). After 10 s of recording it
is stopped with SIGTERM, and the file is checked by content: each publisher in the tile the
layouts package computes (join order from the manifest), both tones in the mix, the clapper's
beeps within two frames of its flashes, the manifest naming everyone. A second run restarts Janus
in the middle: the recording goes on through the gap, the tiles show placeholders meanwhile, and
the same publishers are back in their tiles once they have rejoined.

Everything runs in the test's sealed network (tests/janus_helpers.py), the worker process too.
Wall time is inherent: the recordings' own length plus the worker's start and stop.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from janus_helpers import new_room_id, publishing
from live_helpers import (
    LIVE_CAMERA,
    MICROPHONE,
    camera_feed,
    file_time,
    frames_at,
    grid,
    manifest_of,
    seen_in,
    shows_colour,
    tone_amplitude,
    tone_participant,
    views,
)
from worker_helpers import (
    STARTED_TIMEOUT_S,
    WorkerProcess,
    reap_workers,  # noqa: F401 - autouse fixture
    worker_env,
)

from layouts.model import Theme
from layouts.themes import theme_colors
from recorder.client.janus import JanusPublisher, create_room
from recorder.inspect import measure_sync, probe, read_audio
from recorder.presets import PRESETS, Quality
from recorder.testing.audio import participant_tone_hz
from recorder.testing.clapper import clapper_participant
from recorder.testing.janus import JanusServer

QUALITY = Quality.LOW
CANVAS = PRESETS[QUALITY].landscape
FPS = PRESETS[QUALITY].fps
ALICE, BOB = 1, 2  # palette indexes
RECORD_S = 10.0  # the 10 s
STARTED_LOG = "started: first frames in the file"
# Sync and content tolerances (issue 4): A/V within two video frames; a present participant's
# tone is in the mix at about its sent amplitude times the mix's gain, far above codec noise.
MAX_AV_OFFSET_S = 2 / FPS
AUDIBLE_TONE = 0.03
# The file lasts the recorded span; the worker's start and stop add to it, never take away.
MIN_DURATION_S = RECORD_S - 0.5
# Tiles take the layout's first frame plus the timeline's playout delay to show their camera.
SETTLED_S = 1.5
# The restart: Janus is gone for this long before it comes back (the recording goes on).
OUTAGE_S = 1.0
BEFORE_RESTART_S = 4.0
AFTER_RESTART_S = 6.0
REJOINED_TIMEOUT_S = 15.0
# A tile whose camera is gone shows the theme's tile colour under the avatar (its median).
TILE = theme_colors(Theme.DEFAULT).tile_background
TILE_MATCH = 20.0
MIN_PLACEHOLDER_FRAMES = 5


def _job(janus: JanusServer, room_id: int) -> dict[str, Any]:
    return {
        "recordingId": f"janus-{room_id}",
        "room": {"connector": "janus", "url": janus.ws_url, "roomId": room_id},
        "config": {"layout": {"type": "GRID"}, "quality": str(QUALITY)},
        "limits": {"emptyRoomTimeoutSec": 0},
    }


async def _record(janus: JanusServer, tmp_path: Path, room_id: int) -> WorkerProcess:
    worker = await WorkerProcess.launch(_job(janus, room_id), worker_env(tmp_path))
    await worker.wait_for_log(STARTED_LOG, STARTED_TIMEOUT_S)
    return worker


async def _stop(worker: WorkerProcess) -> None:
    worker.signal(signal.SIGTERM)
    result = await worker.finish()
    assert result.returncode == 0, result.stderr


def _names(manifest: dict[str, Any]) -> dict[str, str]:
    return {str(p["id"]): str(p["name"]) for p in manifest["participants"]}


def _tiles_in_join_order(manifest: dict[str, Any]) -> dict[str, Any]:
    ids = [str(p["id"]) for p in manifest["participants"]]
    return grid(CANVAS).tiles(views([camera_feed(pid) for pid in ids]))


@pytest.mark.slow
async def test_a_janus_room_is_recorded_with_everyone_in_place(
    janus: JanusServer, tmp_path: Path
) -> None:
    room_id = new_room_id()
    await create_room(janus.ws_url, room_id)
    clapper = await publishing(
        janus, room_id, clapper_participant("Clapper", LIVE_CAMERA, MICROPHONE)
    )
    alice = await publishing(janus, room_id, tone_participant(ALICE, "Alice"))
    bob = await publishing(janus, room_id, tone_participant(BOB, "Bob"))
    everyone = [clapper, alice, bob]
    try:
        worker = await _record(janus, tmp_path, room_id)
        await asyncio.sleep(RECORD_S)  # inherent: the recording's own length
        await _stop(worker)
    finally:
        await asyncio.gather(*(p.leave() for p in everyone), return_exceptions=True)

    media = tmp_path / "out" / f"janus-{room_id}.mp4"
    manifest = manifest_of(media)
    report = probe(media)
    assert report.video is not None and report.audio is not None
    assert (report.video.width, report.video.height) == (CANVAS.width, CANVAS.height)
    assert report.damage is None
    assert report.video.duration_s >= MIN_DURATION_S

    # The names on the labels are the publishers' display names, in the manifest too.
    assert _names(manifest) == {p.participant_id: p.name for p in everyone}

    # Each publisher in its tile, all along.
    tiles = _tiles_in_join_order(manifest)
    samples = [SETTLED_S, RECORD_S / 2, report.video.duration_s - 0.5]
    for t, frame in frames_at(media, samples).items():
        assert seen_in(frame, tiles[camera_feed(alice.participant_id)]) == ALICE, f"at {t:.2f} s"
        assert seen_in(frame, tiles[camera_feed(bob.participant_id)]) == BOB, f"at {t:.2f} s"
        assert seen_in(frame, tiles[camera_feed(clapper.participant_id)]) is None

    # Both tones in the mix, and the clapper's beeps with its flashes.
    audio, start_s, rate = read_audio(media)
    span = (SETTLED_S, report.video.duration_s - 0.5)
    for index in (ALICE, BOB):
        amplitude = tone_amplitude(audio, start_s, rate, participant_tone_hz(index), span)
        assert amplitude > AUDIBLE_TONE, index
    sync = measure_sync(media, region=tiles[camera_feed(clapper.participant_id)])
    assert len(sync.offsets_s) >= int(report.video.duration_s) - 3, sync.as_dict()
    assert sync.max_abs_offset_s is not None and sync.max_abs_offset_s <= MAX_AV_OFFSET_S


@pytest.mark.slow
async def test_a_recording_survives_janus_restarting(janus: JanusServer, tmp_path: Path) -> None:
    room_id = new_room_id()
    await create_room(janus.ws_url, room_id)
    alice = await publishing(janus, room_id, tone_participant(ALICE, "Alice"))
    bob = await publishing(janus, room_id, tone_participant(BOB, "Bob"))
    everyone: list[JanusPublisher] = [alice, bob]
    try:
        worker = await _record(janus, tmp_path, room_id)
        await asyncio.sleep(BEFORE_RESTART_S)
        janus.stop()
        down_wall = time.time()
        await asyncio.sleep(OUTAGE_S)  # inherent: the outage is what is recorded
        janus.start()
        await create_room(janus.ws_url, room_id)
        for publisher in everyone:
            await publisher.reconnect()
        up_wall = time.time()
        await worker.wait_for_log("reconnected", REJOINED_TIMEOUT_S)
        await asyncio.sleep(AFTER_RESTART_S)
        await _stop(worker)
    finally:
        await asyncio.gather(*(p.leave() for p in everyone), return_exceptions=True)

    media = tmp_path / "out" / f"janus-{room_id}.mp4"
    manifest = manifest_of(media)
    report = probe(media)
    assert report.video is not None and report.damage is None
    down_s, up_s = file_time(manifest, down_wall), file_time(manifest, up_wall)
    tiles = _tiles_in_join_order(manifest)
    alice_tile, bob_tile = (tiles[camera_feed(p.participant_id)] for p in everyone)
    # Nobody left the recording: the same two participants, back in the same tiles.
    assert _names(manifest) == {p.participant_id: p.name for p in everyone}
    before = [SETTLED_S, down_s - 0.3]
    after = [report.video.duration_s - 1.0]
    sampled = frames_at(media, [*before, *after])
    for t in [*before, *after]:
        frame = sampled[t]
        assert (seen_in(frame, alice_tile), seen_in(frame, bob_tile)) == (ALICE, BOB), t
    # The gap: placeholders in both tiles while Janus was away.
    window = frames_at(media, [down_s + i / FPS for i in range(round((up_s - down_s) * FPS))])
    placeholder = [
        t
        for t, frame in window.items()
        if shows_colour(frame, alice_tile, TILE, TILE_MATCH)
        and shows_colour(frame, bob_tile, TILE, TILE_MATCH)
    ]
    assert len(placeholder) >= MIN_PLACEHOLDER_FRAMES, (down_s, up_s)
