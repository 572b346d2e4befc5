"""Where tiles go and how a frame is fitted into its tile: unit cases and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layouts.geometry import (
    MAX_TILE_ASPECT,
    MIN_FILL_VISIBLE_FRACTION,
    MIN_TILE_ASPECT,
    SIDEBAR_MAIN_FRACTION,
    Placement,
    arrange,
    gap_px,
    margin_px,
    place_video,
)
from layouts.model import (
    Fit,
    LayoutSpec,
    LayoutType,
    ParticipantView,
    Priority,
    Rect,
    Size,
    Tile,
    TileRole,
)
from layouts.selection import EMPTY_SELECTION, Selection, select

GRID = LayoutType.GRID
SPOTLIGHT = LayoutType.SPOTLIGHT
SIDEBAR = LayoutType.SIDEBAR
PRESET_CANVASES = [Size(854, 480), Size(1280, 720), Size(1920, 1080)]
ALL_PRESET_CANVASES = PRESET_CANVASES + [Size(c.height, c.width) for c in PRESET_CANVASES]


def cams(count: int) -> list[ParticipantView]:
    return [ParticipantView(id=f"p{i}", name=f"P{i}", joined_at=float(i)) for i in range(count)]


def grid_tiles(count: int, canvas: Size) -> tuple[Tile, ...]:
    feeds = cams(count)
    selection = Selection(visible=tuple(feed.id for feed in feeds))
    return arrange(selection, feeds, GRID, canvas)


def centre_x(rect: Rect) -> float:
    return rect.x + rect.width / 2


def centre_y(rect: Rect) -> float:
    return rect.y + rect.height / 2


def is_even(rect: Rect) -> bool:
    return all(value % 2 == 0 for value in (rect.x, rect.y, rect.width, rect.height))


def check_common_invariants(tiles: tuple[Tile, ...], canvas: Size) -> None:
    """Inside the canvas, even, non-empty, no overlaps (the PIP lies inside its main tile)."""
    whole = Rect(0, 0, canvas.width, canvas.height)
    margin = margin_px(canvas)
    inner = Rect(margin, margin, canvas.width - 2 * margin, canvas.height - 2 * margin)
    for tile in tiles:
        assert whole.contains(tile.rect) and inner.contains(tile.rect), (tile, canvas)
        assert is_even(tile.rect), tile
        assert tile.rect.width >= 2 and tile.rect.height >= 2, tile
    flat = [tile for tile in tiles if tile.role is not TileRole.PIP]
    for i, first in enumerate(flat):
        for second in flat[i + 1 :]:
            assert not first.rect.intersects(second.rect), (first, second)
    pips = [tile for tile in tiles if tile.role is TileRole.PIP]
    assert len(pips) <= 1
    if pips:
        assert tiles[-1] is pips[0]  # drawn last, on top
        main = next(tile for tile in tiles if tile.role is TileRole.MAIN)
        assert main.rect.contains(pips[0].rect) and pips[0].rect.area < main.rect.area


# --- GRID -------------------------------------------------------------------------------------


@pytest.mark.parametrize("canvas", PRESET_CANVASES)
def test_grid_landscape_shapes(canvas: Size) -> None:
    one = grid_tiles(1, canvas)
    assert len(one) == 1 and one[0].role is TileRole.GRID
    assert one[0].rect.height == canvas.height - 2 * margin_px(canvas)  # as big as it can be

    left, right = (tile.rect for tile in grid_tiles(2, canvas))
    assert left.y == right.y and left.right < right.x  # side by side, left to right
    assert left.width > left.height  # landscape tiles, not near-square portrait ones

    top_left, top_right, bottom = (tile.rect for tile in grid_tiles(3, canvas))
    assert top_left.y == top_right.y < bottom.y
    assert abs(centre_x(bottom) - canvas.width / 2) <= 2  # the third is centred below

    rects = [tile.rect for tile in grid_tiles(4, canvas)]
    assert len({r.x for r in rects}) == 2 and len({r.y for r in rects}) == 2  # 2x2
    assert rects[0].y == rects[1].y and rects[0].x < rects[1].x  # reading order


@pytest.mark.parametrize("canvas", [Size(c.height, c.width) for c in PRESET_CANVASES])
def test_grid_portrait_shapes(canvas: Size) -> None:
    top, bottom = (tile.rect for tile in grid_tiles(2, canvas))
    assert top.x == bottom.x and top.bottom < bottom.y  # stacked
    assert top.height > top.width  # portrait tiles on a portrait canvas

    top_left, top_right, bottom = (tile.rect for tile in grid_tiles(3, canvas))
    assert top_left.y == top_right.y < bottom.y
    assert abs(centre_x(bottom) - canvas.width / 2) <= 2

    rects = [tile.rect for tile in grid_tiles(4, canvas)]
    assert len({r.x for r in rects}) == 2 and len({r.y for r in rects}) == 2


@pytest.mark.parametrize("canvas", ALL_PRESET_CANVASES)
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_grid_tiles_are_equal_centred_and_within_aspect_bounds(canvas: Size, count: int) -> None:
    tiles = grid_tiles(count, canvas)
    check_common_invariants(tiles, canvas)
    sizes = {(tile.rect.width, tile.rect.height) for tile in tiles}
    assert len(sizes) == 1
    width, height = sizes.pop()
    aspect = width / height
    if canvas.orientation.value == "portrait":
        aspect = 1 / aspect
    assert MIN_TILE_ASPECT - 0.05 <= aspect <= MAX_TILE_ASPECT + 0.05
    left = min(tile.rect.x for tile in tiles)
    right = max(tile.rect.right for tile in tiles)
    top = min(tile.rect.y for tile in tiles)
    bottom = max(tile.rect.bottom for tile in tiles)
    assert abs(left - (canvas.width - right)) <= 2 and abs(top - (canvas.height - bottom)) <= 2
    # One gap between neighbours, and a large share of the canvas used.
    assert sum(tile.rect.area for tile in tiles) >= 0.4 * canvas.width * canvas.height


def test_grid_spacing_at_720p() -> None:
    canvas = Size(1280, 720)
    assert margin_px(canvas) == 14 and gap_px(canvas) == 8
    tiles = grid_tiles(4, canvas)
    assert tiles[1].rect.x - tiles[0].rect.right == 8
    assert tiles[2].rect.y - tiles[0].rect.bottom == 8


# --- SPOTLIGHT and SIDEBAR ----------------------------------------------------------------------


def share_room() -> list[ParticipantView]:
    return [
        ParticipantView(id="presenter", name="Presenter"),
        ParticipantView(id="screen", name="Presenter", screen_of="presenter"),
        ParticipantView(id="other", name="Other", last_spoke=1.0),
    ]


@pytest.mark.parametrize("canvas", ALL_PRESET_CANVASES)
def test_spotlight_main_fills_the_canvas_and_pip_sits_bottom_right(canvas: Size) -> None:
    feeds = share_room()
    selection = select(None, feeds, LayoutSpec(type=SPOTLIGHT), 2.0)
    main, pip = arrange(selection, feeds, SPOTLIGHT, canvas)
    margin = margin_px(canvas)
    assert main == Tile(
        "screen",
        Rect(margin, margin, canvas.width - 2 * margin, canvas.height - 2 * margin),
        TileRole.MAIN,
        Fit.FIT,
    )
    assert pip.feed_id == "presenter" and pip.role is TileRole.PIP and pip.fit is Fit.FILL
    assert main.rect.contains(pip.rect)
    assert centre_x(pip.rect) > centre_x(main.rect) and centre_y(pip.rect) > centre_y(main.rect)
    assert pip.rect.area < main.rect.area / 10
    check_common_invariants((main, pip), canvas)


def test_spotlight_camera_has_no_pip() -> None:
    feeds = cams(3)
    selection = select(None, feeds, LayoutSpec(type=SPOTLIGHT), 0.0)
    (main,) = arrange(selection, feeds, SPOTLIGHT, Size(1280, 720))
    assert main.feed_id == "p0" and main.fit is Fit.FILL and main.role is TileRole.MAIN


@pytest.mark.parametrize("canvas", ALL_PRESET_CANVASES)
@pytest.mark.parametrize("sides", [1, 2, 3])
def test_sidebar_main_three_quarters_and_sides_stacked(canvas: Size, sides: int) -> None:
    feeds = cams(sides + 1)
    selection = select(None, feeds, LayoutSpec(type=SIDEBAR, grid_size=4), 0.0)
    main, *side_tiles = arrange(selection, feeds, SIDEBAR, canvas)
    check_common_invariants((main, *side_tiles), canvas)
    assert main.role is TileRole.MAIN and main.feed_id == "p0"
    assert [tile.role for tile in side_tiles] == [TileRole.SIDE] * sides
    portrait = canvas.height > canvas.width
    along = canvas.height if portrait else canvas.width
    main_along = main.rect.height if portrait else main.rect.width
    assert abs(main_along / along - SIDEBAR_MAIN_FRACTION) < 0.05
    for tile in side_tiles:
        if portrait:  # a row below the main tile
            assert tile.rect.y > main.rect.bottom
        else:  # a column right of the main tile
            assert tile.rect.x > main.rect.right
        aspect = tile.rect.width / tile.rect.height
        if portrait:
            aspect = 1 / aspect
        assert MIN_TILE_ASPECT - 0.05 <= aspect <= MAX_TILE_ASPECT + 0.05
    positions = [tile.rect.x if portrait else tile.rect.y for tile in side_tiles]
    assert positions == sorted(positions)  # in selection order


def test_sidebar_alone_fills_the_canvas() -> None:
    feeds = cams(1)
    selection = select(None, feeds, LayoutSpec(type=SIDEBAR), 0.0)
    (main,) = arrange(selection, feeds, SIDEBAR, Size(1280, 720))
    assert main.rect == Rect(14, 14, 1252, 692)


def test_fit_is_fit_for_screens_and_fill_for_cameras() -> None:
    feeds = share_room()
    selection = select(None, feeds, LayoutSpec(type=SIDEBAR, grid_size=3), 2.0)
    fits = {tile.feed_id: tile.fit for tile in arrange(selection, feeds, SIDEBAR, Size(1280, 720))}
    assert fits == {"screen": Fit.FIT, "presenter": Fit.FILL, "other": Fit.FILL}


# --- refusals and the empty room ------------------------------------------------------------


def test_empty_room_has_no_tiles() -> None:
    for layout in LayoutType:
        assert arrange(EMPTY_SELECTION, [], layout, Size(1280, 720)) == ()


def test_refuses_bad_canvases_unknown_feeds_and_crowded_spotlight() -> None:
    feeds = cams(2)
    selection = Selection(visible=("p0", "p1"))
    with pytest.raises(ValueError, match="even"):
        arrange(selection, feeds, GRID, Size(1281, 720))
    with pytest.raises(ValueError, match="at least"):
        arrange(selection, feeds, GRID, Size(62, 720))
    with pytest.raises(ValueError, match="not among the feeds"):
        arrange(Selection(visible=("ghost",)), feeds, GRID, Size(1280, 720))
    with pytest.raises(ValueError, match="SPOTLIGHT"):
        arrange(selection, feeds, SPOTLIGHT, Size(1280, 720))


# --- place_video ----------------------------------------------------------------------------


def test_fill_same_aspect_scales_exactly() -> None:
    tile = Rect(100, 50, 640, 360)
    assert place_video(Size(1920, 1080), tile, Fit.FILL) == Placement(
        Size(640, 360), Rect(0, 0, 640, 360), tile
    )


def test_fill_crops_the_centre() -> None:
    tile = Rect(10, 20, 400, 300)
    placement = place_video(Size(1920, 1080), tile, Fit.FILL)
    # 1920x1080 scaled to height 300: 533.3 wide, rounded to 534; 134 px cropped, 66 on the left.
    assert placement == Placement(Size(534, 300), Rect(66, 0, 400, 300), tile)


def test_fit_letterboxes_and_centres() -> None:
    tile = Rect(100, 50, 640, 360)
    placement = place_video(Size(1920, 1200), tile, Fit.FIT)
    assert placement == Placement(Size(576, 360), Rect(0, 0, 576, 360), Rect(132, 50, 576, 360))


def test_portrait_source_in_landscape_tile_is_fitted_even_when_asked_to_fill() -> None:
    tile = Rect(0, 0, 640, 360)
    placement = place_video(Size(720, 1280), tile, Fit.FILL)
    assert placement.scaled == Size(202, 360)  # 720*360/1280 = 202.5 -> 202
    assert placement.dest == Rect(218, 0, 202, 360)
    landscape_in_portrait = place_video(Size(1280, 720), Rect(0, 0, 360, 640), Fit.FILL)
    assert landscape_in_portrait.scaled == Size(360, 202)
    assert landscape_in_portrait.dest == Rect(0, 218, 360, 202)


def test_fill_that_would_keep_less_than_half_fits_instead() -> None:
    # A 4:1 banner in a 4:3 tile: covering would keep a third of its width.
    placement = place_video(Size(1600, 400), Rect(0, 0, 400, 300), Fit.FILL)
    assert placement.scaled == Size(400, 100) and placement.dest == Rect(0, 100, 400, 100)


def test_degenerate_and_extreme_sources() -> None:
    tile = Rect(0, 0, 640, 360)
    for bad in (Size(0, 100), Size(100, 0), Size(-2, 4)):
        with pytest.raises(ValueError, match="no pixels"):
            place_video(bad, tile, Fit.FILL)
    with pytest.raises(ValueError, match="even"):
        place_video(Size(10, 10), Rect(1, 0, 640, 360), Fit.FIT)
    tiny = place_video(Size(1, 1), tile, Fit.FILL)
    assert tiny.scaled == Size(640, 640) and tiny.crop == Rect(0, 140, 640, 360)
    sliver = place_video(Size(1, 100_000), tile, Fit.FIT)
    assert sliver.scaled == Size(2, 360) and sliver.dest == Rect(318, 0, 2, 360)
    huge = place_video(Size(100_000, 56_250), tile, Fit.FILL)
    assert huge.scaled == Size(640, 360)


# --- properties -------------------------------------------------------------------------------

even_sides = st.integers(32, 2048).map(lambda half: half * 2)


@st.composite
def rooms(draw: st.DrawFn) -> tuple[list[ParticipantView], LayoutSpec]:
    """0..8 feeds, some of them screen shares of another feed (present or not)."""
    count = draw(st.integers(0, 8))
    feeds: list[ParticipantView] = []
    for i in range(count):
        screen_of = None
        if draw(st.integers(0, 4)) == 0:
            screen_of = f"p{draw(st.integers(0, 8))}"
        feeds.append(
            ParticipantView(
                id=f"p{i}",
                name=f"P{i}",
                joined_at=float(draw(st.integers(0, 5))),
                last_spoke=draw(st.one_of(st.none(), st.floats(0, 10))),
                pinned_at=draw(st.one_of(st.none(), st.floats(0, 10))),
                screen_of=screen_of,
            )
        )
    layout_spec = LayoutSpec(
        type=draw(st.sampled_from(list(LayoutType))),
        priority=draw(st.sampled_from(list(Priority))),
        grid_size=draw(st.integers(1, 4)),
    )
    return feeds, layout_spec


@settings(max_examples=400, deadline=None)
@given(rooms(), even_sides, even_sides)
def test_property_tiles_inside_even_disjoint_and_main_largest(
    room: tuple[list[ParticipantView], LayoutSpec], width: int, height: int
) -> None:
    feeds, layout_spec = room
    canvas = Size(width, height)
    selection = select(None, feeds, layout_spec, 10.0)
    tiles = arrange(selection, feeds, layout_spec.type, canvas)
    check_common_invariants(tiles, canvas)
    assert [tile.feed_id for tile in tiles if tile.role is not TileRole.PIP] == list(
        selection.visible
    )
    assert len(tiles) <= len(selection.shown)
    by_id = {feed.id: feed for feed in feeds}
    for tile in tiles:
        assert tile.fit is (Fit.FIT if by_id[tile.feed_id].is_screen_share else Fit.FILL)
    if layout_spec.type is not GRID and tiles:
        main = tiles[0]
        assert main.role is TileRole.MAIN
        assert all(tile.rect.area < main.rect.area for tile in tiles[1:])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), even_sides, even_sides)
def test_property_grid_of_up_to_eight(count: int, width: int, height: int) -> None:
    canvas = Size(width, height)
    tiles = grid_tiles(count, canvas)
    assert len(tiles) == count
    check_common_invariants(tiles, canvas)


sources = st.builds(Size, st.integers(1, 10_000), st.integers(1, 10_000))
tiles_rects = st.builds(
    lambda x, y, w, h: Rect(2 * x, 2 * y, 2 * w, 2 * h),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(1, 1000),
    st.integers(1, 1000),
)


@settings(max_examples=500, deadline=None)
@given(sources, tiles_rects, st.sampled_from(list(Fit)))
def test_property_place_video(source: Size, tile: Rect, fit: Fit) -> None:
    placement = place_video(source, tile, fit)
    scaled, crop, dest = placement.scaled, placement.crop, placement.dest
    assert tile.contains(dest)
    assert Rect(0, 0, scaled.width, scaled.height).contains(crop)
    assert (crop.width, crop.height) == (dest.width, dest.height)
    for rect in (crop, dest):
        assert is_even(rect) and rect.width >= 2 and rect.height >= 2
    assert scaled.width % 2 == 0 and scaled.height % 2 == 0
    # The rule, restated: FILL only when orientations agree and covering keeps at least half.
    ratio = source.aspect / (tile.width / tile.height)
    fills = (
        fit is Fit.FILL
        and source.orientation is Size(tile.width, tile.height).orientation
        and min(ratio, 1 / ratio) >= MIN_FILL_VISIBLE_FRACTION
    )
    if fills:
        assert dest == tile
        assert scaled.width >= tile.width and scaled.height >= tile.height
        # The crop is centred (to within the even rounding).
        assert crop.x <= scaled.width - crop.right <= crop.x + 2
        assert crop.y <= scaled.height - crop.bottom <= crop.y + 2
        factor = max(tile.width / source.width, tile.height / source.height)
    else:
        assert crop == Rect(0, 0, scaled.width, scaled.height)  # FIT: the whole frame, centred
        assert dest.x - tile.x <= tile.right - dest.right <= dest.x - tile.x + 2
        assert dest.y - tile.y <= tile.bottom - dest.bottom <= dest.y - tile.y + 2
        factor = min(tile.width / source.width, tile.height / source.height)
        # FIT touches the tile on at least one side (up to rounding).
        assert tile.width - scaled.width <= 2 or tile.height - scaled.height <= 2
    # Aspect kept within rounding to even pixels (and the 2-pixel minimum).
    assert abs(scaled.width - source.width * factor) <= 2
    assert abs(scaled.height - source.height * factor) <= 2
