"""`recorder bench`: how much of one core this machine needs per recording, by quality.

Each mode is a module under `recorder.bench` (see its docstring): `--compose` times the
compositor, `--pipeline` the whole pipeline against encode-only and ffmpeg (each case in its own
process pinned to one CPU), `--presets` compares x264 speed presets, `--live` records a live
room over WebRTC and measures the worker process (`--frames` at 30 fps is its length),
`--stop-latency` times a stop to RECORDING_STOPPED against uploading the same file after it
(`--record-seconds` of recording into a local S3), `--soak` records a live room for `--minutes`
and reports RSS over time, A/V drift and duration against wall time. With no mode flag every
mode but `--soak` runs. The
report goes to standard output as a table and, with `--json PATH`, to a file, with a
description of the machine, so capacity planning can size workers per core from it (DESIGN.md
"One recording, one process").
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
from pathlib import Path

import av

from layouts.model import LayoutType
from recorder.errors import ExitCode
from recorder.presets import Quality

HELP = (
    "measure on one core of this machine the cost of composing and of the whole pipeline "
    "(against encode-only and ffmpeg), per quality"
)

# flag name -> module under recorder.bench; a new mode adds a line here.
MODES: dict[str, str] = {
    "compose": "recorder.bench.compose",
    "pipeline": "recorder.bench.pipeline",
    "presets": "recorder.bench.presets",
    "live": "recorder.bench.live",
    "stop-latency": "recorder.bench.stop_latency",
    "soak": "recorder.bench.soak",
}
# Modes that run only when asked for: a soak lasts half an hour by default.
OPT_IN_MODES = frozenset({"soak"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for mode in MODES:
        parser.add_argument(f"--{mode}", action="store_true", help=f"run the {mode} benchmark")
    parser.add_argument(
        "--quality",
        type=Quality,
        action="append",
        choices=list(Quality),
        help="a quality to measure (repeatable; default: all)",
    )
    parser.add_argument(
        "--frames", type=int, default=300, help="frames timed per case (default 300)"
    )
    parser.add_argument(
        "--layout",
        type=LayoutType,
        action="append",
        choices=list(LayoutType),
        help="--pipeline: a layout to measure (repeatable; default: all)",
    )
    parser.add_argument(
        "--content",
        choices=("synthetic", "textured"),
        default="synthetic",
        help="--pipeline, --presets: the project's synthetic cameras, or camera-like texture",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        metavar="N",
        help="--pipeline: runs of each case, interleaved; the median counts (default 3)",
    )
    parser.add_argument(
        "--sources",
        choices=("top", "simulcast"),
        default="top",
        help="--pipeline: every camera at 1280x720 (default), or at the simulcast layer the "
        "recorder asks for its tile",
    )
    parser.add_argument(
        "--record-seconds",
        type=float,
        default=300.0,
        metavar="S",
        help="--stop-latency: how long the recording runs before the stop (default 300)",
    )
    parser.add_argument(
        "--room",
        choices=("embedded", "janus"),
        default="embedded",
        help="--live: the embedded room (default), or a Janus VideoRoom started here (root)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        metavar="N",
        help="--soak: how long the recording runs, in minutes (default 30)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus_visible": os.cpu_count(),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "ffmpeg": {name: ".".join(map(str, v)) for name, v in av.library_versions.items()},
        "note": "one thread: figures are the cost on one core",
    }


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        print("recorder bench: --frames must be at least 1")
        return ExitCode.INVALID_JOB
    selected = [mode for mode in MODES if getattr(args, mode.replace("-", "_"))] or [
        mode for mode in MODES if mode not in OPT_IN_MODES
    ]
    report: dict[str, object] = {"machine": machine()}
    for mode in selected:
        module = importlib.import_module(MODES[mode])
        result = module.run(args)
        report[mode] = result
        print(module.format_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return ExitCode.OK
