"""A live room recorded end to end: real WebRTC on 127.0.0.1, the real worker process, the file
checked by content.

Three participants (a clapper and two colours, each with a tone of its own) are in the embedded
room when one of them calls startRecording (GRID, `low`); a fourth, in its own process, joins
late, publishes, and is then frozen (SIGSTOP: its media stops without a goodbye, its socket stays
open until the room's heartbeat gives up on it); then stopRecording. The file must show each
participant in the tile the layouts package computes for that moment, the late joiner appear,
the frozen one turn into a placeholder and then leave the layout; the mix must hold every
participant's tone while they are present; the clapper's beeps must be within two frames of its
flashes; the duration must match the wall-clock span between STARTED and STOPPING; every
participant must receive the statuses in order; and the recorder must never be listed.

The room is recorded once (a module fixture) and each test checks one side of the result.
Wall time is inherent: about 10 s of recording plus the worker's start and stop.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_helpers import (
    LIVE_CAMERA,
    MICROPHONE,
    STARTED_TIMEOUT_S,
    STATUS_ORDER,
    STOPPED_TIMEOUT_S,
    StatusLog,
    camera_feed,
    file_time,
    frames_at,
    grid,
    join_publishing,
    manifest_of,
    recording_time,
    seen_in,
    shows_colour,
    spawn_publisher,
    tone_amplitude,
    tone_participant,
    until,
    views,
)

from layouts.model import Rect, Theme
from layouts.themes import theme_colors
from recorder.client import RoomParticipant
from recorder.embedded_room.protocol import DEFAULT_ROOM_ID
from recorder.embedded_room.server import RoomServer
from recorder.inspect import FileReport, measure_sync, probe, read_audio
from recorder.lifecycle import Status
from recorder.media.timeline import VIDEO_STALE_AFTER_S
from recorder.presets import PRESETS, Quality
from recorder.storage.from_env import OUTPUT_DIR_ENV_VAR
from recorder.storage.sink import S3_BUCKET_ENV_VAR
from recorder.testing.audio import participant_tone_hz
from recorder.testing.clapper import clapper_participant

QUALITY = Quality.LOW
CANVAS = PRESETS[QUALITY].landscape
FPS = PRESETS[QUALITY].fps
ALICE, BOB, KEVIN = 1, 2, 3  # palette indexes (the clapper has none: it is dark, or white)
BEFORE_LATE_JOIN_S = 3.0  # recorded before the fourth participant joins
BEFORE_FREEZE_S = 2.5  # the late joiner publishes this long before it freezes
AFTER_LEAVE_S = 1.5  # recorded after the frozen one left, so its removal is in the file
LEAVE_TIMEOUT_S = 15.0  # the room's heartbeat gives up on a frozen client within ~2 x 5 s
# The layout follows the room within a second (issue 4): a join, a leave, a camera that stops.
LAYOUT_REACTS_S = 1.0
# The placeholder replaces a frozen camera once its last frame is stale (VIDEO_STALE_AFTER_S)
# plus the playout delay; it must be on screen for a while before the participant is removed.
MIN_PLACEHOLDER_FRAMES = 5
# The placeholder is the theme's tile colour with the initials avatar in the middle (a sixth of
# the region the checker reads): its median is the tile colour, 54 levels from the canvas colour
# that the three-tile layout shows in that place.
TILE = theme_colors(Theme.DEFAULT).tile_background
TILE_MATCH = 20.0
# Sync and duration tolerances (issue 4): A/V within two video frames; the file's duration within
# half a second of the wall-clock span between STARTED and STOPPING.
MAX_AV_OFFSET_S = 2 / FPS
DURATION_TOLERANCE_S = 0.5
# A present participant's tone is in the mix at about its sent amplitude (0.25) times the mix's
# gain; an absent one contributes nothing but codec noise, far below this.
AUDIBLE_TONE = 0.03
SILENT_TONE = 0.005


def _inner(a: Rect, b: Rect) -> Rect:
    """The overlap of two rectangles (where a tile is in both layouts)."""
    x, y = max(a.x, b.x), max(a.y, b.y)
    return Rect(x, y, min(a.right, b.right) - x, min(a.bottom, b.bottom) - y)


@dataclass(slots=True)
class LiveRecording:
    """What happened in the room, and what came out (wall times are time.time())."""

    log: StatusLog
    names: list[str]  # the participants that stayed, in join order
    feeds: dict[str, str]  # participant name -> camera feed id
    listed: list[set[str]]  # what the room and each participant listed while it recorded
    joined_wall: float
    frozen_wall: float
    left_wall: float
    media: Path
    manifest: dict[str, object]
    report: FileReport

    def at(self, wall_s: float) -> float:
        """File time of a wall-clock moment."""
        return file_time(self.manifest, wall_s)


async def _record(output: Path) -> LiveRecording:
    log = StatusLog()
    everyone: list[RoomParticipant] = []
    listed: list[set[str]] = []
    kevin_process: asyncio.subprocess.Process | None = None
    async with RoomServer() as server:

        def lists() -> list[set[str]]:
            return [set(server.participant_names(DEFAULT_ROOM_ID))] + [
                {p.name for p in participant.participants.values()} for participant in everyone
            ]

        try:
            clapper = await join_publishing(
                server.url, clapper_participant("Clapper", LIVE_CAMERA, MICROPHONE)
            )
            alice = await join_publishing(server.url, tone_participant(ALICE, "Alice"))
            bob = await join_publishing(server.url, tone_participant(BOB, "Bob"))
            everyone += [clapper, alice, bob]
            for participant in everyone:
                log.attach(participant)
            recording_id = await alice.start_recording(
                config={"layout": {"type": "GRID"}, "quality": str(QUALITY)}
            )
            await until(lambda: log.everyone_saw(Status.STARTED), STARTED_TIMEOUT_S)
            listed += lists()  # the recorder is in the room now: it receives everyone

            await recording_time(BEFORE_LATE_JOIN_S, log)
            kevin_process, kevin_id = await spawn_publisher(server.url, "Kevin", KEVIN)
            joined_wall = time.time()
            await until(lambda: "Kevin" in {p.name for p in alice.participants.values()})
            listed += [names - {"Kevin"} for names in lists()]
            await recording_time(BEFORE_FREEZE_S, log)
            kevin_process.send_signal(signal.SIGSTOP)  # no goodbye, no media, socket left open
            frozen_wall = time.time()
            await until(
                lambda: "Kevin" not in server.participant_names(DEFAULT_ROOM_ID), LEAVE_TIMEOUT_S
            )
            left_wall = time.time()
            await until(lambda: all("Kevin" not in names for names in lists()))
            listed += lists()
            await recording_time(AFTER_LEAVE_S, log)
            await alice.stop_recording()
            await until(lambda: log.everyone_saw(Status.STOPPED), STOPPED_TIMEOUT_S)
        finally:
            if kevin_process is not None and kevin_process.returncode is None:
                kevin_process.kill()
                await kevin_process.wait()
            await asyncio.gather(*(p.leave() for p in everyone), return_exceptions=True)
    media = output / f"{recording_id}.mp4"
    feeds = {p.name: camera_feed(p.id) for p in everyone} | {"Kevin": camera_feed(kevin_id)}
    return LiveRecording(
        log=log,
        names=[p.name for p in everyone],
        feeds=feeds,
        listed=listed,
        joined_wall=joined_wall,
        frozen_wall=frozen_wall,
        left_wall=left_wall,
        media=media,
        manifest=manifest_of(media),
        report=probe(media),
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> LiveRecording:
    """The room recorded once; every test below checks one side of the result."""
    output = tmp_path_factory.mktemp("live") / "recordings"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(OUTPUT_DIR_ENV_VAR, str(output))  # the worker inherits the environment
        patch.delenv(S3_BUCKET_ENV_VAR, raising=False)
        return asyncio.run(_record(output))


@dataclass(frozen=True, slots=True)
class Layouts:
    three: dict[str, Rect]  # Clapper, Alice, Bob
    four: dict[str, Rect]  # and Kevin, the late joiner
    three_again: dict[str, Rect]  # Kevin gone


def _layouts(live: LiveRecording) -> Layouts:
    """The tiles of each phase, from the layouts' own selection replayed over the phases."""
    replay = grid(CANVAS)
    initial = [live.feeds[name] for name in ("Clapper", "Alice", "Bob")]
    return Layouts(
        three=replay.tiles(views(initial)),
        four=replay.tiles(views([*initial, live.feeds["Kevin"]])),
        three_again=replay.tiles(views(initial)),
    )


@pytest.mark.slow
def test_every_participant_saw_every_status_in_order(live: LiveRecording) -> None:
    for name in live.names:
        assert live.log.statuses(name) == STATUS_ORDER, name


@pytest.mark.slow
def test_the_recorder_is_never_listed(live: LiveRecording) -> None:
    assert live.listed and all(names == {"Clapper", "Alice", "Bob"} for names in live.listed)
    assert {p["name"] for p in live.manifest["participants"]} == {  # type: ignore[union-attr]
        "Clapper",
        "Alice",
        "Bob",
        "Kevin",
    }


@pytest.mark.slow
def test_the_file_has_the_presets_streams(live: LiveRecording) -> None:
    report = live.report
    assert report.video is not None and report.audio is not None
    assert (report.video.width, report.video.height) == (CANVAS.width, CANVAS.height)
    assert (report.video.codec, report.audio.codec) == ("h264", "aac")
    assert report.damage is None and report.video.irregular_deltas == 0


@pytest.mark.slow
def test_everyone_is_in_their_tile_the_late_joiner_appears_and_the_leaver_goes(
    live: LiveRecording,
) -> None:
    tiles, feeds = _layouts(live), live.feeds
    clap, alice, bob, kevin = (feeds[n] for n in ("Clapper", "Alice", "Bob", "Kevin"))
    join_s, freeze_s, left_s = (
        live.at(t) for t in (live.joined_wall, live.frozen_wall, live.left_wall)
    )
    # The worker starts its media before it joins the room (a fast start): the participants who
    # were there appear once their media is connected, within a second of STARTED.
    started_s = live.at(live.log.first("Alice", Status.STARTED).wall_s)
    before_join = [started_s + LAYOUT_REACTS_S, join_s - 0.5]
    after_join = [join_s + LAYOUT_REACTS_S, freeze_s - 0.3]
    after_left = [left_s + LAYOUT_REACTS_S]
    sampled = frames_at(live.media, [*before_join, *after_join, *after_left])
    for t in before_join:
        frame = sampled[t]
        seen = [seen_in(frame, tiles.three[f]) for f in (clap, alice, bob)]
        assert seen == [None, ALICE, BOB], f"at {t:.2f} s"  # the clapper is dark or white
    for t in after_join:  # the late joiner appears in the fourth tile; nobody else moves
        frame = sampled[t]
        seen = [seen_in(frame, tiles.four[f]) for f in (alice, bob, kevin)]
        assert seen == [ALICE, BOB, KEVIN], f"at {t:.2f} s"
    for t in after_left:  # the frozen one is gone: the three-tile layout again
        frame = sampled[t]
        seen = [seen_in(frame, tiles.three_again[f]) for f in (alice, bob)]
        assert seen == [ALICE, BOB], f"at {t:.2f} s"
        assert seen_in(frame, tiles.four[kevin]) != KEVIN


@pytest.mark.slow
def test_a_frozen_publisher_becomes_a_placeholder_before_it_leaves(live: LiveRecording) -> None:
    kevin_tile = _layouts(live).four[live.feeds["Kevin"]]
    freeze_s, left_s = live.at(live.frozen_wall), live.at(live.left_wall)
    window = frames_at(
        live.media, [freeze_s + i / FPS for i in range(round((left_s - freeze_s) * FPS))]
    )
    placeholder = [
        t for t, frame in window.items() if shows_colour(frame, kevin_tile, TILE, TILE_MATCH)
    ]
    assert len(placeholder) >= MIN_PLACEHOLDER_FRAMES, (freeze_s, left_s)
    assert min(placeholder) <= freeze_s + VIDEO_STALE_AFTER_S + LAYOUT_REACTS_S


@pytest.mark.slow
def test_the_mix_holds_everyone_present(live: LiveRecording) -> None:
    samples, start_s, rate = read_audio(live.media)
    join_s, freeze_s = live.at(live.joined_wall), live.at(live.frozen_wall)
    started_s = live.at(live.log.first("Alice", Status.STARTED).wall_s)
    before_join = (started_s + LAYOUT_REACTS_S, join_s - 0.2)
    for index in (ALICE, BOB):
        level = tone_amplitude(samples, start_s, rate, participant_tone_hz(index), before_join)
        assert level > AUDIBLE_TONE, index
    kevin_hz = participant_tone_hz(KEVIN)
    assert tone_amplitude(samples, start_s, rate, kevin_hz, before_join) < SILENT_TONE
    present = (join_s + LAYOUT_REACTS_S, freeze_s - 0.2)
    assert tone_amplitude(samples, start_s, rate, kevin_hz, present) > AUDIBLE_TONE


@pytest.mark.slow
def test_the_clapper_is_in_sync_within_two_frames(live: LiveRecording) -> None:
    tiles = _layouts(live)
    clap = live.feeds["Clapper"]
    sync = measure_sync(live.media, region=_inner(tiles.three[clap], tiles.four[clap]))
    assert live.report.video is not None
    assert len(sync.offsets_s) >= int(live.report.video.duration_s) - 2, sync.as_dict()
    offsets = [round(o, 3) for o in sync.offsets_s]
    assert sync.max_abs_offset_s is not None and sync.max_abs_offset_s <= MAX_AV_OFFSET_S, offsets


@pytest.mark.slow
def test_the_duration_is_the_span_between_started_and_stopping(live: LiveRecording) -> None:
    log = live.log
    span_s = (
        log.first("Alice", Status.STOPPING).monotonic_s
        - log.first("Alice", Status.STARTED).monotonic_s
    )
    assert live.report.video is not None
    assert live.report.video.duration_s == pytest.approx(span_s, abs=DURATION_TOLERANCE_S)
