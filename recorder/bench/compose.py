"""`recorder bench --compose`: milliseconds per composited frame, one core.

The room: GRID, 4 participants with 1280x720 yuv420p cameras (the synthetic ones), one muted and
one speaking, so labels, a mute mark and a speaking ring are drawn as in a real call. For each
quality it measures two cases:

* **changing**: every tick brings a new frame from every source (a live call at full frame
  rate): each tile is scaled by libswscale, then blitted;
* **unchanged**: the same frame objects every tick (frozen or slow sources): the compositor's
  cache of scaled tiles makes a tick a background copy, four blits and the overlays.

Only `Compositor.compose` is timed; the sources are made before the clock starts and the layout
plan is made once (its cost per tick is reported on its own as `plan_ms`). Everything runs on the
calling thread: libswscale with one thread, numpy's element-wise operations single-threaded. Both
wall time and this process's CPU time per frame are reported; on an idle machine they agree,
when they do not, the machine was busy and the CPU time is the better figure of one core's work.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass

import av

from layouts.model import LayoutSpec, LayoutType, ParticipantView, Size, Theme
from layouts.scene import plan_frame
from recorder.media.compositor import SCALE_INTERPOLATION, Compositor
from recorder.presets import PRESETS, Quality
from recorder.testing.video import SyntheticVideo

HELP = "time the compositor: GRID, 4 participants, 1280x720 sources, per quality"

PARTICIPANTS = 4
SOURCE_SIZE = Size(1280, 720)
DEFAULT_FRAMES = 300
WARMUP_FRAMES = 10
# Distinct frames per source cycled through in the "changing" case (each tick differs from the
# previous one, which is all the compositor's cache looks at).
CHANGING_FRAMES_PER_SOURCE = 8
# The targets of the issue, per output frame, whatever the quality (1080p is the hard one).
TARGET_CHANGING_MS = 3.0
TARGET_UNCHANGED_MS = 1.0


@dataclass(frozen=True, slots=True)
class ComposeResult:
    quality: str
    canvas: str
    sources: str  # "changing" or "unchanged"
    frames: int
    wall_ms_mean: float
    wall_ms_p50: float
    wall_ms_p95: float
    cpu_ms_mean: float
    plan_ms: float
    target_ms: float

    @property
    def meets_target(self) -> bool:
        return min(self.wall_ms_p50, self.cpu_ms_mean) <= self.target_ms


def _room() -> list[ParticipantView]:
    return [
        ParticipantView(
            id=f"p{i}",
            name=name,
            muted=i == 1,
            speaking=i == 2,
            last_spoke=0.0 if i == 2 else None,
            joined_at=float(i),
        )
        for i, name in enumerate(("Alice Martin", "Bob Okafor", "Carolina Montgomery", "Dmitri"))
    ]


def measure(
    quality: Quality,
    changing: bool,
    frames: int = DEFAULT_FRAMES,
    layout: LayoutType = LayoutType.GRID,
) -> ComposeResult:
    """Compose `frames` frames of the benchmark room at `quality` and time each one.

    `layout` other than GRID is for the pipeline benchmark (`recorder.bench.pipeline`).
    """
    canvas = PRESETS[quality].landscape
    feeds = _room()
    spec = LayoutSpec(type=layout, theme=Theme.DEFAULT)
    plan_start = time.perf_counter()
    plan_rounds = 50
    for _ in range(plan_rounds):
        _, scene = plan_frame(None, feeds, spec, canvas, 0.0)
    plan_ms = (time.perf_counter() - plan_start) * 1000 / plan_rounds

    per_source = CHANGING_FRAMES_PER_SOURCE if changing else 1
    sources: dict[str, list[av.VideoFrame]] = {
        feed.id: [
            SyntheticVideo(i, feed.name, SOURCE_SIZE).frame_at(k / 30) for k in range(per_source)
        ]
        for i, feed in enumerate(feeds)
    }
    compositor = Compositor(canvas)
    wall: list[float] = []
    cpu: list[float] = []
    for tick in range(WARMUP_FRAMES + frames):
        latest = {feed_id: made[tick % len(made)] for feed_id, made in sources.items()}
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        compositor.compose(scene, latest)
        wall_end, cpu_end = time.perf_counter(), time.process_time()
        if tick >= WARMUP_FRAMES:
            wall.append((wall_end - wall_start) * 1000)
            cpu.append((cpu_end - cpu_start) * 1000)

    wall.sort()
    return ComposeResult(
        quality=quality.value,
        canvas=f"{canvas.width}x{canvas.height}",
        sources="changing" if changing else "unchanged",
        frames=frames,
        wall_ms_mean=round(statistics.fmean(wall), 3),
        wall_ms_p50=round(wall[len(wall) // 2], 3),
        wall_ms_p95=round(wall[min(len(wall) - 1, int(len(wall) * 0.95))], 3),
        cpu_ms_mean=round(statistics.fmean(cpu), 3),
        plan_ms=round(plan_ms, 3),
        target_ms=TARGET_CHANGING_MS if changing else TARGET_UNCHANGED_MS,
    )


def run(args: argparse.Namespace) -> dict[str, object]:
    """The compose report for the qualities and frame count in `args`."""
    qualities: list[Quality] = args.quality or list(Quality)
    results = [
        measure(quality, changing, args.frames)
        for quality in qualities
        for changing in (True, False)
    ]
    return {
        "room": f"GRID, {PARTICIPANTS} participants, {SOURCE_SIZE.width}x{SOURCE_SIZE.height} "
        "yuv420p sources, 1 muted, 1 speaking",
        "threads": 1,
        "interpolation": SCALE_INTERPOLATION.name,
        "results": [{**asdict(result), "meets_target": result.meets_target} for result in results],
    }


def format_table(report: dict[str, object]) -> str:
    """The report as a table for a terminal."""
    lines = [
        f"compose: {report['room']}; one thread, swscale {report['interpolation']}",
        f"{'quality':8} {'canvas':10} {'sources':10} {'wall p50':>9} {'wall p95':>9} "
        f"{'cpu mean':>9} {'plan':>7} {'target':>7}  ok",
    ]
    results = report["results"]
    if not isinstance(results, list):
        raise TypeError("report['results'] must be a list")
    for row in results:
        lines.append(
            f"{row['quality']:8} {row['canvas']:10} {row['sources']:10} "
            f"{row['wall_ms_p50']:>7.2f}ms {row['wall_ms_p95']:>7.2f}ms "
            f"{row['cpu_ms_mean']:>7.2f}ms {row['plan_ms']:>5.2f}ms {row['target_ms']:>5.1f}ms"
            f"  {'yes' if row['meets_target'] else 'NO'}"
        )
    return "\n".join(lines)
