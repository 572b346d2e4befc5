"""`recorder render`: what a recording of a described room looks like, without a room.

    recorder render --layout SIDEBAR --theme LIGHT --participants 3 --screen-share --out x.png
    recorder render --contact-sheet --out sheet.png

    recorder render --duration 10 --participants 4 --clapper --quality high --out room.mp4

A PNG is one frame exactly as the recorder would encode it (real layout code, real compositor,
synthetic cameras at `--at` seconds). The contact sheet draws the same room in every layout and
theme, captioned, to review a visual change at a glance (docs/goldens.md).

With `--duration`, the whole offline pipeline records the room instead (`recorder.media.offline`:
synthetic participants -> timeline -> layouts -> compositor, mixer -> encoder) into a fragmented
MP4 (or M4A with `--mode audio`), printing its progress.

Participants are numbered from 1, as on screen: `--muted 2 --speaking 1,3` mutes participant 2
and makes 1 and 3 speak. Participant 1 is the one who shares a screen.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from layouts.model import DEFAULT_GRID_SIZE, MAX_GRID_SIZE, LayoutType, Orientation, Theme
from layouts.text import font
from recorder.errors import ExitCode, MediaError
from recorder.media.compositor import Compositor, frame_to_rgb
from recorder.media.encoder import EncoderSettings
from recorder.media.offline import render as render_offline
from recorder.media.offline import scripted_participants
from recorder.presets import PRESETS, Mode, Quality
from recorder.testing.sources import Sound
from recorder.testing.stills import StillSpec, render_still

HELP = "draw one composited frame of a made-up room (or a contact sheet of all layouts) to PNG"

# Contact sheet: space around cells and the caption's height, in pixels of the sheet.
SHEET_GAP_PX = 24
CAPTION_HEIGHT_PX = 40
SHEET_BACKGROUND = (255, 255, 255)
CAPTION_COLOR = (30, 30, 30)


def _numbers(text: str) -> list[int]:
    """ "2" or "1,3" -> participant numbers."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected participant numbers like 2 or 1,3: {text!r}"
        ) from None


def _enum(kind: type[StrEnum]) -> Callable[[str], object]:
    """Case-insensitive enum values, as the job accepts them."""

    def parse(text: str) -> object:
        for member in kind:
            if member.value.lower() == text.lower():
                return member
        allowed = ", ".join(member.value for member in kind)
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {allowed}")

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    parser.add_argument("--layout", type=_enum(LayoutType), default=LayoutType.GRID)
    parser.add_argument("--theme", type=_enum(Theme), default=Theme.DEFAULT)
    parser.add_argument("--quality", type=_enum(Quality), default=Quality.MED)
    parser.add_argument("--orientation", type=_enum(Orientation), default=Orientation.LANDSCAPE)
    parser.add_argument(
        "--participants", type=int, default=3, metavar="N", help="how many (default 3)"
    )
    parser.add_argument(
        "--grid-size",
        type=int,
        default=DEFAULT_GRID_SIZE,
        choices=range(1, MAX_GRID_SIZE + 1),
        help=f"most tiles visible at once (default {DEFAULT_GRID_SIZE})",
    )
    parser.add_argument("--screen-share", action="store_true", help="participant 1 shares a screen")
    for flag, what in (
        ("--muted", "whose microphone is muted"),
        ("--video-off", "whose camera is off (initials avatar)"),
        ("--speaking", "who is speaking"),
        ("--portrait-source", "who sends portrait (phone) video"),
    ):
        parser.add_argument(
            flag, type=_numbers, action="extend", default=[], metavar="N[,N]", help=what
        )
    parser.add_argument(
        "--at", type=float, default=0.0, metavar="SECONDS", help="the instant drawn (default 0)"
    )
    parser.add_argument(
        "--contact-sheet",
        action="store_true",
        help="every layout x theme of this room in one captioned image",
    )
    recording = parser.add_argument_group("recording (with --duration: MP4/M4A instead of PNG)")
    recording.add_argument(
        "--duration", type=float, metavar="SECONDS", help="record this long into --out"
    )
    recording.add_argument("--mode", type=_enum(Mode), default=Mode.VIDEO_AND_AUDIO)
    recording.add_argument(
        "--clapper", action="store_true", help="participant 1 flashes and beeps every second"
    )
    recording.add_argument(
        "--sound", type=_enum(Sound), default=Sound.SPEECH, help="the others' microphones"
    )
    recording.add_argument(
        "--join-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="participant n joins at (n - 1) times this (default: all at the start)",
    )


def spec_from_args(args: argparse.Namespace) -> StillSpec:
    """The room the options describe (layout and theme are ignored by the contact sheet)."""
    return StillSpec(
        layout=args.layout,
        theme=args.theme,
        participants=args.participants,
        screen_share=args.screen_share,
        muted=frozenset(args.muted),
        video_off=frozenset(args.video_off),
        speaking=frozenset(args.speaking),
        portrait_sources=frozenset(args.portrait_source),
        quality=args.quality,
        orientation=args.orientation,
        grid_size=args.grid_size,
    )


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    try:
        spec.check()
    except ValueError as error:
        print(f"recorder render: {error}", file=sys.stderr)
        return ExitCode.INVALID_JOB
    if args.duration is not None:
        return render_recording(spec, args)
    if args.contact_sheet:
        write_png(contact_sheet(spec, args.at), args.out)
    else:
        render_png(spec, args.out, args.at)
    print(args.out)
    return ExitCode.OK


def render_png(spec: StillSpec, out: Path, t: float = 0.0) -> None:
    """Write the frame the recorder would encode for `spec` at `t` as a PNG."""
    write_png(frame_to_rgb(render_still(spec, t)), out)


def contact_sheet(spec: StillSpec, t: float = 0.0) -> np.ndarray:
    """The room of `spec` in every layout (rows) and theme (columns), captioned, as RGB."""
    canvas = spec.canvas
    compositor = Compositor(canvas)
    columns, rows = len(Theme), len(LayoutType)
    cell_w, cell_h = canvas.width, canvas.height + CAPTION_HEIGHT_PX
    width = columns * cell_w + (columns + 1) * SHEET_GAP_PX
    height = rows * cell_h + (rows + 1) * SHEET_GAP_PX
    sheet = Image.new("RGB", (width, height), SHEET_BACKGROUND)
    caption = ImageDraw.Draw(sheet)
    caption_font = font(round(CAPTION_HEIGHT_PX * 0.55))
    for row, layout in enumerate(LayoutType):
        for column, theme in enumerate(Theme):
            cell = replace(spec, layout=layout, theme=theme)
            x = SHEET_GAP_PX + column * (cell_w + SHEET_GAP_PX)
            y = SHEET_GAP_PX + row * (cell_h + SHEET_GAP_PX)
            caption.text(
                (x, y + CAPTION_HEIGHT_PX / 2),
                f"{layout.value} · {theme.value}",
                fill=CAPTION_COLOR,
                font=caption_font,
                anchor="lm",
            )
            frame = frame_to_rgb(render_still(cell, t, compositor))
            sheet.paste(Image.fromarray(frame), (x, y + CAPTION_HEIGHT_PX))
    return np.asarray(sheet)


def write_png(rgb: np.ndarray, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(out)


def render_recording(spec: StillSpec, args: argparse.Namespace) -> int:
    """`--duration`: record the room through the offline pipeline, with a progress line."""
    unsupported = [
        flag
        for flag, used in (
            ("--screen-share", spec.screen_share),
            ("--speaking", spec.speaking),
            ("--contact-sheet", args.contact_sheet),
        )
        if used
    ]
    if unsupported or args.duration <= 0 or args.join_every < 0:
        problem = f"{', '.join(unsupported)} cannot be recorded (yet)" if unsupported else ""
        problem = problem or "--duration must be positive and --join-every not negative"
        print(f"recorder render: {problem}", file=sys.stderr)
        return ExitCode.INVALID_JOB
    settings = EncoderSettings.for_preset(
        PRESETS[spec.quality], args.mode, spec.orientation, queue_max_wait_s=None
    )
    participants = scripted_participants(
        spec, clapper=args.clapper, sound=args.sound, join_every_s=args.join_every
    )
    started = time.perf_counter()

    def progress(done_s: float) -> None:
        done_s = min(done_s, args.duration)
        if round(done_s * settings.fps) % settings.fps == 0 or done_s >= args.duration:
            speed = done_s / max(time.perf_counter() - started, 1e-9)
            end = "\n" if done_s >= args.duration else ""
            print(
                f"\rrender: {done_s:.1f}/{args.duration:.1f} s ({speed:.1f}x real time)",
                end=end,
                file=sys.stderr,
                flush=True,
            )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        render_offline(
            args.out, participants, settings, spec.layout_spec, args.duration, progress=progress
        )
    except MediaError as error:
        print(f"recorder render: {error.message}", file=sys.stderr)
        return ExitCode.FAILED
    print(args.out)
    return ExitCode.OK
