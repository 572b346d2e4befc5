"""`recorder bench --presets`: x264 speed presets, quality against CPU, on our content.

How `recorder.media.encoder.X264_PRESETS` was chosen, reproducibly: for each quality, the
benchmark room (`recorder.bench.pipeline`: four cameras in a GRID) is composed once per frame of
the cameras' one-second cycle and encoded with each compared preset, at the preset's bitrate and
VBV cap, on one core (x264 `threads=1`, this process pinned). Reported per preset: CPU
milliseconds per frame, how much faster than real time one core encodes, the bitrate reached and
the PSNR of the decoded luma against the composed frames (mean, and the worst frame).

PSNR is a coarse measure but a fair one here: the same frames at the same bitrate, so a higher
PSNR means the preset spent its CPU on a better picture. `--content textured` (camera-like
detail) is the case that matters: flat synthetic cameras reach ~60 dB with any preset and
undershoot the bitrate, so they cannot tell presets apart.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import av
import numpy as np

from layouts.model import LayoutType
from recorder.bench.pipeline import (
    CYCLE_FRAMES,
    SYNTHETIC,
    bench_cpu,
    bench_room,
    bench_settings,
    composed_canvases,
)
from recorder.media.compositor import plane_views
from recorder.media.encoder import X264_PRESETS, Encoder
from recorder.presets import AUDIO_SAMPLE_RATE_HZ, PRESETS, Quality

HELP = "compare x264 speed presets (quality against CPU) on the benchmark room, one core"

COMPARED_PRESETS = ("veryfast", "superfast", "ultrafast")
LAYOUT = LayoutType.GRID
PEAK_LUMA = 255.0
MAX_PSNR_DB = 100.0  # reported for a frame identical to its source (infinite PSNR)


@dataclass(frozen=True, slots=True)
class PresetResult:
    quality: str
    preset: str
    chosen: bool  # the preset `X264_PRESETS` uses for this quality
    frames: int
    cpu_ms_per_frame: float
    realtime_factor: float  # recorded seconds per CPU second on one core
    bitrate_kbps: float
    target_kbps: float
    psnr_y_mean_db: float
    psnr_y_min_db: float


def psnr_db(decoded: np.ndarray, source: np.ndarray) -> float:
    """PSNR of one luma plane against its source, in dB (capped at `MAX_PSNR_DB`)."""
    error = np.mean((decoded.astype(np.float32) - source.astype(np.float32)) ** 2)
    if error == 0:
        return MAX_PSNR_DB
    return min(MAX_PSNR_DB, 10 * math.log10(PEAK_LUMA**2 / float(error)))


def measure(
    quality: Quality, preset: str, canvases: list[av.VideoFrame], frames: int, folder: Path
) -> PresetResult:
    """Encode `frames` frames cycling through `canvases` with `preset`; time and score it."""
    settings = replace(bench_settings(quality), x264_preset=preset)
    out = folder / f"{quality}-{preset}.mp4"
    silence = np.zeros((2, AUDIO_SAMPLE_RATE_HZ // settings.fps), np.float32)
    cpu = time.process_time()
    with Encoder(out, settings) as encoder:
        for index in range(frames):
            encoder.put_video(canvases[index % len(canvases)], index)
            encoder.put_audio(silence, index * silence.shape[1])
    cpu_s = time.process_time() - cpu
    sources = [plane_views(canvas)[0] for canvas in canvases]
    scores = []
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        video_bytes = 0
        for packet in container.demux(stream):
            video_bytes += packet.size
            for frame in packet.decode():
                index = round(float(frame.time) * settings.fps)
                scores.append(psnr_db(plane_views(frame)[0], sources[index % len(sources)]))
    seconds = frames / settings.fps
    return PresetResult(
        quality=quality.value,
        preset=preset,
        chosen=X264_PRESETS[quality] == preset,
        frames=frames,
        cpu_ms_per_frame=round(cpu_s * 1000 / frames, 2),
        realtime_factor=round(seconds / cpu_s, 2),
        bitrate_kbps=round(video_bytes * 8 / seconds / 1000),
        target_kbps=PRESETS[quality].video_bitrate_bps / 1000,
        psnr_y_mean_db=round(float(np.mean(scores)), 2),
        psnr_y_min_db=round(float(np.min(scores)), 2),
    )


def run(args: argparse.Namespace) -> dict[str, object]:
    """The preset comparison for the qualities, frame count and content in `args`."""
    qualities: list[Quality] = args.quality or list(Quality)
    content: str = getattr(args, "content", None) or SYNTHETIC
    previous = os.sched_getaffinity(0)
    cpu = bench_cpu()
    os.sched_setaffinity(0, {cpu})  # the encoder thread, started later, inherits it
    try:
        participants = bench_room(content)
        results = []
        with tempfile.TemporaryDirectory(prefix="recorder-presets-") as folder:
            for quality in qualities:
                canvases = composed_canvases(quality, LAYOUT, participants)
                for preset in COMPARED_PRESETS:
                    result = measure(quality, preset, canvases, args.frames, Path(folder))
                    results.append(asdict(result))
    finally:
        os.sched_setaffinity(0, previous)
    return {
        "room": f"{LAYOUT.value}, {len(participants)} {content} cameras, "
        f"{CYCLE_FRAMES}-frame cycle",
        "content": content,
        "pinned_cpu": cpu,
        "threads": 1,
        "results": results,
    }


def format_table(report: dict[str, object]) -> str:
    """The report as a table for a terminal."""
    lines = [
        f"x264 presets: {report['room']}; pinned to CPU {report['pinned_cpu']}, one thread",
        f"{'quality':7} {'preset':10} {'cpu/frame':>9} {'x real':>7} {'kb/s':>6} "
        f"{'target':>6} {'PSNR-Y':>7} {'worst':>6}  chosen",
    ]
    results = report["results"]
    if not isinstance(results, list):
        raise TypeError("report['results'] must be a list")
    for row in results:
        lines.append(
            f"{row['quality']:7} {row['preset']:10} {row['cpu_ms_per_frame']:>7.2f}ms "
            f"{row['realtime_factor']:>7.2f} {row['bitrate_kbps']:>6.0f} "
            f"{row['target_kbps']:>6.0f} {row['psnr_y_mean_db']:>7.2f} "
            f"{row['psnr_y_min_db']:>6.2f}  {'*' if row['chosen'] else ''}"
        )
    return "\n".join(lines)
