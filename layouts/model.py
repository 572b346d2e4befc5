"""The vocabulary shared by selection, geometry and drawing.

Everything here is an immutable value: the layouts package is a set of pure functions from these
values to tiles and pixels, so the same inputs always give the same frame (what golden tests pin).
The recorder builds `ParticipantView`s from its roster once per tick; nothing here knows about
networking, codecs or time sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LayoutType(StrEnum):
    GRID = "GRID"
    SPOTLIGHT = "SPOTLIGHT"
    SIDEBAR = "SIDEBAR"


class Priority(StrEnum):
    """Who gets the visible places when more people are present than fit."""

    SPEAKER = "SPEAKER"
    PIN = "PIN"


class Theme(StrEnum):
    DARK = "DARK"
    LIGHT = "LIGHT"
    DEFAULT = "DEFAULT"


class Orientation(StrEnum):
    LANDSCAPE = "landscape"
    PORTRAIT = "portrait"


class TileRole(StrEnum):
    """Why a tile is where it is; drawing sizes labels and marks by role."""

    GRID = "grid"  # an equal cell of a GRID
    MAIN = "main"  # the large tile of SPOTLIGHT or SIDEBAR
    SIDE = "side"  # a small tile stacked beside SIDEBAR's main tile
    PIP = "pip"  # the presenter's camera over their own screen share (SPOTLIGHT)


class Fit(StrEnum):
    """How a source frame is put into its tile."""

    FILL = "fill"  # scale to cover the tile, crop the overflow (cameras)
    FIT = "fit"  # scale to fit inside the tile, letterbox the rest (screens, portrait video)


MAX_GRID_SIZE = 4
DEFAULT_GRID_SIZE = 4


@dataclass(frozen=True, slots=True)
class Size:
    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def orientation(self) -> Orientation:
        return Orientation.PORTRAIT if self.height > self.width else Orientation.LANDSCAPE


@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in canvas pixels; tiles keep x, y, width and height even (yuv420p chroma)."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def size(self) -> Size:
        return Size(self.width, self.height)

    def intersects(self, other: Rect) -> bool:
        return (
            self.x < other.right
            and other.x < self.right
            and self.y < other.bottom
            and other.y < self.bottom
        )

    def contains(self, other: Rect) -> bool:
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )


@dataclass(frozen=True, slots=True)
class LayoutSpec:
    """The caller's layout choice, as validated by the job (CONTRACT.md §1)."""

    type: LayoutType = LayoutType.GRID
    priority: Priority = Priority.SPEAKER
    grid_size: int = DEFAULT_GRID_SIZE
    theme: Theme = Theme.DEFAULT


@dataclass(frozen=True, slots=True)
class ParticipantView:
    """One video feed as the layouts see it at one tick.

    A participant's camera is one feed; a screen share is a second feed with its own `id` whose
    `screen_of` names the presenting participant's camera feed. Times are seconds on the recording
    clock, so selection is reproducible in tests without sleeping.
    """

    id: str
    name: str
    video_on: bool = True  # camera (or share) published and not muted; off: draw the avatar
    muted: bool = False  # microphone muted: draw the mute mark
    speaking: bool = False  # speaking now (hysteresis is applied upstream, by the mixer)
    last_spoke: float | None = None  # when they last spoke; None: not yet
    pinned_at: float | None = None  # when they were pinned; None: not pinned. Pin order = this.
    joined_at: float = 0.0
    screen_of: str | None = None  # set on a screen-share feed: the presenter's feed id

    @property
    def is_screen_share(self) -> bool:
        return self.screen_of is not None


@dataclass(frozen=True, slots=True)
class Tile:
    """Where one feed goes on the canvas and how its video is fitted into it."""

    feed_id: str
    rect: Rect
    role: TileRole
    fit: Fit = Fit.FILL
