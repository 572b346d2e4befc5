"""Single composited frames of a described room: the golden frames and `recorder render`.

A `StillSpec` says who is in the room (a count of participants, each with a synthetic camera) and
what is special about them (muted, camera off, speaking, a portrait phone camera, a screen share by
participant 1), plus the layout, theme, quality and orientation. `render_still` plans the frame
with the real layout code and draws it with the real compositor, so a still is exactly what the
recorder would encode for that room at that instant.

Participants are numbered from 1 in the spec, as on screen; feed ids are "p1", "p2", ... and the
share is "p1-screen". Participant 3's long name exercises the label's ellipsis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av

from layouts.model import (
    DEFAULT_GRID_SIZE,
    LayoutSpec,
    LayoutType,
    Orientation,
    ParticipantView,
    Size,
    Theme,
)
from layouts.scene import Scene, plan_frame
from recorder.media.compositor import Compositor
from recorder.presets import PRESETS, Quality
from recorder.testing.video import DEFAULT_SIZE, SyntheticScreen, SyntheticVideo

DEMO_NAMES = (
    "Alice Martin",
    "Bob Okafor",
    "Carolina Montgomery-Featherstonehaugh",
    "Dmitri Ivanov",
    "Emi Tanaka",
    "Farah Haddad",
    "Gustavo Lima",
    "Hanna Virtanen",
)
SCREEN_FEED_SUFFIX = "-screen"
PORTRAIT_SOURCE = Size(DEFAULT_SIZE.height, DEFAULT_SIZE.width)


def feed_id(number: int) -> str:
    """The camera feed id of participant `number` (from 1)."""
    return f"p{number}"


def demo_name(number: int) -> str:
    """The name of participant `number` (from 1)."""
    return DEMO_NAMES[(number - 1) % len(DEMO_NAMES)]


@dataclass(frozen=True, slots=True)
class StillSpec:
    """A room at one instant, and how it is recorded. Participant numbers start at 1."""

    layout: LayoutType = LayoutType.GRID
    theme: Theme = Theme.DEFAULT
    participants: int = 3
    screen_share: bool = False  # participant 1 shares a screen (needs at least 1 participant)
    muted: frozenset[int] = field(default_factory=frozenset)
    video_off: frozenset[int] = field(default_factory=frozenset)
    speaking: frozenset[int] = field(default_factory=frozenset)
    portrait_sources: frozenset[int] = field(default_factory=frozenset)  # phones held upright
    quality: Quality = Quality.LOW
    orientation: Orientation = Orientation.LANDSCAPE
    grid_size: int = DEFAULT_GRID_SIZE

    @property
    def canvas(self) -> Size:
        return PRESETS[self.quality].canvas(self.orientation)

    @property
    def layout_spec(self) -> LayoutSpec:
        return LayoutSpec(type=self.layout, grid_size=self.grid_size, theme=self.theme)

    def check(self) -> None:
        """Raise ValueError for a spec that names participants who are not there."""
        if self.participants < 0:
            raise ValueError("participants must be 0 or more")
        if self.screen_share and self.participants < 1:
            raise ValueError("a screen share needs participant 1")
        for label, numbers in (
            ("muted", self.muted),
            ("video off", self.video_off),
            ("speaking", self.speaking),
            ("portrait", self.portrait_sources),
        ):
            outside = sorted(n for n in numbers if not 1 <= n <= self.participants)
            if outside:
                raise ValueError(
                    f"{label}: no participant {outside} (participants are 1..{self.participants})"
                )


def still_feeds(spec: StillSpec, t: float = 0.0) -> tuple[ParticipantView, ...]:
    """The room's feeds at `t`: participants joined one second apart, in number order.

    A speaking participant spoke last at `t`, so the speaker ranking puts them first.
    """
    feeds = [
        ParticipantView(
            id=feed_id(number),
            name=demo_name(number),
            video_on=number not in spec.video_off,
            muted=number in spec.muted,
            speaking=number in spec.speaking,
            last_spoke=t if number in spec.speaking else None,
            joined_at=float(number - 1) - 100.0,
        )
        for number in range(1, spec.participants + 1)
    ]
    if spec.screen_share:
        feeds.append(
            ParticipantView(
                id=feed_id(1) + SCREEN_FEED_SUFFIX,
                name=demo_name(1),
                joined_at=t - 1.0,
                screen_of=feed_id(1),
            )
        )
    return tuple(feeds)


def still_frames(spec: StillSpec, t: float = 0.0) -> dict[str, av.VideoFrame]:
    """The latest frame of every feed whose video is on, at `t`."""
    frames: dict[str, av.VideoFrame] = {}
    for number in range(1, spec.participants + 1):
        if number in spec.video_off:
            continue
        size = PORTRAIT_SOURCE if number in spec.portrait_sources else DEFAULT_SIZE
        frames[feed_id(number)] = SyntheticVideo(number - 1, demo_name(number), size).frame_at(t)
    if spec.screen_share:
        frames[feed_id(1) + SCREEN_FEED_SUFFIX] = SyntheticScreen(
            0, f"{demo_name(1)}'s slides"
        ).frame_at(t)
    return frames


def plan_still(spec: StillSpec, t: float = 0.0) -> Scene:
    """The scene of the still: the real selection, geometry and drawing."""
    spec.check()
    _, scene = plan_frame(None, still_feeds(spec, t), spec.layout_spec, spec.canvas, t)
    return scene


def render_still(
    spec: StillSpec, t: float = 0.0, compositor: Compositor | None = None
) -> av.VideoFrame:
    """The frame the recorder would encode for this room at `t` (yuv420p, the preset canvas).

    Pass a `compositor` to reuse its caches across stills of the same canvas.
    """
    scene = plan_still(spec, t)
    if compositor is None or compositor.canvas != spec.canvas:
        compositor = Compositor(spec.canvas)
    return compositor.compose(scene, still_frames(spec, t))
