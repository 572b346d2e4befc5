"""`recorder bench --pipeline`: what one recording costs, stage by stage, against ffmpeg.

For each quality x layout, on one core, with the benchmark room of `recorder.bench.compose` (four
participants with 1280x720 cameras, one muted; speech-like microphones):

* **compose**: `recorder.bench.compose.measure` (changing sources) at that layout: ms per frame;
* **encode**: the encoder alone (x264 + AAC + fragmented MP4) fed the very canvases and mixed
  audio the full pipeline makes, in the same order (made by a run of it before the clock starts,
  with the encoder replaced by `_Capture`): the floor any pipeline pays for this output. Fed
  anything else (a cycle of one scene, as until 2026-11-24), x264 does different work: the full
  pipeline's speaker switches cost x264 up to 9% more in SPOTLIGHT, which was charged to
  compositing;
* **full**: the whole offline pipeline (`recorder.media.offline`: timeline, mixer, layouts,
  compositor, encoder) on a virtual clock, fed pre-made source frames;
* **ffmpeg** (when an `ffmpeg` binary is on the PATH; skipped otherwise): the same composition
  as a filter graph (`scale` per tile to the tile our layout computes, `overlay` onto a
  background, `amix` of the microphones) with the same encoder settings, into the same kind of
  file. It draws no labels, rings or avatars, so it does less than we do: a conservative yardstick.

Each case runs in its own process, pinned to one CPU (`os.sched_setaffinity`), with x264
`threads=1` and, for ffmpeg, `-threads 1 -filter_threads 1 -filter_complex_threads 1`, so the
figures are the cost on one core and a case's peak RSS is that of a process doing only it. Source
media is made before the clock starts: a cycle of `CYCLE_FRAMES` distinct frames per camera and
the same span of 20 ms audio frames per microphone, handed out again and again (re-stamped), and
written as raw files for ffmpeg. Making synthetic media is not the recorder's work; converting,
placing, mixing, composing and encoding it is.

Throughput is reported as frames per second of wall time and as CPU seconds per recorded second;
the ratios use CPU time, which on a shared machine is the better measure of the work (wall time
also counts the time slices other processes took on the same core). Targets: full >= 0.85 x
encode-only throughput, full >= 1.0 x ffmpeg. Each case also reports the CPU time of the thread
that fed the encoder (full: the media thread, i.e. everything but x264, AAC and muxing), so the
rest of the process is the encoder thread's: where a full case's extra time goes.

`--rounds N` (3 from the command line) runs the cases N times, interleaved, and reports each
case's run of median CPU time: on a shared machine one case's x264 thread varies by +-5% from
run to run, which alone moves a ratio by 0.04. `--sources simulcast` gives every camera the
layer the recorder would ask a simulcast room for (`SOURCES_SIMULCAST` below).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from layouts.model import LayoutSpec, LayoutType, Size, Theme
from layouts.scene import Scene, plan_frame
from recorder.bench import compose as compose_bench
from recorder.media.clock import ManualClock, RecordingClock
from recorder.media.compositor import Compositor
from recorder.media.encoder import (
    AUDIO_MOVFLAGS,
    VBV_BUFFER_S,
    VBV_MAXRATE_RATIO,
    VIDEO_MOVFLAGS,
    X264_SCENECUT,
    Encoder,
    EncoderSettings,
    EncoderStats,
)
from recorder.media.engine import MediaEngine, TickReport
from recorder.media.offline import OFFLINE_PLAYOUT, ScriptedParticipant, ScriptedRoom
from recorder.media.timeline import Timeline
from recorder.presets import AUDIO_SAMPLE_RATE_HZ, PRESETS, Mode, Quality
from recorder.rooms.janus.simulcast import TOP_SUBSTREAM, layer_size, substream_for_tile
from recorder.testing.sources import AudioFormat, Sound, VideoFormat, synthetic_participant
from recorder.testing.stills import demo_name

HELP = "time the whole pipeline against encode-only and ffmpeg, per quality and layout"

PARTICIPANTS = compose_bench.PARTICIPANTS
MUTED_PARTICIPANT = 2  # numbered from 1: no microphone, drawn with the mute mark
SOURCE_FPS = 30
SOURCE = VideoFormat(compose_bench.SOURCE_SIZE.width, compose_bench.SOURCE_SIZE.height, SOURCE_FPS)
CYCLE_FRAMES = 30  # distinct frames per camera, cycled; one second at 30 fps
# Camera content: the project's synthetic cameras (flat colour, text, a moving square), or
# camera-like texture (`textured_frames`), which costs x264 what real cameras cost.
SYNTHETIC = "synthetic"
TEXTURED = "textured"
CONTENTS = (SYNTHETIC, TEXTURED)
TEXTURE_PAN_PX = 48  # how far the texture pans around its centre over one cycle
TEXTURE_BLUR_PX = 9  # box blur of the noise: detail a camera resolves, not pixel noise
# Which size each camera arrives at: every camera at its top layer, 1280x720 (a room that
# forwards one quality), or, in a simulcast room, at the layer the recorder asks for: the
# smallest of the browsers' halving ladder (1280x720, 640x360, 320x180) that fills the tile the
# camera is drawn in (`recorder.rooms.janus.simulcast`), switched from the next frame whenever
# the tiles change, as the live worker asks through `RoomConnector.prefer_video_size`. The
# lower layers are made before the clock starts, from the top one: the sender's work.
SOURCES_TOP = "top"
SOURCES_SIMULCAST = "simulcast"
SOURCE_CHOICES = (SOURCES_TOP, SOURCES_SIMULCAST)
TARGET_FULL_VS_ENCODE = 0.85
TARGET_FULL_VS_FFMPEG = 1.0
CASE_TIMEOUT_S = 600.0
BYTES_PER_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One timed run of one case in its own pinned process."""

    case: str  # "encode" | "full" | "ffmpeg"
    quality: str
    layout: str
    frames: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    # full: wall seconds per stage of the tick loop (feed, mix, plan, compose, put, close)
    stages: dict[str, float] | None = None
    # CPU seconds of the thread that fed the encoder (full: the media thread, everything but
    # the encoder thread; encode: handing it the pre-made frames). cpu_s minus this is the
    # encoder thread's (x264, AAC, muxing).
    feeder_cpu_s: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_s_per_recorded_s(self) -> float:
        return self.cpu_s / (self.frames / PRESETS[Quality(self.quality)].fps)

    @property
    def feeder_ms_per_frame(self) -> float:
        """CPU ms per frame of the thread that fed the encoder (full: the media thread)."""
        return self.feeder_cpu_s * 1000 / self.frames

    @property
    def encoder_ms_per_frame(self) -> float:
        """CPU ms per frame of the rest of the process: the encoder thread."""
        return (self.cpu_s - self.feeder_cpu_s) * 1000 / self.frames

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "fps": round(self.fps, 1),
            "cpu_s_per_recorded_s": round(self.cpu_s_per_recorded_s, 3),
            "feeder_ms_per_frame": round(self.feeder_ms_per_frame, 3),
            "encoder_ms_per_frame": round(self.encoder_ms_per_frame, 3),
        }


# -- the room ---------------------------------------------------------------------------------
class CyclingCamera:
    """A participant whose camera and microphone cycle through pre-made frames.

    Making synthetic media is not the recorder's work, so it is done before the clock starts.
    Frames are re-stamped as they are handed out; a frame object comes back only after a whole
    cycle (one second), long after the timeline (which keeps at most a few) let go of it.
    """

    def __init__(self, number: int, content: str = SYNTHETIC, sources: str = SOURCES_TOP) -> None:
        microphone = None if number == MUTED_PARTICIPANT else AudioFormat()
        self._inner = synthetic_participant(
            number - 1, demo_name(number), SOURCE, microphone, sound=Sound.SPEECH
        )
        self.name = self._inner.name
        if content == TEXTURED:
            top = textured_frames(number, CYCLE_FRAMES)
        else:
            top = [self._inner.video_frame(i) for i in range(CYCLE_FRAMES)]
        self.simulcast = sources == SOURCES_SIMULCAST
        self.layers = {SOURCE.size: top}
        if self.simulcast:
            for substream in range(TOP_SUBSTREAM):
                size = layer_size(SOURCE.size, substream)
                scaler = VideoReformatter()
                self.layers[size] = [
                    scaler.reformat(frame, size.width, size.height, interpolation="AREA")
                    for frame in top
                ]
        self.layer = SOURCE.size  # the size sent now
        # The microphone's first cycle (same length as the camera's), re-stamped likewise.
        self.audio = list(self._inner.audio_frames(0.0, CYCLE_FRAMES / SOURCE.fps))

    @property
    def frames(self) -> list[av.VideoFrame]:
        """The cycle of the layer sent now."""
        return self.layers[self.layer]

    def prefer(self, tile: Size) -> None:
        """Switch to the layer a simulcast room forwards for `tile` (no-op for a single layer)."""
        if self.simulcast:
            self.layer = layer_size(SOURCE.size, substream_for_tile(tile, SOURCE.size))

    def premade_bytes(self) -> int:
        return sum(
            len(frames) * size.width * size.height * 3 // 2 for size, frames in self.layers.items()
        )

    @property
    def video_format(self) -> VideoFormat:
        return SOURCE

    @property
    def audio_format(self) -> AudioFormat | None:
        return self._inner.audio_format

    def video_frames(
        self, start_s: float = 0.0, end_s: float | None = None
    ) -> Iterator[av.VideoFrame]:
        index = SOURCE.first_index(start_s)
        while end_s is None or SOURCE.frame_time_s(index) < end_s - 1e-9:
            frame = self.frames[index % CYCLE_FRAMES]
            frame.pts, frame.time_base = SOURCE.pts(index), SOURCE.time_base
            yield frame
            index += 1

    def audio_frames(
        self, start_s: float = 0.0, end_s: float | None = None
    ) -> Iterator[av.AudioFrame]:
        if not self.audio:
            return
        samples = self.audio[0].samples
        index = round(start_s * AUDIO_SAMPLE_RATE_HZ) // samples
        while end_s is None or index * samples < end_s * AUDIO_SAMPLE_RATE_HZ - 1e-6:
            frame = self.audio[index % len(self.audio)]
            frame.pts = index * samples
            yield frame
            index += 1

    def raw_video(self) -> bytes:
        """The cycle as raw yuv420p, for ffmpeg."""
        return b"".join(frame.to_ndarray().tobytes() for frame in self.frames)

    def raw_audio(self, seconds: float) -> bytes | None:
        """`seconds` of the microphone as s16le mono at 48 kHz, for ffmpeg."""
        if self._inner.signal is None:
            return None
        samples = self._inner.signal.render(
            0, round(seconds * AUDIO_SAMPLE_RATE_HZ), AUDIO_SAMPLE_RATE_HZ
        )
        return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def textured_frames(number: int, count: int) -> list[av.VideoFrame]:
    """Camera-like frames: fine random detail (blurred noise) panning slowly, tinted.

    Flat synthetic cameras cost x264 very little; real cameras have texture, noise and motion
    everywhere, which is what makes encoding cost what it does. Seeded: the same every run.
    """
    rng = np.random.default_rng(number)
    margin = TEXTURE_PAN_PX
    height, width = SOURCE.height + 2 * margin, SOURCE.width + 2 * margin
    noise = rng.random((height // 4, width // 4), dtype=np.float32).repeat(4, 0).repeat(4, 1)
    kernel = np.ones(TEXTURE_BLUR_PX, np.float32) / TEXTURE_BLUR_PX
    for axis in (0, 1):
        noise = np.apply_along_axis(np.convolve, axis, noise, kernel, "same")
    luma = (40 + 170 * noise).astype(np.uint8)
    frames = []
    for index in range(count):
        angle = 2 * np.pi * index / count
        x = margin + round(margin * 0.8 * np.cos(angle))
        y = margin + round(margin * 0.8 * np.sin(angle))
        planes = np.empty((SOURCE.height * 3 // 2, SOURCE.width), np.uint8)
        planes[: SOURCE.height] = luma[y : y + SOURCE.height, x : x + SOURCE.width]
        planes[SOURCE.height :] = 110 + 10 * (number % 4)
        frames.append(av.VideoFrame.from_ndarray(planes, format="yuv420p"))
    return frames


def bench_room(content: str = SYNTHETIC, sources: str = SOURCES_TOP) -> list[ScriptedParticipant]:
    return [
        ScriptedParticipant(
            f"p{number}", CyclingCamera(number, content, sources), muted=number == MUTED_PARTICIPANT
        )
        for number in range(1, PARTICIPANTS + 1)
    ]


def prefer_tiles(participants: list[ScriptedParticipant], tile_sizes: Mapping[str, Size]) -> None:
    """Each camera drawn at `tile_sizes` switches to the layer that fills its tile."""
    for participant in participants:
        size = tile_sizes.get(participant.camera_feed)
        if size is not None:
            participant.source.prefer(size)  # type: ignore[attr-defined]


def prefer_scene(participants: list[ScriptedParticipant], scene: Scene) -> None:
    """The layers asked for when `scene` is drawn (the recording's first tick)."""
    prefer_tiles(participants, {plan.tile.feed_id: plan.tile.rect.size for plan in scene.tiles})


def layout_spec(layout: LayoutType) -> LayoutSpec:
    return LayoutSpec(type=layout, theme=Theme.DEFAULT)


def bench_settings(quality: Quality) -> EncoderSettings:
    """The encoder as a recording uses it, on one thread, never dropping."""
    return EncoderSettings.for_preset(PRESETS[quality], threads=1, queue_max_wait_s=None)


def bench_scene(
    quality: Quality, layout: LayoutType, participants: list[ScriptedParticipant]
) -> Scene:
    settings = bench_settings(quality)
    room = ScriptedRoom(
        participants, Timeline(RecordingClock(ManualClock(), settings.fps), OFFLINE_PLAYOUT)
    )
    views = [entry.view for entry in room.entries(0.0)]
    _, scene = plan_frame(None, views, layout_spec(layout), settings.canvas, 0.0)
    return scene


def composed_canvases(
    quality: Quality, layout: LayoutType, participants: list[ScriptedParticipant]
) -> list[av.VideoFrame]:
    """The room composed once per frame of the cameras' cycle (`recorder bench --presets`)."""
    scene = bench_scene(quality, layout, participants)
    prefer_scene(participants, scene)
    compositor = Compositor(bench_settings(quality).canvas)
    return [
        compositor.compose(
            scene,
            {p.camera_feed: p.source.frames[i] for p in participants},  # type: ignore[attr-defined]
        )
        for i in range(CYCLE_FRAMES)
    ]


# -- cases, each in its own process -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Timed:
    """What a case measured: wall, process CPU and feeding-thread CPU seconds, stages."""

    wall_s: float
    cpu_s: float
    feeder_cpu_s: float
    stages: dict[str, float] | None = None


class _Capture:
    """Stands in for the encoder in a run of the full pipeline made before the clock starts: it
    keeps every canvas and mixed audio frame it is handed, in order, so that encode-only encodes
    the very frames the full pipeline encodes (speaker switches, rings and all)."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self.puts: list[tuple[av.VideoFrame | av.AudioFrame, int | None]] = []
        self.stats = EncoderStats()

    def put_video(self, frame: av.VideoFrame, index: int) -> bool:
        self.puts.append((frame, index))
        return True

    def put_audio(self, frame: av.AudioFrame) -> bool:
        self.puts.append((frame, None))
        return True

    def close(self) -> EncoderStats:
        return self.stats


def _engine(
    quality: Quality,
    layout: LayoutType,
    participants: list[ScriptedParticipant],
    encoder: Encoder | _Capture,
) -> MediaEngine:
    """The offline pipeline over the bench room, as a recording runs it."""
    clock = RecordingClock(ManualClock(), encoder.settings.fps)
    timeline = Timeline(clock, OFFLINE_PLAYOUT)
    room = ScriptedRoom(participants, timeline)

    def follow_tiles(report: TickReport) -> None:  # the worker's prefer_video_size, in-process
        if report.tile_sizes is not None:
            prefer_tiles(participants, report.tile_sizes)

    return MediaEngine(
        clock=clock,
        timeline=timeline,
        roster=room,
        encoder=encoder,  # type: ignore[arg-type]  # _Capture: the part of Encoder it uses
        layout=layout_spec(layout),
        feeder=room.feed_until,
        on_tick=follow_tiles,
    )


def _encode_case(
    quality: Quality, layout: LayoutType, frames: int, out: Path, *, content: str, sources: str
) -> _Timed:
    settings = bench_settings(quality)
    capture = _Capture(settings)
    _engine(quality, layout, bench_room(content, sources), capture).run(
        threading.Event(), frames / settings.fps
    )
    encoder = Encoder(out, settings)
    wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
    with encoder:
        for frame, index in capture.puts:
            if index is None:
                encoder.put_audio(frame)  # type: ignore[arg-type]
            else:
                encoder.put_video(frame, index)  # type: ignore[arg-type]
    return _Timed(
        time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - thread
    )


def _full_case(
    quality: Quality, layout: LayoutType, frames: int, out: Path, *, content: str, sources: str
) -> _Timed:
    settings = bench_settings(quality)
    engine = _engine(quality, layout, bench_room(content, sources), Encoder(out, settings))
    wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
    stats = engine.run(threading.Event(), frames / settings.fps)
    wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    media_cpu_s = time.thread_time() - thread
    stages = {
        "feed": stats.feed_s,
        "mix": stats.mix_s,
        "plan": stats.plan_s,
        "compose": stats.compose_s,
        "put": stats.encode_put_s,
        "close": stats.close_s,
        "encoder_thread": stats.encoder.encode_s,
    }
    return _Timed(
        wall_s, cpu_s, media_cpu_s, {name: round(value, 4) for name, value in stages.items()}
    )


CASES = {"encode": _encode_case, "full": _full_case}


def _pin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


def bench_cpu() -> int:
    """The core every case is pinned to: the last one this process may run on."""
    return max(os.sched_getaffinity(0))


def run_case(
    case: str,
    quality: Quality,
    layout: LayoutType,
    *,
    frames: int,
    workdir: Path,
    content: str,
    sources: str = SOURCES_TOP,
) -> CaseResult:
    """Run one of `CASES` in a fresh, pinned Python process; its result."""
    command = [
        sys.executable,
        "-m",
        "recorder.bench.pipeline",
        case,
        quality.value,
        layout.value,
        str(frames),
        str(workdir / f"{case}-{quality}-{layout}.mp4"),
        str(bench_cpu()),
        content,
        sources,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CASE_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench case {case} {quality} {layout} failed: {done.stderr.strip()}")
    return CaseResult(**json.loads(done.stdout.strip().splitlines()[-1]))


def _child_main(argv: list[str]) -> int:
    case, quality, layout, frames, out, cpu, content, sources = argv
    _pin(int(cpu))
    timed = CASES[case](
        Quality(quality),
        LayoutType(layout),
        int(frames),
        Path(out),
        content=content,
        sources=sources,
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = CaseResult(
        case,
        quality,
        layout,
        int(frames),
        timed.wall_s,
        timed.cpu_s,
        peak_kib / 1024,
        timed.stages,
        timed.feeder_cpu_s,
    )
    print(json.dumps(asdict(result)))
    return 0


# -- ffmpeg -----------------------------------------------------------------------------------
def write_ffmpeg_inputs(
    participants: list[ScriptedParticipant], folder: Path
) -> list[tuple[Path, Path | None]]:
    """Each camera's cycle, at the layer it sends now, as raw yuv420p (a file per layer, written
    once) and each microphone's as s16le (one second each)."""
    inputs = []
    for participant in participants:
        camera = participant.source
        size = camera.layer  # type: ignore[attr-defined]
        video = folder / f"{participant.participant_id}-{size.width}x{size.height}.yuv"
        if not video.exists():
            video.write_bytes(camera.raw_video())
        raw = camera.raw_audio(CYCLE_FRAMES / SOURCE.fps)
        audio = None
        if raw is not None:
            audio = folder / f"{participant.participant_id}.pcm"
            audio.write_bytes(raw)
        inputs.append((video, audio))
    return inputs


def ffmpeg_command(
    quality: Quality,
    layout: LayoutType,
    *,
    participants: list[ScriptedParticipant],
    inputs: list[tuple[Path, Path | None]],
    frames: int,
    out: Path,
) -> list[str]:
    """The ffmpeg equivalent of `_full_case`: same tiles, same encoder settings, one thread."""
    settings = bench_settings(quality)
    scene = bench_scene(quality, layout, participants)
    canvas: Size = settings.canvas
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    command += ["-threads", "1", "-filter_threads", "1", "-filter_complex_threads", "1"]
    for participant, (video, _) in zip(participants, inputs, strict=True):
        size = participant.source.layer  # type: ignore[attr-defined]
        command += ["-stream_loop", "-1", "-f", "rawvideo", "-pix_fmt", "yuv420p"]
        command += ["-video_size", f"{size.width}x{size.height}", "-framerate", str(SOURCE.fps)]
        command += ["-i", str(video)]
    audio_inputs = []
    for _, audio in inputs:
        if audio is not None:
            audio_inputs.append(len(inputs) + len(audio_inputs))
            command += ["-stream_loop", "-1", "-f", "s16le", "-ar", str(AUDIO_SAMPLE_RATE_HZ)]
            command += ["-ac", "1", "-i", str(audio)]
    index_of = {p.camera_feed: i for i, p in enumerate(participants)}
    red, green, blue = scene.tile_background
    graph = [
        f"color=c=0x{red:02x}{green:02x}{blue:02x}:s={canvas.width}x{canvas.height}:r={settings.fps}[base]"
    ]
    last = "base"
    for n, plan in enumerate(scene.tiles):
        rect, fit = plan.tile.rect, plan.tile.fit.value
        grow = "increase" if fit == "fill" else "decrease"
        graph.append(
            f"[{index_of[plan.tile.feed_id]}:v]scale={rect.width}:{rect.height}:flags=area:"
            f"force_original_aspect_ratio={grow},crop='min(iw,{rect.width})':'min(ih,{rect.height})'[t{n}]"
        )
        graph.append(f"[{last}][t{n}]overlay=x={rect.x}:y={rect.y}:shortest=1[o{n}]")
        last = f"o{n}"
    mics = "".join(f"[{i}:a]" for i in audio_inputs)
    graph.append(f"{mics}amix=inputs={len(audio_inputs)}:normalize=0[mix]")
    maxrate = round(settings.video_bitrate_bps * VBV_MAXRATE_RATIO)
    bufsize = round(settings.video_bitrate_bps * VBV_BUFFER_S)
    keyint = settings.keyframe_interval_frames
    command += ["-filter_complex", ";".join(graph), "-map", f"[{last}]", "-map", "[mix]"]
    command += ["-frames:v", str(frames), "-t", f"{frames / settings.fps:.6f}"]
    command += ["-c:v", "libx264", "-preset", settings.x264_preset, "-profile:v", "high"]
    command += ["-pix_fmt", "yuv420p", "-b:v", str(settings.video_bitrate_bps)]
    command += ["-maxrate", str(maxrate), "-bufsize", str(bufsize), "-g", str(keyint)]
    command += ["-x264-params", f"keyint={keyint}:scenecut={X264_SCENECUT}:open-gop=0:threads=1"]
    command += [
        "-c:a",
        "aac",
        "-b:a",
        str(settings.audio_bitrate_bps),
        "-ar",
        str(AUDIO_SAMPLE_RATE_HZ),
        "-ac",
        "2",
    ]
    movflags = VIDEO_MOVFLAGS if settings.mode is Mode.VIDEO_AND_AUDIO else AUDIO_MOVFLAGS
    command += ["-movflags", movflags, "-f", "mp4", str(out)]
    return command


def run_ffmpeg(command: list[str], quality: Quality, layout: LayoutType, frames: int) -> CaseResult:
    """Run ffmpeg pinned to the bench core; CPU and peak RSS from its own rusage."""
    cpu = bench_cpu()
    wall = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: _pin(cpu),  # noqa: PLW1509 - no threads in the child before exec
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.perf_counter() - wall
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({process.returncode}): {stderr.strip()}")
    return CaseResult(
        "ffmpeg",
        quality.value,
        layout.value,
        frames,
        wall_s,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
    )


# -- the report -------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, object]:
    """The pipeline report for the qualities, layouts and frame count in `args`."""
    qualities: list[Quality] = args.quality or list(Quality)
    layouts: list[LayoutType] = getattr(args, "layout", None) or list(LayoutType)
    frames: int = args.frames
    content: str = getattr(args, "content", None) or SYNTHETIC
    sources: str = getattr(args, "sources", None) or SOURCES_TOP
    rounds: int = getattr(args, "rounds", None) or 1
    ffmpeg = shutil.which("ffmpeg")
    rows = []
    with tempfile.TemporaryDirectory(prefix="recorder-bench-") as folder:
        workdir = Path(folder)
        participants = bench_room(content, sources)
        for quality in qualities:
            for layout in layouts:
                compose = compose_bench.measure(
                    quality, True, min(frames, compose_bench.DEFAULT_FRAMES), layout
                )
                timed: dict[str, list[CaseResult]] = {"encode": [], "full": [], "ffmpeg": []}
                for _ in range(rounds):  # interleaved, so a busy spell hits every case alike
                    for case in CASES:
                        timed[case].append(
                            run_case(
                                case,
                                quality,
                                layout,
                                frames=frames,
                                workdir=workdir,
                                content=content,
                                sources=sources,
                            )
                        )
                    if ffmpeg:
                        prefer_scene(participants, bench_scene(quality, layout, participants))
                        inputs = write_ffmpeg_inputs(participants, workdir)
                        command = ffmpeg_command(
                            quality,
                            layout,
                            participants=participants,
                            inputs=inputs,
                            frames=frames,
                            out=workdir / f"ffmpeg-{quality}-{layout}.mp4",
                        )
                        timed["ffmpeg"].append(run_ffmpeg(command, quality, layout, frames))
                encode, full = median_run(timed["encode"]), median_run(timed["full"])
                reference = median_run(timed["ffmpeg"]) if timed["ffmpeg"] else None
                rows.append(
                    _row(
                        quality,
                        layout,
                        compose=compose,
                        encode=encode,
                        full=full,
                        reference=reference,
                    )
                )
    cameras = (
        f"{SOURCE.width}x{SOURCE.height}"
        if sources == SOURCES_TOP
        else "simulcast (the layer that fills each tile)"
    )
    return {
        "content": content,
        "sources": sources,
        "room": f"{PARTICIPANTS} participants, {cameras} {content} cameras "
        f"({CYCLE_FRAMES}-frame cycles), participant {MUTED_PARTICIPANT} muted, speech-like audio",
        "pinned_cpu": bench_cpu(),
        # Held by every case's process besides the recorder's own memory: subtract it from
        # peak RSS to size a live worker (which holds a few frames per feed instead).
        "premade_sources_mib": round(
            sum(p.source.premade_bytes() for p in participants)  # type: ignore[attr-defined]
            / BYTES_PER_MIB
        ),
        "threads": 1,
        "frames": frames,
        "rounds": rounds,
        "ffmpeg": _ffmpeg_version(ffmpeg) if ffmpeg else "not found: comparison skipped",
        "targets": {
            "full_vs_encode": TARGET_FULL_VS_ENCODE,
            "full_vs_ffmpeg": TARGET_FULL_VS_FFMPEG,
        },
        "results": rows,
    }


def median_run(runs: list[CaseResult]) -> CaseResult:
    """The run of median CPU time (the lower middle one of an even count): one real run, so its
    stages and threads add up, and one noisy run out of three cannot move a ratio."""
    return sorted(runs, key=lambda run: run.cpu_s)[(len(runs) - 1) // 2]


def _row(
    quality: Quality,
    layout: LayoutType,
    *,
    compose: compose_bench.ComposeResult,
    encode: CaseResult,
    full: CaseResult,
    reference: CaseResult | None,
) -> dict[str, object]:
    row: dict[str, object] = {
        "quality": quality.value,
        "layout": layout.value,
        "compose_cpu_ms": compose.cpu_ms_mean,
        "encode": encode.as_dict(),
        "full": full.as_dict(),
        "ffmpeg": None if reference is None else reference.as_dict(),
        # Throughput ratios by CPU time: >1 means the full pipeline does a frame with less CPU.
        "full_vs_encode": round(encode.cpu_s / full.cpu_s, 3),
        "full_vs_ffmpeg": None if reference is None else round(reference.cpu_s / full.cpu_s, 3),
    }
    row["meets_targets"] = row["full_vs_encode"] >= TARGET_FULL_VS_ENCODE and (
        reference is None or row["full_vs_ffmpeg"] >= TARGET_FULL_VS_FFMPEG  # type: ignore[operator]
    )
    return row


def _ffmpeg_version(binary: str) -> str:
    done = subprocess.run([binary, "-version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else binary


def format_table(report: dict[str, object]) -> str:
    """The report as a table for a terminal."""
    lines = [
        f"pipeline: {report['room']}; pinned to CPU {report['pinned_cpu']}, one thread, "
        f"{report['frames']} frames per case, median of {report['rounds']} rounds; "
        f"ffmpeg: {report['ffmpeg']}",
        f"{'quality':7} {'layout':9} {'compose':>8} {'encode fps':>10} {'full fps':>9} "
        f"{'ffmpeg fps':>10} {'cpu s/s full':>12} {'rss MiB':>8} {'full/enc':>8} "
        f"{'full/ffm':>8}  ok  {'media ms':>8} {'x264 thread ms enc/full':>23}",
    ]
    results = report["results"]
    if not isinstance(results, list):
        raise TypeError("report['results'] must be a list")
    for row in results:
        reference = row["ffmpeg"]
        ffmpeg_fps = f"{reference['fps']:>10.1f}" if reference else f"{'-':>10}"
        vs_ffmpeg = f"{row['full_vs_ffmpeg']:>8.2f}" if reference else f"{'-':>8}"
        encode, full = row["encode"], row["full"]
        ok = "yes" if row["meets_targets"] else "NO "
        lines.append(
            f"{row['quality']:7} {row['layout']:9} {row['compose_cpu_ms']:>6.2f}ms "
            f"{encode['fps']:>10.1f} {full['fps']:>9.1f} {ffmpeg_fps} "
            f"{full['cpu_s_per_recorded_s']:>12.3f} {full['peak_rss_mib']:>8.0f} "
            f"{row['full_vs_encode']:>8.2f} {vs_ffmpeg}  {ok} {full['feeder_ms_per_frame']:>8.2f} "
            f"{encode['encoder_ms_per_frame']:>11.2f} / {full['encoder_ms_per_frame']:<9.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
