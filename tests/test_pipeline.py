"""The whole offline pipeline, end to end: scripted room -> timeline -> layouts -> compositor and
mixer -> encoder -> file, checked by content with the checker (`recorder.inspect`).

A 2x2 GRID of a clapper and three coloured participants is recorded at each quality; the file
is re-opened and must have the codecs and sizes of the preset, keyframes at most 2 s apart, the
requested duration, every participant's colour in the tile the layout gives them, and the
clapper's beeps within one frame of its flashes. Durations are short (2.5 s) and the sources
small (320x180 cameras): the canvas, not the sources, is what each quality changes.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from layouts.model import LayoutSpec, LayoutType, Rect
from layouts.scene import plan_frame
from recorder.bench import pipeline as pipeline_bench
from recorder.bench import presets as presets_bench
from recorder.cli import main
from recorder.inspect import iter_video_frames, measure_sync, presence, probe
from recorder.media.clock import ManualClock, RecordingClock
from recorder.media.encoder import X264_PRESETS, Encoder, EncoderSettings
from recorder.media.engine import MediaEngine, TickReport
from recorder.media.fmp4 import BoxScanner, durable_length
from recorder.media.offline import OFFLINE_PLAYOUT, ScriptedParticipant, ScriptedRoom, render
from recorder.media.timeline import Timeline
from recorder.presets import AUDIO_SAMPLE_RATE_HZ, KEYFRAME_INTERVAL_S, PRESETS, Mode, Quality
from recorder.rooms.janus.simulcast import SIMULCAST_LAYERS, layer_size, substream_for_tile
from recorder.testing.clapper import clapper_participant
from recorder.testing.sources import AudioFormat, Sound, VideoFormat, synthetic_participant

DURATION_S = 2.5
CAMERA = VideoFormat(320, 180, 30)
MICROPHONE = AudioFormat()
CLAPS_IN_FILE = [1.0, 2.0]  # the clap at 0 s has no measurable onset (see recorder.inspect)
# A participant's tile may change one frame early or late (the layout follows the roster at
# the tick; the frame boundary falls on the join time exactly, so ±1 covers float rounding).
LAYOUT_CHANGE_TOLERANCE_FRAMES = 1


def grid_room() -> list[ScriptedParticipant]:
    """A clapper and three coloured participants (palette 1..3) with their own tones."""
    return [
        ScriptedParticipant("clap", clapper_participant("Clapper", CAMERA, MICROPHONE)),
        *(
            ScriptedParticipant(
                f"p{i}", synthetic_participant(i, f"P{i}", CAMERA, MICROPHONE, sound=Sound.TONE)
            )
            for i in (1, 2, 3)
        ),
    ]


def tile_rects(
    participants: list[ScriptedParticipant], settings: EncoderSettings, at_s: float
) -> dict[str, Rect]:
    """Where the layout puts each participant's camera at `at_s` (by participant id)."""
    clock = RecordingClock(ManualClock(), settings.fps)
    room = ScriptedRoom(participants, Timeline(clock, OFFLINE_PLAYOUT))
    views = [entry.view for entry in room.entries(at_s)]
    _, scene = plan_frame(None, views, LayoutSpec(), settings.canvas, at_s)
    by_feed = {plan.tile.feed_id: plan.tile.rect for plan in scene.tiles}
    return {
        p.participant_id: by_feed[p.camera_feed] for p in participants if p.camera_feed in by_feed
    }


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[Quality, Path]:
    """The GRID room recorded once per quality (shared by the tests below)."""
    folder = tmp_path_factory.mktemp("pipeline")
    paths = {}
    for quality in Quality:
        settings = EncoderSettings.for_preset(PRESETS[quality], queue_max_wait_s=None)
        path = folder / f"grid-{quality}.mp4"
        stats = render(path, grid_room(), settings, LayoutSpec(), DURATION_S)
        assert stats.encoder.queue_drops == 0 and stats.skipped == 0
        assert stats.composed == round(DURATION_S * settings.fps)
        paths[quality] = path
    return paths


@pytest.mark.parametrize("quality", list(Quality))
def test_grid_recording_has_the_presets_streams_and_timing(
    recordings: dict[Quality, Path], quality: Quality
) -> None:
    preset = PRESETS[quality]
    report = probe(recordings[quality])
    video, audio = report.video, report.audio
    assert video is not None and audio is not None
    assert (video.codec, video.profile, video.pixel_format) == ("h264", "High", "yuv420p")
    assert (video.width, video.height) == (preset.landscape.width, preset.landscape.height)
    assert (audio.codec, audio.sample_rate, audio.channels) == ("aac", AUDIO_SAMPLE_RATE_HZ, 2)
    frame_s = 1 / preset.fps
    assert video.packets == round(DURATION_S * preset.fps) and video.irregular_deltas == 0
    assert video.duration_s == pytest.approx(DURATION_S, abs=frame_s)
    assert audio.duration_s == pytest.approx(DURATION_S, abs=frame_s)
    assert report.duration_s == pytest.approx(DURATION_S, abs=frame_s)
    assert video.keyframe_spacing_max_s is not None
    assert video.keyframe_spacing_max_s <= KEYFRAME_INTERVAL_S + 1e-9
    assert report.damage is None and report.fragments >= 2


@pytest.mark.parametrize("quality", list(Quality))
def test_each_participant_is_in_their_tile_and_the_clapper_is_in_sync(
    recordings: dict[Quality, Path], quality: Quality
) -> None:
    path = recordings[quality]
    settings = EncoderSettings.for_preset(PRESETS[quality])
    rects = tile_rects(grid_room(), settings, 0.0)
    assert len(rects) == 4
    coloured = {pid: rect for pid, rect in rects.items() if pid != "clap"}
    samples = presence(path, coloured, every_s=0.5)
    assert len(samples) == 5
    for sample in samples:
        # Participant p<i> is camera i: palette colour i.
        assert sample.seen == {"p1": 1, "p2": 2, "p3": 3}, f"at {sample.time_s:.2f} s"
    sync = measure_sync(path, region=rects["clap"])
    assert sync.flashes_s == pytest.approx(CLAPS_IN_FILE)
    assert len(sync.offsets_s) == len(CLAPS_IN_FILE)
    assert sync.max_abs_offset_s is not None
    assert sync.max_abs_offset_s <= 1 / settings.fps


def test_a_recording_cut_in_the_middle_plays_up_to_its_last_fragment(
    recordings: dict[Quality, Path], tmp_path: Path
) -> None:
    data = recordings[Quality.MED].read_bytes()
    # Cut in the middle of the last fragment, as a crash while writing it would.
    scanner, fragment_ends = BoxScanner(), []
    for offset in range(0, len(data), 64):
        if scanner.feed(data[offset : offset + 64]) and scanner.fragments > len(fragment_ends):
            fragment_ends.append(scanner.durable_bytes)
    assert len(fragment_ends) >= 2
    cut_at = (fragment_ends[-2] + fragment_ends[-1]) // 2
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:cut_at])
    playable = durable_length(cut)
    assert playable == fragment_ends[-2]
    report = probe(cut)
    assert report.damage is not None and report.playable_bytes == playable
    with av.open(str(recordings[Quality.MED])) as whole:
        positions = [p.pos for p in whole.demux(whole.streams.video[0]) if p.size]
    in_complete_fragments = sum(1 for pos in positions if 0 <= pos < playable)
    assert in_complete_fragments >= 1
    # Every frame of the complete fragments decodes, in order, from the start.
    frames = list(iter_video_frames(cut))
    assert len(frames) >= in_complete_fragments
    assert [round(float(f.time) * 30) for f in frames] == list(range(len(frames)))
    rects = tile_rects(grid_room(), EncoderSettings.for_preset(PRESETS[Quality.MED]), 0.0)
    seen = presence(cut, {"p2": rects["p2"]}, every_s=1.0)
    assert seen and all(s.seen == {"p2": 2} for s in seen)


def test_audio_mode_records_aac_only(tmp_path: Path) -> None:
    settings = EncoderSettings.for_preset(PRESETS[Quality.LOW], Mode.AUDIO, queue_max_wait_s=None)
    path = tmp_path / "room.m4a"
    stats = render(path, grid_room(), settings, LayoutSpec(), DURATION_S)
    assert stats.composed == 0 and stats.encoder.frames_in == 0
    report = probe(path)
    assert [s.kind for s in report.streams] == ["audio"]
    assert report.audio is not None and report.audio.codec == "aac"
    assert report.audio.duration_s == pytest.approx(DURATION_S, abs=1 / 30)
    # The beeps are where the clapper made them, among the other participants' tones.
    sync = measure_sync(path)
    assert sync.beeps_s == pytest.approx(CLAPS_IN_FILE, abs=0.005)


def test_join_and_leave_change_the_layout_on_the_right_frame(tmp_path: Path) -> None:
    join_s, leave_s = 0.8, 1.6
    alice = ScriptedParticipant("alice", synthetic_participant(0, "Alice", CAMERA, MICROPHONE))
    bob = ScriptedParticipant(
        "bob", synthetic_participant(1, "Bob", CAMERA, MICROPHONE), join_s=join_s, leave_s=leave_s
    )
    settings = EncoderSettings.for_preset(PRESETS[Quality.LOW], queue_max_wait_s=None)
    path = tmp_path / "join-leave.mp4"
    render(path, [alice, bob], settings, LayoutSpec(), DURATION_S)

    together = tile_rects([alice, bob], settings, join_s)
    alone = tile_rects([alice, bob], settings, 0.0)
    assert set(together) == {"alice", "bob"} and set(alone) == {"alice"}
    samples = presence(path, {"left": together["alice"], "right": together["bob"]})
    fps = settings.fps
    assert len(samples) == round(DURATION_S * fps)
    bob_frames = [round(s.time_s * fps) for s in samples if s.seen["right"] == 1]
    # Bob's colour fills the right tile exactly while he is in the room...
    first, last = round(join_s * fps), round(leave_s * fps) - 1
    assert abs(bob_frames[0] - first) <= LAYOUT_CHANGE_TOLERANCE_FRAMES
    assert abs(bob_frames[-1] - last) <= LAYOUT_CHANGE_TOLERANCE_FRAMES
    assert len(bob_frames) == bob_frames[-1] - bob_frames[0] + 1  # without a gap
    # ...and Alice is always on screen: alone she fills the canvas (both regions are hers).
    for sample in samples:
        frame = round(sample.time_s * fps)
        assert sample.seen["left"] == 0
        if not first - 1 <= frame <= last + 1:
            assert sample.seen["right"] == 0, f"frame {frame}"


def test_the_tick_report_tells_each_video_feeds_drawn_size_when_the_tiles_change(
    tmp_path: Path,
) -> None:
    # What the worker hands a simulcast room (RoomConnector.prefer_video_size): only on change.
    join_s, leave_s = 0.5, 1.2
    alice = ScriptedParticipant("alice", synthetic_participant(0, "Alice", CAMERA, MICROPHONE))
    bob = ScriptedParticipant(
        "bob", synthetic_participant(1, "Bob", CAMERA, MICROPHONE), join_s=join_s, leave_s=leave_s
    )
    settings = EncoderSettings.for_preset(PRESETS[Quality.LOW], queue_max_wait_s=None)
    clock = RecordingClock(ManualClock(), settings.fps)
    timeline = Timeline(clock, OFFLINE_PLAYOUT)
    room = ScriptedRoom([alice, bob], timeline)
    reports: list[TickReport] = []
    engine = MediaEngine(
        clock=clock,
        timeline=timeline,
        roster=room,
        encoder=Encoder(tmp_path / "sizes.mp4", settings),
        layout=LayoutSpec(),
        feeder=room.feed_until,
        on_tick=reports.append,
    )
    engine.run(duration_s=1.6)
    changes = [(r.index, r.tile_sizes) for r in reports if r.tile_sizes is not None]
    alone = {alice.camera_feed: tile_rects([alice, bob], settings, 0.0)["alice"].size}
    together_rects = tile_rects([alice, bob], settings, join_s)
    together = {
        alice.camera_feed: together_rects["alice"].size,
        bob.camera_feed: together_rects["bob"].size,
    }
    assert [sizes for _, sizes in changes] == [alone, together, alone]
    fps = settings.fps
    assert changes[0][0] == 0
    assert abs(changes[1][0] - round(join_s * fps)) <= LAYOUT_CHANGE_TOLERANCE_FRAMES
    assert abs(changes[2][0] - round(leave_s * fps)) <= LAYOUT_CHANGE_TOLERANCE_FRAMES


def test_a_stalled_media_thread_repeats_video_and_keeps_every_sample_of_audio(
    tmp_path: Path,
) -> None:
    settings = EncoderSettings.for_preset(PRESETS[Quality.LOW], queue_max_wait_s=None)
    fps = settings.fps
    clock = RecordingClock(ManualClock(), fps)
    timeline = Timeline(clock, OFFLINE_PLAYOUT)
    room = ScriptedRoom(grid_room()[:2], timeline)
    stall_at, stall_s = 10, 0.2  # tick 10 takes 0.2 s: ticks 11..15 are due by the time it ends

    def feed(until_s: float) -> None:
        room.feed_until(until_s)
        if round(until_s * fps) == stall_at + 1:
            clock.clock.advance(stall_s)  # type: ignore[attr-defined]

    path = tmp_path / "stalled.mp4"
    engine = MediaEngine(
        clock=clock,
        timeline=timeline,
        roster=room,
        encoder=Encoder(path, settings),
        layout=LayoutSpec(),
        feeder=feed,
    )
    stats = engine.run(duration_s=1.0)
    skipped = round(stall_s * fps) - 1  # ticks 11..15: behind by more than LATE_SKIP_AFTER_TICKS
    assert stats.ticks == fps and stats.skipped == skipped
    assert stats.composed == fps - skipped
    # Constant frame rate: every tick has its frame; the skipped ones repeat the last composed.
    frames = list(iter_video_frames(path))
    assert [round(float(f.time) * fps) for f in frames] == list(range(fps))
    held = frames[stall_at].to_ndarray().astype(int)
    for late in range(stall_at + 1, stall_at + skipped + 1):
        assert np.abs(frames[late].to_ndarray().astype(int) - held).mean() < 1.0
    report = probe(path)
    assert report.video is not None and report.video.irregular_deltas == 0
    assert report.audio is not None
    assert report.audio.duration_s == pytest.approx(1.0, abs=1024 / AUDIO_SAMPLE_RATE_HZ)
    assert stats.encoder.audio_samples_in == AUDIO_SAMPLE_RATE_HZ  # not one sample lost


def test_render_command_records_an_mp4(tmp_path: Path) -> None:
    out = tmp_path / "cli.mp4"
    args = ["render", "--duration", "1", "--participants", "2", "--clapper", "--quality", "low"]
    assert main([*args, "--out", str(out)]) == 0
    report = probe(out)
    assert report.video is not None and (report.video.width, report.video.height) == (854, 480)
    assert report.video.packets == 30 and report.audio is not None
    assert main([*args, "--speaking", "1", "--out", str(out)]) == 2  # not recordable (yet)


def test_pipeline_bench_reports_every_case_and_skips_ffmpeg_when_absent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg here; python is run by full path
    args = argparse.Namespace(
        quality=[Quality.LOW], layout=[LayoutType.GRID], frames=10, content="synthetic"
    )
    report = pipeline_bench.run(args)
    assert report["ffmpeg"] == "not found: comparison skipped"
    (row,) = report["results"]  # type: ignore[misc]
    assert row["ffmpeg"] is None and row["full_vs_ffmpeg"] is None
    for case in ("encode", "full"):
        assert row[case]["frames"] == 10 and row[case]["cpu_s"] > 0
        assert row[case]["peak_rss_mib"] > 10
        # The feeding thread's CPU is part of the process's; the rest is the encoder thread's.
        assert 0 < row[case]["feeder_cpu_s"] < row[case]["cpu_s"]
        assert row[case]["encoder_ms_per_frame"] > 0
    assert set(row["full"]["stages"]) >= {"mix", "plan", "compose", "put"}
    assert row["full_vs_encode"] == pytest.approx(
        row["encode"]["cpu_s"] / row["full"]["cpu_s"], abs=0.001
    )
    assert "low     GRID" in pipeline_bench.format_table(report)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg binary to compare with")
def test_the_ffmpeg_reference_makes_the_same_kind_of_file(tmp_path: Path) -> None:
    participants = pipeline_bench.bench_room()
    inputs = pipeline_bench.write_ffmpeg_inputs(participants, tmp_path)
    out = tmp_path / "ffmpeg.mp4"
    command = pipeline_bench.ffmpeg_command(
        Quality.LOW,
        LayoutType.SIDEBAR,
        participants=participants,
        inputs=inputs,
        frames=15,
        out=out,
    )
    result = pipeline_bench.run_ffmpeg(command, Quality.LOW, LayoutType.SIDEBAR, 15)
    assert result.cpu_s > 0 and result.frames == 15
    report = probe(out)
    assert report.video is not None and report.video.packets == 15
    assert (report.video.width, report.video.height) == (854, 480)
    settings = pipeline_bench.bench_settings(Quality.LOW)
    options = report.x264_options
    assert options["threads"] == "1" and options["keyint"] == str(settings.keyframe_interval_frames)
    assert options["bitrate"] == str(settings.video_bitrate_bps // 1000)
    assert report.audio is not None and report.audio.codec == "aac"


def test_presets_bench_scores_each_preset_against_the_composed_frames() -> None:
    args = argparse.Namespace(quality=[Quality.LOW], frames=10, content="textured")
    affinity = os.sched_getaffinity(0)
    report = presets_bench.run(args)
    assert os.sched_getaffinity(0) == affinity  # the pin is undone afterwards
    rows = report["results"]
    assert [r["preset"] for r in rows] == list(presets_bench.COMPARED_PRESETS)  # type: ignore[union-attr]
    assert [r["preset"] for r in rows if r["chosen"]] == [X264_PRESETS[Quality.LOW]]  # type: ignore[union-attr]
    for row in rows:  # type: ignore[union-attr]
        assert row["cpu_ms_per_frame"] > 0 and row["frames"] == 10
        assert 15 < row["psnr_y_min_db"] <= row["psnr_y_mean_db"] < presets_bench.MAX_PSNR_DB
    source = np.full((4, 4), 100, np.uint8)
    assert presets_bench.psnr_db(source, source) == presets_bench.MAX_PSNR_DB
    off_by_one = source + 1  # MSE 1: 20 log10(255)
    assert presets_bench.psnr_db(off_by_one, source) == pytest.approx(48.13, abs=0.01)


def test_simulcast_bench_cameras_send_the_layer_that_fills_their_tile() -> None:
    """`--sources simulcast`: each camera switches to the smallest layer of the halving ladder
    that fills its tile, as the worker asks a simulcast room (`prefer_video_size`)."""
    participants = pipeline_bench.bench_room("synthetic", pipeline_bench.SOURCES_SIMULCAST)
    top = pipeline_bench.SOURCE.size
    for camera in (p.source for p in participants):
        assert set(camera.layers) == {layer_size(top, s) for s in range(SIMULCAST_LAYERS)}
        assert camera.layer == top and camera.frames[0].width == top.width  # before any tile
    scene = pipeline_bench.bench_scene(Quality.MED, LayoutType.SIDEBAR, participants)
    pipeline_bench.prefer_scene(participants, scene)
    cameras = {p.camera_feed: p.source for p in participants}
    drawn = {plan.tile.feed_id: plan.tile.rect.size for plan in scene.tiles}
    for feed, tile in drawn.items():
        layer = cameras[feed].layer
        assert layer == layer_size(top, substream_for_tile(tile, top))
        assert cameras[feed].frames[0].width == layer.width
        assert layer == top or max(tile.width / layer.width, tile.height / layer.height) <= 1 / 0.85
    assert len({cameras[feed].layer for feed in drawn}) == 2  # the main tile and the side tiles
    # A room without simulcast keeps sending its one layer whatever the tile.
    single = pipeline_bench.bench_room("synthetic")
    pipeline_bench.prefer_scene(single, scene)
    assert {p.source.layer for p in single} == {top}


def test_pipeline_bench_runs_with_simulcast_sources(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg here
    args = argparse.Namespace(
        quality=[Quality.MED],
        layout=[LayoutType.GRID],
        frames=10,
        content="synthetic",
        sources="simulcast",
        rounds=2,
    )
    report = pipeline_bench.run(args)
    assert report["sources"] == "simulcast" and "simulcast" in str(report["room"])
    assert report["rounds"] == 2
    (row,) = report["results"]  # type: ignore[misc]
    assert row["full"]["frames"] == 10 and row["full"]["cpu_s"] > 0
    # The top layers plus the two lower ones (a quarter and a sixteenth of the pixels each).
    top_only = pipeline_bench.PARTICIPANTS * pipeline_bench.CYCLE_FRAMES * 1280 * 720 * 1.5
    assert report["premade_sources_mib"] == round(top_only * (1 + 1 / 4 + 1 / 16) / 2**20)


def test_the_pipeline_bench_keeps_the_run_of_median_cpu() -> None:
    def run(cpu_s: float) -> pipeline_bench.CaseResult:
        return pipeline_bench.CaseResult("full", "low", "GRID", 10, 1.0, cpu_s, 100.0)

    assert pipeline_bench.median_run([run(3.0), run(1.0), run(9.0)]).cpu_s == 3.0
    assert pipeline_bench.median_run([run(4.0), run(2.0)]).cpu_s == 2.0  # the lower middle
    assert pipeline_bench.median_run([run(5.0)]).cpu_s == 5.0


def test_encode_only_encodes_exactly_what_the_full_pipeline_makes(tmp_path: Path) -> None:
    """The ratio full/encode must charge the full pipeline only for making the frames: fed the
    frames a run of the full pipeline made (speaker switches and all), encode-only writes a file
    byte for byte the same as the full pipeline's (one x264 thread is deterministic)."""
    for case in ("encode", "full"):
        pipeline_bench.CASES[case](
            Quality.LOW,
            LayoutType.SPOTLIGHT,
            45,
            tmp_path / f"{case}.mp4",
            content="synthetic",
            sources="simulcast",
        )
    made = (tmp_path / "full.mp4").read_bytes()
    assert probe(tmp_path / "full.mp4").video.packets == 45  # type: ignore[union-attr]
    assert (tmp_path / "encode.mp4").read_bytes() == made
