"""`recorder inspect FILE`: what is really in a recording (codecs, timing, keyframes, sync)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from layouts.model import Rect
from recorder.errors import ExitCode
from recorder.inspect import FileReport, SyncReport, measure_sync, presence, probe

HELP = "describe a recording: streams, timing, keyframes, fragments; optionally clapper sync"


def _rect(text: str) -> Rect:
    try:
        x, y, width, height = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,WIDTH,HEIGHT, got {text!r}") from None
    return Rect(x, y, width, height)


def _named_rect(text: str) -> tuple[str, Rect]:
    name, sep, rect = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=X,Y,WIDTH,HEIGHT, got {text!r}")
    return name, _rect(rect)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="an MP4/M4A written by the recorder (or any)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--sync",
        action="store_true",
        help="measure audio-to-video offsets of clapper flashes and beeps (decodes the file)",
    )
    parser.add_argument(
        "--flash-region",
        type=_rect,
        metavar="X,Y,W,H",
        help="with --sync: look for flashes in this region only (default: the whole frame)",
    )
    parser.add_argument(
        "--region",
        type=_named_rect,
        action="append",
        default=[],
        metavar="NAME=X,Y,W,H",
        help="report which test participant (palette index) shows in this region over time",
    )
    parser.add_argument(
        "--every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="with --region: sample a frame this often (default 1 s)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"recorder inspect: no such file: {args.file}", file=sys.stderr)
        return ExitCode.FAILED
    report = probe(args.file)
    sync = measure_sync(args.file, args.flash_region) if args.sync else None
    seen = presence(args.file, dict(args.region), args.every) if args.region else None
    if args.json:
        data: dict[str, object] = report.as_dict()
        if sync is not None:
            data["sync"] = sync.as_dict()
        if seen is not None:
            data["presence"] = [{"time_s": s.time_s, "seen": s.seen} for s in seen]
        print(json.dumps(data, indent=2))
    else:
        print(format_report(report))
        if sync is not None:
            print(format_sync(sync))
        for sample in seen or []:
            who = ", ".join(f"{name}={index}" for name, index in sample.seen.items())
            print(f"  {sample.time_s:8.3f} s  {who}")
    return ExitCode.OK


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def format_report(report: FileReport) -> str:
    """The readable form of a probe report."""
    lines = [
        f"{report.path}: {report.format}, {report.size_bytes} bytes, "
        f"duration {_seconds(report.duration_s)}, "
        f"{(report.bitrate_bps or 0) / 1000:.0f} kb/s, {report.fragments} fragments",
    ]
    if report.damage:
        lines.append(f"  damaged: {report.damage} (playable prefix {report.playable_bytes} bytes)")
    for s in report.streams:
        head = (
            f"  #{s.index} {s.kind} {s.codec} ({s.profile or '-'}), {s.packets} packets, "
            f"start {_seconds(s.start_s)}, duration {_seconds(s.duration_s)}, "
            f"{s.bitrate_bps / 1000:.0f} kb/s"
        )
        lines.append(head)
        if s.kind == "video":
            lines.append(
                f"      {s.width}x{s.height} {s.pixel_format} at {s.frame_rate or 0:.3f} fps; "
                f"pts steps {_seconds(s.pts_delta_min_s)}..{_seconds(s.pts_delta_max_s)}, "
                f"{s.irregular_deltas} irregular; {s.keyframes} keyframes, "
                f"longest GOP {_seconds(s.keyframe_spacing_max_s)}"
            )
        else:
            lines.append(f"      {s.sample_rate} Hz, {s.channels} channels")
    return "\n".join(lines)


def format_sync(sync: SyncReport) -> str:
    """The readable form of a sync report: one line per clap."""
    lines = [
        f"sync: {len(sync.flashes_s)} flashes, {len(sync.beeps_s)} beeps, "
        f"worst offset {_seconds(sync.max_abs_offset_s)} (one frame: {_seconds(sync.frame_s)})"
    ]
    for clap in sync.claps:
        offset = clap.offset_s
        text = "unpaired" if offset is None else f"audio {offset * 1000:+.1f} ms"
        lines.append(f"  flash {_seconds(clap.flash_s)}  beep {_seconds(clap.beep_s)}  {text}")
    return "\n".join(lines)
