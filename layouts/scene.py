"""The plan of one output frame: what is drawn where, before any pixel of video is touched.

`build_scene` turns tiles (from `layouts.geometry.arrange`), the feeds and the hidden count into a
`Scene`: the static background (canvas colour plus tile colour under every tile, an RGB array
cached by its inputs), per tile whether to show the feed's video or its initials avatar, and the
overlay sprites (speaking ring, name label, mute mark, "+N" badge, empty-room card) at their
canvas positions. `plan_frame` is the one call the recorder's tick loop makes per frame:
select + arrange + build_scene. Given the loop's `SceneCache`, it reuses the previous tick's
`Scene` when what it draws is unchanged (the usual tick: the same tiles, people and states).

Sizes follow the tile, not the canvas, so a SIDEBAR side tile gets a smaller label than its main
tile; every position and size is even (yuv420p). Decisions where the issue left room:

* The label sits in the tile's bottom-left corner; when the feed is muted the mute mark sits
  just left of it, at the label's height. A tile too narrow for even "…" gets no label.
* The PIP (the presenter's camera over their own share) gets no name label: the share's label
  already says whose screen it is. It does get the mute mark and the speaking ring.
* The "+N" badge sits in the top-right corner of the last tile in display order (the PIP aside).
* A screen share's label reads "<presenter> — screen", with the presenter's name taken from the
  presenter's camera feed when present, else from the share feed's own `name`.
* A tile that lies over another tile (the PIP) is not in the static background; it is marked
  `backdrop` so the compositor fills it with the tile colour before drawing (a letterboxed or
  absent PIP video must not show the main tile through it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from layouts.draw import (
    PlacedSprite,
    Sprite,
    avatar,
    empty_room_card,
    hidden_badge,
    mute_mark,
    name_label,
    speaking_ring,
)
from layouts.geometry import arrange
from layouts.model import LayoutSpec, ParticipantView, Rect, Size, Theme, Tile, TileRole
from layouts.selection import Selection, select
from layouts.themes import RGB, theme_colors

# Name label height as a fraction of the tile's short side, and its bounds in pixels.
LABEL_HEIGHT_FRACTION = 0.085
MIN_LABEL_HEIGHT_PX = 16
MAX_LABEL_HEIGHT_PX = 48
# Distance of the label, mute mark and badge from the tile's edge, as a fraction of label height.
INSET_FRACTION = 0.35
# Space between the mute mark and the label, as a fraction of label height.
MARK_GAP_FRACTION = 0.2
# Initials avatar diameter as a fraction of the tile's short side, and its bounds in pixels.
AVATAR_FRACTION = 0.42
MIN_AVATAR_PX = 16
MAX_AVATAR_PX = 400
# Speaking ring thickness as a fraction of the tile's short side, and its bounds in pixels.
RING_FRACTION = 0.012
MIN_RING_PX = 2
MAX_RING_PX = 8
# Backgrounds kept: one per (canvas, theme, tile rectangles) seen recently.
BACKGROUND_CACHE_SIZE = 8
# What `build_scene` draws of a feed, and what it ignores: the ranking fields, which only
# `select` reads. `SceneCache` keys on the drawn ones. Every `ParticipantView` field is in one
# of the two (tests/test_draw.py checks), so a new field must be placed before it can be missed.
DRAWN_FIELDS = ("id", "name", "video_on", "muted", "speaking", "screen_of")
UNDRAWN_FIELDS = ("last_spoke", "pinned_at", "joined_at")


@dataclass(frozen=True, slots=True)
class Background:
    """What lies under all video: the canvas colour, and the tile colour under each tile.

    A value (hashable, compared by content), so the compositor caches its converted planes by it.
    """

    canvas: Size
    theme: Theme
    tiles: tuple[Rect, ...]

    def rgb(self) -> np.ndarray:
        """The background as a read-only RGB uint8 array (height, width, 3), cached."""
        return _background_rgb(self)


@lru_cache(maxsize=BACKGROUND_CACHE_SIZE)
def _background_rgb(background: Background) -> np.ndarray:
    colors = theme_colors(background.theme)
    canvas = background.canvas
    pixels = np.empty((canvas.height, canvas.width, 3), dtype=np.uint8)
    pixels[...] = colors.canvas_background
    for rect in background.tiles:
        pixels[rect.y : rect.bottom, rect.x : rect.right] = colors.tile_background
    pixels.setflags(write=False)
    return pixels


@dataclass(frozen=True, slots=True)
class TilePlan:
    """One tile of the frame: the feed's video if it is on and a frame has arrived, else the
    avatar; then the overlays, in order. Positions are canvas pixels."""

    tile: Tile
    show_video: bool  # the feed's video is on; the compositor still falls back to the avatar
    avatar: PlacedSprite
    overlays: tuple[PlacedSprite, ...]
    backdrop: bool = False  # fill the tile with the tile colour first (it lies over another tile)


@dataclass(frozen=True, slots=True)
class Scene:
    """Everything the compositor needs to draw one frame, except the video frames themselves."""

    canvas: Size
    theme: Theme
    background: Background
    tile_background: RGB
    tiles: tuple[TilePlan, ...]  # in draw order (the PIP last)
    overlays: tuple[PlacedSprite, ...]  # over everything: the "+N" badge, the empty-room card


def build_scene(
    tiles: Sequence[Tile],
    feeds: Sequence[ParticipantView],
    hidden: int,
    theme: Theme,
    canvas: Size,
) -> Scene:
    """The plan of one frame. Every tile's feed must be among `feeds` (KeyError otherwise)."""
    by_id = {feed.id: feed for feed in feeds}
    plans: list[TilePlan] = []
    static: list[Rect] = []
    for tile in tiles:
        backdrop = any(tile.rect.intersects(earlier) for earlier in static)
        if not backdrop:
            static.append(tile.rect)
        plans.append(_plan_tile(tile, by_id, theme, backdrop))

    overlays: list[PlacedSprite] = []
    if not tiles:
        card = empty_room_card(canvas, theme)
        overlays.append(_centred(card, Rect(0, 0, canvas.width, canvas.height)))
    elif hidden > 0:
        anchor = next((t for t in reversed(tiles) if t.role is not TileRole.PIP), tiles[-1]).rect
        height = label_height(anchor)
        badge = hidden_badge(hidden, height, theme)
        inset = _inset(height)
        overlays.append(PlacedSprite(badge, anchor.right - inset - badge.width, anchor.y + inset))

    return Scene(
        canvas=canvas,
        theme=theme,
        background=Background(canvas, theme, tuple(static)),
        tile_background=theme_colors(theme).tile_background,
        tiles=tuple(plans),
        overlays=tuple(overlays),
    )


class SceneCache:
    """The last `Scene` one tick loop planned and what `build_scene` read to make it.

    Owned by one loop (the media engine), so its lifetime is the recording's and nothing is
    shared between threads. One entry: consecutive ticks are what repeat. Building a scene costs
    ~60 us (sprite look-ups, a plan per tile); the key costs a few.
    """

    __slots__ = ("_key", "_scene", "hits", "misses")

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._scene: Scene | None = None
        self.hits = 0
        self.misses = 0

    def scene(
        self,
        tiles: tuple[Tile, ...],
        feeds: Sequence[ParticipantView],
        hidden: int,
        theme: Theme,
        canvas: Size,
    ) -> Scene:
        """`build_scene(tiles, feeds, hidden, theme, canvas)`, or the last one if equal."""
        by_id = {feed.id: feed for feed in feeds}
        key = (tiles, tuple(_drawn(by_id, tile.feed_id) for tile in tiles), hidden, theme, canvas)
        if self._scene is not None and key == self._key:
            self.hits += 1
            return self._scene
        self.misses += 1
        self._scene = build_scene(tiles, feeds, hidden, theme, canvas)
        self._key = key
        return self._scene


def _drawn(by_id: dict[str, ParticipantView], feed_id: str) -> tuple[object, ...]:
    """What `build_scene` reads of a tile's feed: its `DRAWN_FIELDS` and, for a screen share,
    its presenter's name when the presenter's feed is present."""
    feed = by_id[feed_id]
    presenter = by_id.get(feed.screen_of) if feed.screen_of is not None else None
    return (
        feed.id,
        feed.name,
        feed.video_on,
        feed.muted,
        feed.speaking,
        feed.screen_of,
        None if presenter is None else presenter.name,
    )


def plan_frame(
    previous: Selection | None,
    feeds: Sequence[ParticipantView],
    spec: LayoutSpec,
    canvas: Size,
    now: float,
    *,
    cache: SceneCache | None = None,
) -> tuple[Selection, Scene]:
    """One tick of the layout: who is shown (`select`), where (`arrange`), and what is drawn.

    Pass the returned selection back as `previous` on the next tick, and the loop's `cache` to
    get the previous tick's scene back while nothing drawn has changed.
    """
    selection = select(previous, feeds, spec, now)
    tiles = arrange(selection, feeds, spec.type, canvas)
    if cache is None:
        return selection, build_scene(tiles, feeds, selection.hidden, spec.theme, canvas)
    return selection, cache.scene(tiles, feeds, selection.hidden, spec.theme, canvas)


def label_height(rect: Rect) -> int:
    """The name label's height for a tile (even pixels)."""
    short = min(rect.width, rect.height)
    return _clamp_even(short * LABEL_HEIGHT_FRACTION, MIN_LABEL_HEIGHT_PX, MAX_LABEL_HEIGHT_PX)


def avatar_diameter(rect: Rect) -> int:
    """The initials avatar's diameter for a tile (even pixels, never larger than the tile)."""
    short = min(rect.width, rect.height)
    return min(short // 2 * 2, _clamp_even(short * AVATAR_FRACTION, MIN_AVATAR_PX, MAX_AVATAR_PX))


def ring_thickness(rect: Rect) -> int:
    """The speaking ring's thickness for a tile (even pixels)."""
    short = min(rect.width, rect.height)
    return _clamp_even(short * RING_FRACTION, MIN_RING_PX, MAX_RING_PX)


def _plan_tile(
    tile: Tile, by_id: dict[str, ParticipantView], theme: Theme, backdrop: bool
) -> TilePlan:
    feed = by_id[tile.feed_id]
    rect = tile.rect
    name = feed.name
    if feed.screen_of is not None and feed.screen_of in by_id:
        name = by_id[feed.screen_of].name

    diameter = avatar_diameter(rect)
    face = avatar(feed.id if feed.screen_of is None else feed.screen_of, name, diameter, theme)
    placed_avatar = _centred(face, rect)

    overlays: list[PlacedSprite] = []
    if feed.speaking:
        ring = speaking_ring(Size(rect.width, rect.height), ring_thickness(rect), theme)
        overlays += [PlacedSprite(p.sprite, rect.x + p.x, rect.y + p.y) for p in ring]

    height = label_height(rect)
    inset = _inset(height)
    x = rect.x + inset
    y = rect.bottom - inset - height
    if feed.muted and not feed.is_screen_share:
        mark = mute_mark(height, theme)
        overlays.append(PlacedSprite(mark, x, y))
        x += mark.width + _even(height * MARK_GAP_FRACTION)
    if tile.role is not TileRole.PIP:
        label = name_label(
            name,
            screen_share=feed.is_screen_share,
            height_px=height,
            max_width_px=rect.right - inset - x,
            theme=theme,
        )
        if label is not None:
            overlays.append(PlacedSprite(label, x, y))

    return TilePlan(
        tile=tile,
        show_video=feed.video_on,
        avatar=placed_avatar,
        overlays=tuple(overlays),
        backdrop=backdrop,
    )


def _centred(sprite: Sprite, rect: Rect) -> PlacedSprite:
    """`sprite` centred in `rect` (at even coordinates)."""
    return PlacedSprite(
        sprite,
        rect.x + _even((rect.width - sprite.width) / 2),
        rect.y + _even((rect.height - sprite.height) / 2),
    )


def _inset(label_height_px: int) -> int:
    return _even(label_height_px * INSET_FRACTION)


def _even(value: float) -> int:
    """`value` floored to an even integer (positions must be even for yuv420p chroma)."""
    return int(value) // 2 * 2


def _clamp_even(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value / 2) * 2))
