"""Where each visible feed goes on the canvas, and how a source frame is fitted into its tile.

Pure integer geometry: `arrange` turns a `Selection` into `Tile`s, `place_video` tells the
compositor how to scale and crop one source frame into one tile. Every x, y, width and height is
even, because the canvas is yuv420p and a chroma sample covers 2x2 luma pixels.

Decisions, where the issue left room:

* **Portrait canvases.** SPOTLIGHT and SIDEBAR are computed on the landscape frame (width >=
  height) and transposed back: SIDEBAR's side column becomes a row below the main tile, the PIP
  stays in the bottom-right corner. GRID is searched on the canvas as it is, so its slots always
  read row by row: on a portrait canvas 2 are stacked, 3 are 2 side by side over 1 centred, 4 are
  2x2. Tile aspects are inverted on portrait canvases: a portrait canvas is taken to be made for
  portrait sources (phones); landscape sources are letterboxed there by `place_video`'s rule.
* **Tile aspect.** A GRID cell or SIDEBAR side cell keeps its size when its aspect lies between
  `MIN_TILE_ASPECT` (4:3) and `MAX_TILE_ASPECT` (16:9) (inverted on portrait canvases); a cell more
  elongated than that is narrowed to the nearest bound, leaving background around it. 4:3 rather
  than squarer, so that "2 side by side" gives landscape tiles and a 16:9 camera is cropped by a
  quarter instead of being letterboxed in a near-square portrait tile.
* **GRID shape** is the row count that gives the largest tiles (ties: fewer rows), rows filled in
  reading order, the last row centred; tiles are packed one gap apart and the block is centred in
  the canvas. At the preset canvases: 1 full, 2 side by side (stacked on portrait), 3 = 2 + 1
  centred, 4 = 2x2.
* **SPOTLIGHT** fills the canvas minus margins; **SIDEBAR** gives the main tile
  `SIDEBAR_MAIN_FRACTION` of the content width (height on portrait) and the side tiles the rest;
  with no side tiles the main tile fills the canvas.
* **Draw order**: main first, then side or grid tiles in selection order, the PIP last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from layouts.model import Fit, LayoutType, ParticipantView, Rect, Size, Tile, TileRole
from layouts.selection import Selection

# Spacing, as fractions of the canvas' short side, rounded to even pixels and at least
# MIN_SPACING_PX: the frame around the tiles, and the space between two tiles.
MARGIN_FRACTION = 0.02
GAP_FRACTION = 0.01
MIN_SPACING_PX = 2
# Aspect bounds of GRID and SIDEBAR side tiles on a landscape canvas (inverted on portrait).
MIN_TILE_ASPECT = 4 / 3
MAX_TILE_ASPECT = 16 / 9
# SIDEBAR: the main tile's share of the content width (height on portrait canvases).
SIDEBAR_MAIN_FRACTION = 0.75
# SPOTLIGHT's picture in picture: its width as a fraction of the main tile's width, its aspect, and
# the most of the main tile's height it may take (very wide canvases).
PIP_WIDTH_FRACTION = 0.22
PIP_ASPECT = 16 / 9
PIP_MAX_HEIGHT_FRACTION = 0.4
# FILL crops the source to cover its tile; when that would keep less than this fraction of the
# source's width (or height), the source is fitted instead, so no one's face is cut away and a
# freak source (1 px tall) is never scaled to an enormous frame.
MIN_FILL_VISIBLE_FRACTION = 0.5
# The smallest canvas the layouts promise to handle.
MIN_CANVAS_PX = 64


@dataclass(frozen=True, slots=True)
class Placement:
    """How one source frame lands in its tile.

    Scale the whole source to `scaled`, cut the `crop` region out of the scaled image (same size as
    `dest`), and copy it to `dest` in canvas coordinates (inside the tile). All values even.
    """

    scaled: Size
    crop: Rect
    dest: Rect


def arrange(
    selection: Selection,
    feeds: Sequence[ParticipantView],
    layout: LayoutType,
    canvas: Size,
) -> tuple[Tile, ...]:
    """The tiles of one frame, in draw order (the PIP last, so it is drawn over its main tile).

    `feeds` must contain every feed the selection shows (their screen-share flag decides the fit).
    An empty selection gives no tiles. Raises ValueError for an odd or too small canvas, for a
    selection that names a feed not in `feeds`, or for more than one visible feed in SPOTLIGHT.
    """
    check_canvas(canvas)
    if not selection.visible:
        return ()
    by_id = {feed.id: feed for feed in feeds}
    for feed_id in selection.shown:
        if feed_id not in by_id:
            raise ValueError(f"selection shows feed {feed_id!r} which is not among the feeds")

    portrait = canvas.height > canvas.width
    frame = Size(canvas.height, canvas.width) if portrait else canvas
    spacing = _Spacing.of(frame)
    ids = selection.visible

    placed: list[tuple[str, Rect, TileRole]]
    if layout is LayoutType.GRID:
        # GRID is computed on the canvas as it is, so its slots read row by row either way.
        rects = _grid_rects(len(ids), canvas, spacing)
        return tuple(
            Tile(feed_id, rect, TileRole.GRID, _fit_of(by_id[feed_id]))
            for feed_id, rect in zip(ids, rects, strict=True)
        )
    if layout is LayoutType.SPOTLIGHT:
        if len(ids) != 1:
            raise ValueError(f"SPOTLIGHT shows one main feed, the selection has {len(ids)}")
        main = spacing.content(frame)
        placed = [(ids[0], main, TileRole.MAIN)]
        if selection.pip is not None:
            pip = _pip_rect(main, spacing)
            if pip is not None:
                placed.append((selection.pip, pip, TileRole.PIP))
    else:
        main, sides = _sidebar_rects(len(ids) - 1, frame, spacing)
        placed = [(ids[0], main, TileRole.MAIN)]
        placed += [
            (feed_id, rect, TileRole.SIDE) for feed_id, rect in zip(ids[1:], sides, strict=True)
        ]

    return tuple(
        Tile(
            feed_id=feed_id,
            rect=_transpose(rect) if portrait else rect,
            role=role,
            fit=_fit_of(by_id[feed_id]),
        )
        for feed_id, rect, role in placed
    )


def place_video(source: Size, tile: Rect, fit: Fit) -> Placement:
    """How to scale a `source`-sized frame into `tile` with `fit`.

    FILL covers the tile and crops the centre; FIT fits inside and centres (letterbox). FILL turns
    into FIT when the source and the tile differ in orientation (a portrait phone in a landscape
    tile) or when covering would keep less than `MIN_FILL_VISIBLE_FRACTION` of the source. Raises
    ValueError for a source without pixels or a tile that is not even and at least 2x2.
    """
    if source.width <= 0 or source.height <= 0:
        raise ValueError(f"source frame has no pixels: {source.width}x{source.height}")
    if (
        tile.width < 2
        or tile.height < 2
        or any(v % 2 for v in (tile.x, tile.y, tile.width, tile.height))
    ):
        raise ValueError(f"tile must be even and at least 2x2: {tile}")

    tile_size = Size(tile.width, tile.height)
    if fit is Fit.FILL and _fill_keeps_enough(source, tile_size):
        scale = max(tile.width / source.width, tile.height / source.height)
        width = max(tile.width, _round_even(source.width * scale))
        height = max(tile.height, _round_even(source.height * scale))
        crop = Rect(
            _floor_even((width - tile.width) / 2),
            _floor_even((height - tile.height) / 2),
            tile.width,
            tile.height,
        )
        return Placement(Size(width, height), crop, tile)

    scale = min(tile.width / source.width, tile.height / source.height)
    width = min(tile.width, max(2, _round_even(source.width * scale)))
    height = min(tile.height, max(2, _round_even(source.height * scale)))
    dest = Rect(
        tile.x + _floor_even((tile.width - width) / 2),
        tile.y + _floor_even((tile.height - height) / 2),
        width,
        height,
    )
    return Placement(Size(width, height), Rect(0, 0, width, height), dest)


def check_canvas(canvas: Size) -> None:
    """Refuse a canvas the layouts cannot promise to handle: odd sides, or below 64x64."""
    if canvas.width % 2 or canvas.height % 2:
        raise ValueError(f"canvas sides must be even (yuv420p): {canvas.width}x{canvas.height}")
    if canvas.width < MIN_CANVAS_PX or canvas.height < MIN_CANVAS_PX:
        raise ValueError(
            f"canvas must be at least {MIN_CANVAS_PX}x{MIN_CANVAS_PX}: "
            f"{canvas.width}x{canvas.height}"
        )


def margin_px(canvas: Size) -> int:
    """The frame between the canvas' edge and the tiles, in pixels (even)."""
    return _spacing_px(canvas, MARGIN_FRACTION)


def gap_px(canvas: Size) -> int:
    """The space between two neighbouring tiles, in pixels (even)."""
    return _spacing_px(canvas, GAP_FRACTION)


@dataclass(frozen=True, slots=True)
class _Spacing:
    margin: int
    gap: int

    @staticmethod
    def of(canvas: Size) -> _Spacing:
        return _Spacing(margin_px(canvas), gap_px(canvas))

    def content(self, frame: Size) -> Rect:
        return Rect(
            self.margin,
            self.margin,
            frame.width - 2 * self.margin,
            frame.height - 2 * self.margin,
        )


def _grid_rects(count: int, frame: Size, spacing: _Spacing) -> list[Rect]:
    """`count` equal tiles: rows in reading order, the last row centred, the block centred."""
    if count <= 0:
        return []
    content = spacing.content(frame)
    portrait = frame.height > frame.width
    low, high = (
        (1 / MAX_TILE_ASPECT, 1 / MIN_TILE_ASPECT)
        if portrait
        else (MIN_TILE_ASPECT, MAX_TILE_ASPECT)
    )
    gap = spacing.gap
    best: tuple[int, int, int, int] | None = None  # (area, rows, width, height)
    for rows in range(1, count + 1):
        cols = math.ceil(count / rows)
        if (rows - 1) * cols >= count:
            continue  # an empty last row: a layout with fewer rows does the same better
        cell_w = _floor_even((content.width - (cols - 1) * gap) / cols)
        cell_h = _floor_even((content.height - (rows - 1) * gap) / rows)
        size = _clamp_aspect(cell_w, cell_h, low, high)
        if size is None:
            continue
        width, height = size
        if best is None or width * height > best[0]:
            best = (width * height, rows, width, height)
    if best is None:
        raise ValueError(f"canvas {frame.width}x{frame.height} is too small for {count} tiles")
    _, rows, width, height = best
    cols = math.ceil(count / rows)

    block_h = rows * height + (rows - 1) * gap
    y = content.y + _floor_even((content.height - block_h) / 2)
    rects: list[Rect] = []
    for row in range(rows):
        in_row = min(cols, count - row * cols)
        row_w = in_row * width + (in_row - 1) * gap
        x = content.x + _floor_even((content.width - row_w) / 2)
        for col in range(in_row):
            rects.append(Rect(x + col * (width + gap), y, width, height))
        y += height + gap
    return rects


def _sidebar_rects(sides: int, frame: Size, spacing: _Spacing) -> tuple[Rect, list[Rect]]:
    """SIDEBAR on a landscape frame: the main tile on the left, `sides` tiles stacked right."""
    content = spacing.content(frame)
    if sides <= 0:
        return content, []
    gap = spacing.gap
    main_w = _floor_even((content.width - gap) * SIDEBAR_MAIN_FRACTION)
    side_w = content.width - gap - main_w
    cell_h = _floor_even((content.height - (sides - 1) * gap) / sides)
    size = _clamp_aspect(side_w, cell_h, MIN_TILE_ASPECT, MAX_TILE_ASPECT)
    if main_w < 2 or size is None:
        raise ValueError(f"canvas {frame.width}x{frame.height} is too small for {sides} side tiles")
    width, height = size
    main = Rect(content.x, content.y, main_w, content.height)
    block_h = sides * height + (sides - 1) * gap
    x = content.x + main_w + gap + _floor_even((side_w - width) / 2)
    y = content.y + _floor_even((content.height - block_h) / 2)
    return main, [Rect(x, y + i * (height + gap), width, height) for i in range(sides)]


def _pip_rect(main: Rect, spacing: _Spacing) -> Rect | None:
    """The PIP in the main tile's bottom-right corner, or None if the main tile is too small."""
    width = _floor_even(main.width * PIP_WIDTH_FRACTION)
    height = _floor_even(width / PIP_ASPECT)
    if height > main.height * PIP_MAX_HEIGHT_FRACTION:
        height = _floor_even(main.height * PIP_MAX_HEIGHT_FRACTION)
        width = _floor_even(height * PIP_ASPECT)
    inset = spacing.gap
    if width < 2 or height < 2 or width + inset > main.width or height + inset > main.height:
        return None
    return Rect(main.right - inset - width, main.bottom - inset - height, width, height)


def _clamp_aspect(width: int, height: int, low: float, high: float) -> tuple[int, int] | None:
    """Narrow a cell to an aspect within [low, high], keeping it centred; None if under 2x2."""
    if width < 2 or height < 2:
        return None
    if width > height * high:
        width = _floor_even(height * high)
    elif width < height * low:
        height = _floor_even(width / low)
    if width < 2 or height < 2:
        return None
    return width, height


def _fit_of(feed: ParticipantView) -> Fit:
    """Screens are letterboxed (text must stay whole); cameras cover their tile."""
    return Fit.FIT if feed.is_screen_share else Fit.FILL


def _fill_keeps_enough(source: Size, tile: Size) -> bool:
    if source.orientation is not tile.orientation:
        return False
    ratio = source.aspect / tile.aspect
    return min(ratio, 1 / ratio) >= MIN_FILL_VISIBLE_FRACTION


def _spacing_px(canvas: Size, fraction: float) -> int:
    return max(MIN_SPACING_PX, _round_even(min(canvas.width, canvas.height) * fraction))


def _transpose(rect: Rect) -> Rect:
    return Rect(rect.y, rect.x, rect.height, rect.width)


def _floor_even(value: float) -> int:
    return int(value) // 2 * 2


def _round_even(value: float) -> int:
    return int(value / 2 + 0.5) * 2
