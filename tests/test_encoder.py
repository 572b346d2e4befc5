"""The encoder/muxer: fragmented MP4/M4A that plays, keeps sync, survives truncation, streams.

Every test makes its own media (flat frames whose luma encodes the frame index, the clapper's
flash and beep) and re-opens the output with PyAV through the checker (`recorder.inspect`).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import struct
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layouts.model import Orientation, Size
from recorder.errors import MediaError
from recorder.inspect import iter_video_frames, measure_sync, probe
from recorder.media.encoder import (
    AUDIO_FRAGMENT_S,
    EARLY_KEYFRAME_INDEXES,
    QUEUE_CAPACITY_ITEMS,
    VBV_BUFFER_S,
    VBV_MAXRATE_RATIO,
    X264_PRESETS,
    X264_THREADS,
    Encoder,
    EncoderSettings,
)
from recorder.media.fmp4 import BoxScanner, durable_length
from recorder.media.mixer import Mixer
from recorder.presets import AUDIO_SAMPLE_RATE_HZ, KEYFRAME_INTERVAL_S, PRESETS, Mode, Quality
from recorder.testing.clapper import LUMA_DARK, LUMA_WHITE, clapper_beeps, is_flash

SMALL = Size(320, 180)  # most tests need no more pixels than this
FPS = 30
# Flat frames: frame i has luma FIRST_LUMA + i, so a decoded frame tells its index by its mean.
# Slow changes: no scene cut, so keyframes come from the keyframe interval only.
FIRST_LUMA = 40
# A flat frame's decoded mean luma stays this close to what was encoded (x264 at any of our
# bitrates reproduces a flat area to a level or so).
LUMA_TOLERANCE = 2.0
# The encoder must not move audio against video: the only offset the checker may see is the
# beep's 1 ms fade-in (its envelope reaches half height ~0.5 ms late) plus AAC's smearing.
ENCODER_SYNC_TOLERANCE_S = 0.002
POLL_TIMEOUT_S = 10.0
X264_SUBME_OF_PRESET = {
    "ultrafast": "0",
    "superfast": "1",
    "veryfast": "2",
    "faster": "4",
}  # bounded polling for another thread's progress


def small_settings(**overrides: object) -> EncoderSettings:
    base = EncoderSettings.for_preset(PRESETS[Quality.LOW], queue_max_wait_s=None, canvas=SMALL)
    return replace(base, **overrides)  # type: ignore[arg-type]


def ramp_frame(size: Size, index: int) -> np.ndarray:
    planes = np.full((size.height * 3 // 2, size.width), 128, np.uint8)
    planes[: size.height] = FIRST_LUMA + index
    return planes


def audio_span(index: int, fps: int = FPS) -> tuple[int, int]:
    start = index * AUDIO_SAMPLE_RATE_HZ // fps
    return start, (index + 1) * AUDIO_SAMPLE_RATE_HZ // fps - start


def encode_ramp(path: Path, settings: EncoderSettings, frames: int, on_durable=None) -> Encoder:  # type: ignore[no-untyped-def]
    """Encode `frames` ramp frames with a quiet tone; returns the closed encoder."""
    encoder = Encoder(path, settings, on_durable=on_durable)
    with encoder:
        for i in range(frames):
            if settings.has_video:
                encoder.put_video(ramp_frame(settings.canvas, i), i)
            start, count = audio_span(i, settings.fps)
            t = np.arange(start, start + count) / AUDIO_SAMPLE_RATE_HZ
            tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            encoder.put_audio(np.stack([tone, tone]), start)
    return encoder


def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.parametrize("quality", list(Quality))
def test_presets_give_h264_high_and_aac_in_fragmented_mp4(tmp_path: Path, quality: Quality) -> None:
    preset = PRESETS[quality]
    settings = EncoderSettings.for_preset(preset, queue_max_wait_s=None)
    frames = FPS  # one second at the preset's full canvas
    path = tmp_path / f"{quality}.mp4"
    stats = encode_ramp(path, settings, frames).stats

    report = probe(path)
    assert report.format.startswith("mov,mp4")
    assert report.damage is None
    assert report.playable_bytes == report.size_bytes == path.stat().st_size == stats.bytes_written
    video, audio = report.video, report.audio
    assert video is not None and audio is not None
    assert (video.codec, video.profile, video.pixel_format) == ("h264", "High", "yuv420p")
    assert (video.width, video.height) == (preset.landscape.width, preset.landscape.height)
    assert (video.colorspace, video.color_range) == (6, 1)  # BT.601, limited: the compositor's
    assert video.packets == frames and video.irregular_deltas == 0
    assert video.frame_rate == pytest.approx(FPS)
    assert video.start_s == 0.0 and video.duration_s == pytest.approx(frames / FPS)
    assert (audio.codec, audio.profile) == ("aac", "LC")
    assert (audio.sample_rate, audio.channels) == (AUDIO_SAMPLE_RATE_HZ, 2)
    # Duration within one frame of what was recorded (AAC pads its last frame).
    assert report.duration_s == pytest.approx(frames / FPS, abs=1 / FPS)
    # The rate control the preset asks for, as x264 itself recorded it in the stream.
    options = report.x264_options
    assert options["keyint"] == str(round(KEYFRAME_INTERVAL_S * FPS))
    assert options["open_gop"] == "0"
    assert options["rc"] == "abr"
    assert int(options["bitrate"]) == preset.video_bitrate_bps // 1000
    assert int(options["vbv_maxrate"]) == round(preset.video_bitrate_bps * VBV_MAXRATE_RATIO / 1000)
    assert int(options["vbv_bufsize"]) == round(preset.video_bitrate_bps * VBV_BUFFER_S / 1000)
    # The speed preset measured for this quality (its motion-estimation depth is its signature).
    assert options["subme"] == X264_SUBME_OF_PRESET[X264_PRESETS[quality]]
    assert stats.frames_in == stats.frames_encoded == frames
    assert stats.queue_drops == 0


def test_keyframes_at_most_every_two_seconds_and_every_frame_decodes_in_order(
    tmp_path: Path,
) -> None:
    frames = 5 * FPS + 7
    path = tmp_path / "long.mp4"
    encode_ramp(path, small_settings(), frames)
    report = probe(path)
    assert report.video is not None
    assert report.video.keyframe_spacing_max_s is not None
    assert report.video.keyframe_spacing_max_s <= KEYFRAME_INTERVAL_S + 1e-9
    assert report.video.keyframes >= 3  # 5.2 s needs at least three GOPs
    # One fragment per keyframe but the first forced one, which writes only the moov: no
    # fragment is longer than the keyframe interval.
    assert report.fragments == report.video.keyframes - 1
    decoded = list(iter_video_frames(path))
    assert [f.pts * f.time_base for f in decoded] == [Fraction(i, FPS) for i in range(frames)]
    means = [float(f.to_ndarray()[: SMALL.height].mean()) for f in decoded]
    assert means == pytest.approx([FIRST_LUMA + i for i in range(frames)], abs=LUMA_TOLERANCE)


def test_flash_and_beep_stay_together(tmp_path: Path) -> None:
    settings = small_settings()
    beeps = clapper_beeps()
    path = tmp_path / "clapper.mp4"
    with Encoder(path, settings) as encoder:
        for i in range(3 * FPS):
            planes = np.full((SMALL.height * 3 // 2, SMALL.width), 128, np.uint8)
            planes[: SMALL.height] = LUMA_WHITE if is_flash(i / FPS) else LUMA_DARK
            encoder.put_video(planes, i)
            start, count = audio_span(i)
            mono = beeps.render(start, count, AUDIO_SAMPLE_RATE_HZ)
            encoder.put_audio(np.stack([mono, mono]), start)
    sync = measure_sync(path)
    assert sync.flashes_s == pytest.approx([1.0, 2.0])  # the one at 0 s has no onset to see
    assert len(sync.claps) == 2 and len(sync.offsets_s) == 2
    assert sync.max_abs_offset_s is not None
    assert sync.max_abs_offset_s <= ENCODER_SYNC_TOLERANCE_S


def test_a_file_cut_anywhere_plays_up_to_its_last_complete_fragment(tmp_path: Path) -> None:
    frames = 4 * FPS
    path = tmp_path / "whole.mp4"
    # Fragments every half second: several cut points between fragments in a short file.
    encode_ramp(path, small_settings(keyframe_interval_s=0.5), frames)
    data = path.read_bytes()
    with av.open(str(path)) as container:
        video_positions = [
            p.pos for p in container.demux(container.streams.video[0]) if p.size and p.pos >= 0
        ]
    assert len(video_positions) == frames
    boundaries = _fragment_ends(data)
    assert len(boundaries) >= 7
    # Cut at each fragment end, a byte before and after it, and in the middle of each fragment,
    # from the end of the first fragment on.
    cuts = set()
    for previous, end in itertools.pairwise(boundaries):
        cuts.update({end - 1, end, end + 1, (previous + end) // 2})
    cuts = {c for c in cuts if boundaries[0] <= c < len(data)}
    for cut in sorted(cuts):
        truncated = tmp_path / "cut.mp4"
        truncated.write_bytes(data[:cut])
        playable = durable_length(truncated)
        assert playable in boundaries and playable <= cut
        complete_frames = sum(1 for pos in video_positions if pos < playable)
        decoded = list(iter_video_frames(truncated))
        assert len(decoded) >= complete_frames, f"cut at {cut}"
        assert complete_frames >= len(EARLY_KEYFRAME_INDEXES)  # the first fragment at least
        for index, frame in enumerate(decoded):
            assert frame.pts * frame.time_base == Fraction(index, FPS)
            luma = float(frame.to_ndarray()[: SMALL.height].mean())
            assert luma == pytest.approx(FIRST_LUMA + index, abs=LUMA_TOLERANCE)


def _fragment_ends(data: bytes) -> list[int]:
    """Where each complete media fragment ends (the init segment's boxes are not counted)."""
    scanner, ends = BoxScanner(), []
    # Byte by byte: a larger chunk could complete several boxes at once.
    for offset in range(len(data)):
        if scanner.feed(data[offset : offset + 1]) and scanner.fragments:
            ends.append(scanner.durable_bytes)
    return ends


def test_durable_reports_only_grow_and_never_cover_bytes_that_change(tmp_path: Path) -> None:
    path = tmp_path / "streamed.mp4"
    reports: list[tuple[int, str]] = []

    def on_durable(size: int) -> None:
        # What an uploader would send right now: the first `size` bytes, as they are on disk.
        with path.open("rb") as file:
            prefix = file.read(size)
        assert len(prefix) == size
        reports.append((size, hashlib.sha256(prefix).hexdigest()))

    encoder = encode_ramp(path, small_settings(keyframe_interval_s=0.5), 3 * FPS, on_durable)
    sizes = [size for size, _ in reports]
    assert sizes == sorted(sizes) and len(sizes) >= 6
    final = path.read_bytes()
    assert sizes[-1] == len(final) == encoder.durable_bytes == encoder.stats.durable_bytes
    # One report per media fragment (the init segment alone is not reported), then the close.
    first = BoxScanner()
    first.feed(final[: sizes[0]])
    assert first.fragments == 1
    assert len(sizes) == encoder.stats.fragments + 1 and sizes[-2] < sizes[-1]
    for size, digest in reports:
        assert hashlib.sha256(final[:size]).hexdigest() == digest
        # Each report ends exactly on a playable boundary.
        cut = tmp_path / "prefix.mp4"
        cut.write_bytes(final[:size])
        assert durable_length(cut) == size
    assert encoder.stats.fragments == probe(path).fragments


def test_the_first_fragment_is_short_so_the_first_frames_are_durable_at_once(
    tmp_path: Path,
) -> None:
    # STARTED is told when the first frames are in the file: that must not wait a whole
    # keyframe interval (2 s) for the first fragment to close.
    path = tmp_path / "early.mp4"
    reports: list[int] = []
    encode_ramp(path, small_settings(), 3 * FPS, reports.append)
    first = tmp_path / "first.mp4"
    first.write_bytes(path.read_bytes()[: reports[0]])
    decoded = list(iter_video_frames(first))
    assert [float(f.pts * f.time_base) for f in decoded] == [0.0, 1 / FPS]
    assert float(decoded[0].to_ndarray()[: SMALL.height].mean()) == pytest.approx(
        FIRST_LUMA, abs=LUMA_TOLERANCE
    )


def test_x264_runs_a_fixed_number_of_frame_threads_whatever_the_host(tmp_path: Path) -> None:
    # x264's own choice (1.5 threads per core) would delay the first frames (and STARTED) and
    # grow memory with the host's core count: ~56 frames and +250 MB at 720p on 16 cores.
    path = tmp_path / "threads.mp4"
    encode_ramp(path, small_settings(), FPS // 3)
    options = probe(path).x264_options
    assert options["threads"] == str(X264_THREADS) and options["sliced_threads"] == "0"


def test_audio_mode_writes_aac_only_in_fragmented_m4a(tmp_path: Path) -> None:
    settings = replace(small_settings(), mode=Mode.AUDIO)
    assert settings.file_suffix == ".m4a"
    path = tmp_path / "audio.m4a"
    frames = 3 * FPS  # 3 s of audio, fed tick by tick as the engine does
    encode_ramp(path, settings, frames)
    report = probe(path)
    assert report.video is None
    assert [s.kind for s in report.streams] == ["audio"]
    assert report.audio is not None and report.audio.codec == "aac"
    assert report.audio.duration_s == pytest.approx(3.0, abs=1024 / AUDIO_SAMPLE_RATE_HZ)
    assert report.duration_s == pytest.approx(3.0, abs=1 / FPS)
    # A fragment per AUDIO_FRAGMENT_S: a crash loses at most that much.
    assert report.fragments >= int(3.0 / AUDIO_FRAGMENT_S)
    assert path.read_bytes()[4:11] == b"ftypM4A"
    with pytest.raises(ValueError, match="audio only"):
        Encoder(tmp_path / "x.m4a", settings).put_video(ramp_frame(SMALL, 0), 0)


def test_portrait_canvas_is_the_landscape_canvas_transposed(tmp_path: Path) -> None:
    preset = PRESETS[Quality.LOW]
    settings = EncoderSettings.for_preset(
        preset, orientation=Orientation.PORTRAIT, queue_max_wait_s=None
    )
    assert settings.canvas == Size(preset.landscape.height, preset.landscape.width)
    path = tmp_path / "portrait.mp4"
    encode_ramp(path, settings, 10)
    video = probe(path).video
    assert video is not None and (video.width, video.height) == (480, 854)


def put_tick(encoder: Encoder, index: int) -> tuple[bool, bool]:
    """One tick's video frame and audio span, as the engine gives them (both, always)."""
    video_ok = encoder.put_video(ramp_frame(SMALL, index % 100), index)
    start, count = audio_span(index)
    audio_ok = encoder.put_audio(np.zeros((2, count), np.float32), start)
    return video_ok, audio_ok


def test_full_queue_waits_a_bounded_time_then_drops_and_counts(tmp_path: Path) -> None:
    release = threading.Event()

    def stall(_: int) -> None:  # the encoder thread stalls at its first fragment (a slow disk)
        release.wait(POLL_TIMEOUT_S)

    settings = small_settings(keyframe_interval_s=0.1, queue_max_wait_s=0.02)
    encoder = Encoder(tmp_path / "stalled.mp4", settings, on_durable=stall)
    accepted: list[int] = []
    dropped = 0
    index = 0
    while encoder.stats.queue_drops == 0:
        if index > 1000:
            raise AssertionError("the queue never filled up")
        video_ok, audio_ok = put_tick(encoder, index)
        if video_ok:
            accepted.append(index)
        dropped += (not video_ok) + (not audio_ok)
        index += 1
    release.set()
    stats = encoder.close()
    assert stats.queue_drops == dropped == 1
    assert stats.queue_waits >= stats.queue_drops
    assert stats.queue_wait_s >= 0.02  # the drop waited the full bound first
    assert stats.queue_peak == QUEUE_CAPACITY_ITEMS
    assert stats.frames_in == stats.frames_encoded == len(accepted)
    # Everything accepted is in the file, at its own pts (a dropped frame leaves a gap).
    decoded = [int(f.pts * f.time_base * FPS) for f in iter_video_frames(encoder.path)]
    assert decoded == accepted


def test_offline_queue_waits_as_long_as_it_takes_and_drops_nothing(tmp_path: Path) -> None:
    release = threading.Event()
    encoder = Encoder(
        tmp_path / "offline.mp4",
        small_settings(keyframe_interval_s=0.1, queue_max_wait_s=None),
        on_durable=lambda _: release.wait(POLL_TIMEOUT_S),
    )
    frames = 120
    producer = threading.Thread(
        target=lambda: [put_tick(encoder, i) for i in range(frames)], name="producer"
    )
    producer.start()
    wait_for(lambda: encoder.stats.queue_waits > 0, "the producer to block on a full queue")
    assert producer.is_alive()
    release.set()
    producer.join(POLL_TIMEOUT_S)
    stats = encoder.close()
    assert stats.queue_drops == 0 and stats.frames_encoded == frames


def test_a_failing_disk_becomes_a_media_error(tmp_path: Path) -> None:
    def disk_full(_: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    encoder = Encoder(tmp_path / "full.mp4", small_settings(keyframe_interval_s=0.1), disk_full)
    with pytest.raises(MediaError, match="No space left"):
        for i in range(300):
            put_tick(encoder, i)
        encoder.close()
    assert encoder.failed is not None and encoder.failed.code == "MEDIA_FAILED"
    with pytest.raises(MediaError):
        encoder.close()  # the failure is remembered


def test_bad_input_is_refused_before_it_reaches_the_encoder(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot create"):
        Encoder(tmp_path / "missing-dir" / "x.mp4", small_settings())
    with Encoder(tmp_path / "x.mp4", small_settings()) as encoder:
        with pytest.raises(ValueError, match="canvas"):
            encoder.put_video(ramp_frame(Size(64, 64), 0), 0)
        encoder.put_video(ramp_frame(SMALL, 0), 5)
        with pytest.raises(ValueError, match="not after"):
            encoder.put_video(ramp_frame(SMALL, 0), 5)
        with pytest.raises(ValueError, match="shaped"):
            encoder.put_audio(np.zeros((1, 100), np.float32))
        encoder.put_audio(np.zeros((2, 100), np.float32), 1000)
        with pytest.raises(ValueError, match="overlaps"):
            encoder.put_audio(np.zeros((2, 100), np.float32), 1050)
    with pytest.raises(MediaError, match="closed"):
        encoder.put_video(ramp_frame(SMALL, 0), 6)


# -- the fragment scanner ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def fragmented(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fmp4") / "f.mp4"
    encode_ramp(path, small_settings(keyframe_interval_s=0.25), 2 * FPS)
    return path.read_bytes()


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=60))
def test_scanner_agrees_with_the_file_scan_in_any_chunking(
    fragmented: bytes, chunks: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    scanner = BoxScanner()
    offset = 0
    for size in chunks:
        scanner.feed(fragmented[offset : offset + size])
        offset = min(len(fragmented), offset + size)
    prefix = tmp_path_factory.mktemp("prefix") / "p.mp4"
    prefix.write_bytes(fragmented[:offset])
    assert scanner.position == offset
    assert scanner.durable_bytes == durable_length(prefix)


def test_scanner_reads_64_bit_sizes_and_never_ends_on_a_moof() -> None:
    ftyp = struct.pack(">I4s", 16, b"ftyp") + b"isom\0\0\0\0"
    large_mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + 4) + b"abcd"
    moof = struct.pack(">I4s", 12, b"moof") + b"xyzw"
    mdat = struct.pack(">I4s", 10, b"mdat") + b"hi"
    scanner = BoxScanner()
    scanner.feed(ftyp + large_mdat)
    assert scanner.durable_bytes == len(ftyp) + len(large_mdat)
    scanner.feed(moof)
    assert scanner.durable_bytes == len(ftyp) + len(large_mdat)  # a moof alone is not playable
    scanner.feed(mdat[:5])
    assert scanner.durable_bytes == len(ftyp) + len(large_mdat)
    scanner.feed(mdat[5:])
    assert scanner.durable_bytes == len(ftyp) + len(large_mdat) + len(moof) + len(mdat)
    assert scanner.fragments == 1
    with pytest.raises(ValueError, match="less than its header"):
        BoxScanner().feed(struct.pack(">I4s", 4, b"free"))


def test_the_mixers_frames_go_in_as_they_are(tmp_path: Path) -> None:
    mixer = Mixer()
    beeps = clapper_beeps()
    path = tmp_path / "mixed.mp4"
    with Encoder(path, small_settings()) as encoder:
        for i in range(2 * FPS):
            planes = np.full((SMALL.height * 3 // 2, SMALL.width), 128, np.uint8)
            planes[: SMALL.height] = LUMA_WHITE if is_flash(i / FPS) else LUMA_DARK
            encoder.put_video(planes, i)
            start, count = audio_span(i)
            voice = beeps.render(start, count, AUDIO_SAMPLE_RATE_HZ)[None, :]
            for frame in mixer.mix(start, count, {"clapper": voice}):
                encoder.put_audio(frame)  # the frame's own pts places it
        for frame in mixer.flush():
            encoder.put_audio(frame)
        with pytest.raises(ValueError, match="48000 Hz stereo"):
            mono = av.AudioFrame.from_ndarray(np.zeros((1, 64), np.float32), "fltp", "mono")
            mono.sample_rate = AUDIO_SAMPLE_RATE_HZ
            encoder.put_audio(mono)
    assert encoder.stats.audio_samples_in == 2 * AUDIO_SAMPLE_RATE_HZ
    sync = measure_sync(path)
    assert len(sync.offsets_s) == 1
    assert sync.max_abs_offset_s is not None
    assert sync.max_abs_offset_s <= ENCODER_SYNC_TOLERANCE_S
