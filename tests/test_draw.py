"""What is drawn that is not video: themes, text safety, sprites, and the scene plan."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layouts import draw, scene, text
from layouts.geometry import arrange
from layouts.model import (
    Fit,
    LayoutSpec,
    LayoutType,
    ParticipantView,
    Rect,
    Size,
    Theme,
    Tile,
    TileRole,
)
from layouts.selection import select
from layouts.themes import (
    MIN_GRAPHIC_CONTRAST,
    MIN_TEXT_CONTRAST,
    contrast_ratio,
    label_background_over,
    theme_colors,
)

BLACK, WHITE = (0, 0, 0), (255, 255, 255)


# --- themes ----------------------------------------------------------------------------------


def test_contrast_ratio_matches_wcag_reference_values() -> None:
    assert contrast_ratio(BLACK, WHITE) == pytest.approx(21.0)
    assert contrast_ratio(WHITE, WHITE) == pytest.approx(1.0)
    # WCAG's own example: #777 on white is just under 4.5 (4.48).
    assert contrast_ratio((119, 119, 119), WHITE) == pytest.approx(4.48, abs=0.01)


@pytest.mark.parametrize("theme", list(Theme))
def test_every_theme_text_is_readable(theme: Theme) -> None:
    colors = theme_colors(theme)
    # The label is translucent: check it over the darkest and the brightest video.
    for video in (BLACK, WHITE):
        backdrop = label_background_over(colors, video)
        assert contrast_ratio(colors.label_text, backdrop) >= MIN_TEXT_CONTRAST, video
    for color in colors.avatar_palette:
        assert contrast_ratio(colors.avatar_text, color) >= MIN_TEXT_CONTRAST, color
    assert contrast_ratio(colors.card_text, colors.card_background) >= MIN_TEXT_CONTRAST
    assert contrast_ratio(colors.mute_glyph, colors.mute_background) >= MIN_GRAPHIC_CONTRAST


def test_themes_differ() -> None:
    backgrounds = {theme_colors(theme).canvas_background for theme in Theme}
    assert len(backgrounds) == len(Theme)


# --- text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Alice", "Alice"),
        ("  Alice \t\n  Martin  ", "Alice Martin"),
        ("\u202eecilA", "ecilA"),  # right-to-left override removed, letters kept in order
        ("Al\u2066ice\u2069", "Alice"),  # isolates
        ("A\u200bl\u200di\u200ece", "Alice"),  # zero-width space, joiner, LRM
        ("Bob\x00\x07\x1b[31m", "Bob[31m"),  # control characters (the escape's text stays)
        ("Line\u2028Break", "Line Break"),
        ("e\u0301", "\u00e9"),  # NFC
        ("Z" + "\u0336" * 40, "Z\u0336\u0336"),  # "Zalgo": at most two combining marks
        ("\U000f0000priv", "priv"),  # private use
        ("", ""),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert text.clean_text(raw) == clean


def test_clean_text_caps_the_length() -> None:
    assert len(text.clean_text("x" * 100_000)) == text.MAX_TEXT_CHARS


def test_display_name_falls_back_when_nothing_drawable_is_left() -> None:
    assert text.display_name("\u202e\u200b\x00") == text.FALLBACK_NAME


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_clean_text_never_leaves_a_control_or_format_character(raw: str) -> None:
    import unicodedata

    cleaned = text.clean_text(raw)
    assert len(cleaned) <= text.MAX_TEXT_CHARS * 3
    assert not any(unicodedata.category(c) in {"Cc", "Cf", "Cs", "Co", "Cn"} for c in cleaned)
    assert cleaned == cleaned.strip()
    assert "  " not in cleaned


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alice martin", "AM"),
        ("Cher", "C"),
        ("Jean-Luc de la Tour", "JT"),
        ("  ", "?"),
        ("ßoris x", "SX"),
        ("\u202eBob Okafor", "BO"),
        ("#1 fan", "1F"),
        ("李 小龍", "李小"),
    ],
)
def test_initials(name: str, expected: str) -> None:
    assert text.initials(name) == expected


def test_ellipsize_fits_and_marks_the_cut() -> None:
    size = 20
    name = "Carolina Montgomery-Featherstonehaugh"
    full = text.text_width(name, size)
    assert text.ellipsize(name, size, full) == name
    for width in (40.0, 100.0, full - 1):
        short = text.ellipsize(name, size, width)
        assert short.endswith(text.ELLIPSIS)
        assert name.startswith(short[:-1])
        assert text.text_width(short, size) <= width
        # It is the longest such prefix: one more character would not fit.
        longer = name[: len(short)].rstrip() + text.ELLIPSIS
        assert len(short) == len(name) or text.text_width(longer, size) > width
    assert text.ellipsize(name, size, 1.0) == ""


# --- sprites ---------------------------------------------------------------------------------


def _check_sprite(sprite: draw.Sprite) -> None:
    assert sprite.rgba.dtype == np.uint8
    assert sprite.rgba.ndim == 3 and sprite.rgba.shape[2] == 4
    assert sprite.width % 2 == 0 and sprite.height % 2 == 0
    assert not sprite.rgba.flags.writeable


@pytest.mark.parametrize("theme", list(Theme))
def test_label_is_a_translucent_pill_with_the_name_in_straight_alpha(theme: Theme) -> None:
    colors = theme_colors(theme)
    label = draw.name_label(
        "Alice Martin", screen_share=False, height_px=32, max_width_px=400, theme=theme
    )
    assert label is not None
    _check_sprite(label)
    assert label.height == 32
    rgba = label.rgba.astype(int)
    alpha = rgba[..., 3]
    # The pill: most pixels are the label background at its alpha, text pixels fully opaque.
    background = np.all(rgba[..., :3] == colors.label_background, axis=2)
    assert np.mean(background & (alpha == colors.label_background_alpha)) > 0.5
    text_pixels = np.all(rgba[..., :3] == colors.label_text, axis=2) & (alpha == 255)
    assert text_pixels.sum() > 50
    # Straight alpha: the anti-aliased corners keep the background colour, never go darker.
    corner = (alpha > 0) & (alpha < colors.label_background_alpha - 5)
    assert corner.any()
    deviation = np.abs(rgba[..., :3] - np.array(colors.label_background)).max(axis=2)
    assert deviation[corner].max() <= 1
    assert alpha[0, 0] == 0  # rounded corner


def test_label_is_ellipsised_to_its_width_and_keeps_the_screen_suffix() -> None:
    long_name = "Carolina Montgomery-Featherstonehaugh of Somewhere Far Away"
    label = draw.name_label(
        long_name, screen_share=False, height_px=24, max_width_px=200, theme=Theme.DARK
    )
    assert label is not None and label.width <= 200
    assert str(label.key[1]).endswith(text.ELLIPSIS)
    share = draw.name_label(
        long_name, screen_share=True, height_px=24, max_width_px=260, theme=Theme.DARK
    )
    assert share is not None and share.width <= 260
    drawn = str(share.key[1])
    assert drawn.endswith(draw.SCREEN_SUFFIX) and text.ELLIPSIS in drawn
    short = draw.name_label(
        "Al", screen_share=True, height_px=24, max_width_px=400, theme=Theme.DARK
    )
    assert short is not None and short.key[1] == "Al — screen"


def test_label_is_none_when_the_tile_is_too_narrow() -> None:
    assert (
        draw.name_label(
            "Alice", screen_share=False, height_px=24, max_width_px=10, theme=Theme.DARK
        )
        is None
    )


@given(
    name=st.text(max_size=200),
    height=st.integers(min_value=2, max_value=80),
    width=st.integers(min_value=0, max_value=600),
    share=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_label_never_crashes_and_never_exceeds_its_width(
    name: str, height: int, width: int, share: bool
) -> None:
    label = draw.name_label(
        name, screen_share=share, height_px=height, max_width_px=width, theme=Theme.DEFAULT
    )
    if label is not None:
        _check_sprite(label)
        assert label.width <= max(2, width)


def test_sprites_are_cached() -> None:
    first = draw.name_label(
        "Bob", screen_share=False, height_px=20, max_width_px=300, theme=Theme.LIGHT
    )
    again = draw.name_label(
        "Bob", screen_share=False, height_px=20, max_width_px=300, theme=Theme.LIGHT
    )
    assert first is again
    assert draw.mute_mark(20, Theme.LIGHT) is draw.mute_mark(20, Theme.LIGHT)
    assert draw.avatar("p1", "Alice", 100, Theme.DARK) is draw.avatar(
        "p1", "Alice", 100, Theme.DARK
    )


def test_mute_mark_is_a_red_disc_with_a_white_glyph() -> None:
    colors = theme_colors(Theme.DEFAULT)
    mark = draw.mute_mark(64, Theme.DEFAULT)
    _check_sprite(mark)
    rgba = mark.rgba.astype(int)
    assert rgba[0, 0, 3] == 0 and rgba[-1, -1, 3] == 0  # outside the disc
    opaque = rgba[..., 3] == 255
    disc = np.all(rgba[..., :3] == colors.mute_background, axis=2) & opaque
    glyph = np.all(rgba[..., :3] == colors.mute_glyph, axis=2) & opaque
    assert disc.sum() > glyph.sum() > 0.08 * 64 * 64
    # The slash runs from top-left to bottom-right: glyph pixels on that diagonal, both halves.
    assert glyph[18:24, 18:24].any() and glyph[44:50, 44:50].any()


def test_speaking_ring_covers_exactly_the_tile_border() -> None:
    tile = Size(200, 120)
    strips = draw.speaking_ring(tile, 6, Theme.DARK)
    covered = np.zeros((tile.height, tile.width), dtype=int)
    for placed in strips:
        _check_sprite(placed.sprite)
        assert np.all(placed.sprite.rgba[..., 3] == 255)
        assert np.all(placed.sprite.rgba[..., :3] == theme_colors(Theme.DARK).accent)
        h, w = placed.sprite.height, placed.sprite.width
        covered[placed.y : placed.y + h, placed.x : placed.x + w] += 1
    expected = np.ones_like(covered)
    expected[6:-6, 6:-6] = 0
    assert np.array_equal(covered, expected)  # every border pixel once, nothing inside
    assert draw.speaking_ring(Size(10, 10), 6, Theme.DARK) == ()


def test_avatar_colour_is_a_stable_hash_of_the_id() -> None:
    palette = theme_colors(Theme.DEFAULT).avatar_palette
    # CRC-32 of the id, fixed forever: the same person has the same colour in every recording.
    assert draw.avatar_color("p1", Theme.DEFAULT) == palette[zlib.crc32(b"p1") % len(palette)]
    # Pinned values, so a change of hash (or of palette order) cannot slip in unnoticed.
    assert draw.avatar_color("p1", Theme.DEFAULT) == (46, 125, 50)
    assert draw.avatar_color("p2", Theme.DEFAULT) == palette[zlib.crc32(b"p2") % 10]
    used = {draw.avatar_color(f"user-{i}", Theme.DEFAULT) for i in range(200)}
    assert len(used) == len(palette)
    draw.avatar_color("\udcff lone surrogate", Theme.DEFAULT)  # does not raise


def test_avatar_is_a_disc_in_the_participant_colour() -> None:
    sprite = draw.avatar("p7", "Gustavo Lima", 120, Theme.DARK)
    _check_sprite(sprite)
    color = draw.avatar_color("p7", Theme.DARK)
    rgba = sprite.rgba.astype(int)
    assert rgba[0, 0, 3] == 0
    assert tuple(rgba[10, 60, :3]) == color and rgba[10, 60, 3] == 255
    text_color = theme_colors(Theme.DARK).avatar_text
    assert np.all(rgba[45:75, 20:100, :3] == text_color, axis=2).sum() > 100  # the initials


def test_badge_and_card() -> None:
    badge = draw.hidden_badge(12, 24, Theme.LIGHT)
    _check_sprite(badge)
    assert badge.key[1] == "+12" and badge.height == 24
    for canvas in (Size(854, 480), Size(480, 854), Size(64, 64), Size(1920, 1080)):
        card = draw.empty_room_card(canvas, Theme.DARK)
        _check_sprite(card)
        assert card.width <= canvas.width and card.height <= canvas.height


# --- scene -----------------------------------------------------------------------------------

CANVAS = Size(1280, 720)


def _feeds(count: int, **flags: set[int]) -> list[ParticipantView]:
    return [
        ParticipantView(
            id=f"p{i}",
            name=f"Person {i}",
            video_on=i not in flags.get("off", set()),
            muted=i in flags.get("muted", set()),
            speaking=i in flags.get("speaking", set()),
            joined_at=float(i),
        )
        for i in range(1, count + 1)
    ]


def _inside(rect: Rect, placed: draw.PlacedSprite) -> bool:
    sprite = Rect(placed.x, placed.y, placed.sprite.width, placed.sprite.height)
    return rect.contains(sprite)


def test_scene_places_everything_inside_its_tile_at_even_positions() -> None:
    feeds = _feeds(4, muted={2}, speaking={3}, off={4})
    spec = LayoutSpec(type=LayoutType.GRID, theme=Theme.DARK)
    selection, plan = scene.plan_frame(None, feeds, spec, CANVAS, now=0.0)
    assert [p.tile.feed_id for p in plan.tiles] == list(selection.visible)
    for tile_plan in plan.tiles:
        rect = tile_plan.tile.rect
        assert _inside(rect, tile_plan.avatar)
        for placed in (tile_plan.avatar, *tile_plan.overlays):
            assert placed.x % 2 == 0 and placed.y % 2 == 0
            assert _inside(rect, placed)
    by_id = {p.tile.feed_id: p for p in plan.tiles}
    kinds = {fid: [o.sprite.key[0] for o in p.overlays] for fid, p in by_id.items()}
    assert kinds["p1"] == ["label"]
    assert kinds["p2"] == ["mute", "label"]
    assert kinds["p3"] == ["solid"] * 4 + ["label"]
    assert not by_id["p4"].show_video and by_id["p1"].show_video
    # The mute mark is left of the label, on the same line, without overlapping it.
    mark, label = by_id["p2"].overlays
    assert mark.y == label.y and mark.x + mark.sprite.width < label.x
    assert plan.overlays == ()  # nobody hidden


def test_scene_background_is_canvas_colour_with_tile_colour_under_tiles_and_cached() -> None:
    feeds = _feeds(2)
    spec = LayoutSpec(type=LayoutType.GRID, theme=Theme.LIGHT)
    _, plan = scene.plan_frame(None, feeds, spec, CANVAS, now=0.0)
    colors = theme_colors(Theme.LIGHT)
    rgb = plan.background.rgb()
    assert rgb.shape == (CANVAS.height, CANVAS.width, 3) and not rgb.flags.writeable
    assert tuple(rgb[0, 0]) == colors.canvas_background
    for tile_plan in plan.tiles:
        r = tile_plan.tile.rect
        assert tuple(rgb[r.y + r.height // 2, r.x + r.width // 2]) == colors.tile_background
        assert tuple(rgb[r.y, r.x]) == colors.tile_background
        assert tuple(rgb[r.y - 1, r.x]) == colors.canvas_background
    _, again = scene.plan_frame(None, feeds, spec, CANVAS, now=1.0)
    assert again.background == plan.background and again.background.rgb() is rgb


def test_empty_room_shows_the_centred_card() -> None:
    _, plan = scene.plan_frame(None, [], LayoutSpec(theme=Theme.DEFAULT), CANVAS, now=0.0)
    assert plan.tiles == ()
    (card,) = plan.overlays
    assert card.sprite.key[0] == "card"
    assert abs((card.x + card.sprite.width / 2) - CANVAS.width / 2) <= 2
    assert abs((card.y + card.sprite.height / 2) - CANVAS.height / 2) <= 2


def test_hidden_count_badge_sits_in_the_last_tile() -> None:
    feeds = _feeds(6)
    spec = LayoutSpec(type=LayoutType.GRID, grid_size=4)
    selection, plan = scene.plan_frame(None, feeds, spec, CANVAS, now=0.0)
    assert selection.hidden == 2
    (badge,) = plan.overlays
    assert badge.sprite.key[1] == "+2"
    last = plan.tiles[-1].tile.rect
    assert _inside(last, badge)
    assert last.right - (badge.x + badge.sprite.width) < 20 and badge.y - last.y < 20


def test_pip_gets_a_backdrop_and_no_label_and_the_share_is_labelled() -> None:
    feeds = [
        *_feeds(2, muted={1}),
        ParticipantView(id="p1-screen", name="ignored", joined_at=5.0, screen_of="p1"),
    ]
    spec = LayoutSpec(type=LayoutType.SPOTLIGHT)
    _, plan = scene.plan_frame(None, feeds, spec, CANVAS, now=0.0)
    main, pip = plan.tiles
    assert main.tile.feed_id == "p1-screen" and pip.tile.role is TileRole.PIP
    assert pip.backdrop and not main.backdrop
    assert pip.tile.rect not in plan.background.tiles
    assert [o.sprite.key[0] for o in pip.overlays] == ["mute"]
    (label,) = main.overlays
    assert label.sprite.key[1] == "Person 1 — screen"  # the presenter's name, not the share's


def test_sizes_follow_the_tile() -> None:
    small, large = Rect(0, 0, 320, 180), Rect(0, 0, 1280, 720)
    assert scene.label_height(small) < scene.label_height(large) <= scene.MAX_LABEL_HEIGHT_PX
    assert scene.label_height(Rect(0, 0, 40, 20)) == scene.MIN_LABEL_HEIGHT_PX
    assert scene.avatar_diameter(small) < scene.avatar_diameter(large)
    assert scene.avatar_diameter(Rect(0, 0, 20, 20)) <= 20
    for value in (
        scene.label_height(small),
        scene.avatar_diameter(small),
        scene.ring_thickness(small),
    ):
        assert value % 2 == 0


def test_build_scene_uses_the_given_tiles() -> None:
    feeds = _feeds(3)
    tile = Tile("p2", Rect(100, 50, 400, 226), TileRole.GRID, Fit.FILL)
    plan = scene.build_scene([tile], feeds, hidden=2, theme=Theme.DARK, canvas=CANVAS)
    assert plan.background.tiles == (tile.rect,)
    assert [p.tile for p in plan.tiles] == [tile]
    assert plan.overlays[0].sprite.key[1] == "+2"
    # plan_frame is select + arrange + build_scene.
    spec = LayoutSpec(type=LayoutType.SIDEBAR)
    selection = select(None, feeds, spec, 0.0)
    tiles = arrange(selection, feeds, spec.type, CANVAS)
    _, planned = scene.plan_frame(None, feeds, spec, CANVAS, 0.0)
    assert planned == scene.build_scene(tiles, feeds, selection.hidden, spec.theme, CANVAS)


# --- the scene cache -------------------------------------------------------------------------


def test_every_participant_field_is_either_drawn_or_declared_undrawn() -> None:
    """The scene cache keys on the drawn fields: a new field must be placed in one list."""
    fields = {field.name for field in dataclasses.fields(ParticipantView)}
    assert set(scene.DRAWN_FIELDS) | set(scene.UNDRAWN_FIELDS) == fields
    assert not set(scene.DRAWN_FIELDS) & set(scene.UNDRAWN_FIELDS)


@st.composite
def _rooms(draw_: st.DrawFn) -> list[ParticipantView]:
    """Cameras, and screen shares whose presenter may be present or gone; names may repeat."""
    count = draw_(st.integers(1, 7))
    feeds = []
    for i in range(count):
        presenter = draw_(st.sampled_from([None, None, "p0", "p1", "gone"]))
        feeds.append(
            ParticipantView(
                id=f"p{i}" if presenter is None else f"s{i}",
                name=draw_(st.sampled_from(["Ann", "Bo", "Ann Lee", "Zoë"])),
                video_on=draw_(st.booleans()),
                muted=draw_(st.booleans()),
                speaking=draw_(st.booleans()),
                last_spoke=draw_(st.sampled_from([None, 0.5, 1.0])),
                pinned_at=draw_(st.sampled_from([None, 0.2, 0.7])),
                joined_at=float(i),
                screen_of=presenter,
            )
        )
    return feeds


def _undrawn_changed(feed: ParticipantView, value: float) -> ParticipantView:
    return dataclasses.replace(feed, last_spoke=value, pinned_at=value, joined_at=value)


def _changed(feed: ParticipantView, draw_: st.DrawFn) -> ParticipantView:
    """`feed` with any of its fields changed, drawn or not (the id stays)."""
    changes = draw_(
        st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["Ann", "Bo", "Ann Lee"]),
                "video_on": st.booleans(),
                "muted": st.booleans(),
                "speaking": st.booleans(),
                "last_spoke": st.sampled_from([None, 0.9, 3.0]),
                "pinned_at": st.sampled_from([None, 0.1, 0.9]),
                "joined_at": st.floats(0.0, 9.0),
            },
        )
    )
    return dataclasses.replace(feed, **changes)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    feeds=_rooms(),
    layout=st.sampled_from(list(LayoutType)),
    theme=st.sampled_from(list(Theme)),
)
def test_the_scene_cache_never_serves_a_scene_that_build_scene_would_not_draw(
    data: st.DataObject, feeds: list[ParticipantView], layout: LayoutType, theme: Theme
) -> None:
    """Tick after tick any field may change (or a feed leave); whatever the cache hands back
    is what `build_scene` draws for that tick."""
    spec = LayoutSpec(type=layout, theme=theme, grid_size=4)
    cache = scene.SceneCache()
    selection = None
    for now in (0.0, 0.5, 1.0, 4.0):
        selection, planned = scene.plan_frame(selection, feeds, spec, CANVAS, now, cache=cache)
        tiles = arrange(selection, feeds, spec.type, CANVAS)
        assert planned == scene.build_scene(tiles, feeds, selection.hidden, theme, CANVAS)
        feeds = [_changed(feed, data.draw) for feed in feeds if data.draw(st.integers(0, 5))]
    assert cache.hits + cache.misses == 4


@settings(max_examples=100, deadline=None)
@given(feeds=_rooms(), layout=st.sampled_from(list(LayoutType)), other=st.floats(0.0, 100.0))
def test_the_undrawn_fields_are_not_drawn(
    feeds: list[ParticipantView], layout: LayoutType, other: float
) -> None:
    """What the cache ignores must not change the scene: same tiles, same scene."""
    spec = LayoutSpec(type=layout, grid_size=4)
    selection = select(None, feeds, spec, 0.0)
    tiles = arrange(selection, feeds, spec.type, CANVAS)
    planned = scene.build_scene(tiles, feeds, selection.hidden, spec.theme, CANVAS)
    changed = [
        dataclasses.replace(f, last_spoke=other, pinned_at=other, joined_at=other) for f in feeds
    ]
    assert scene.build_scene(tiles, changed, selection.hidden, spec.theme, CANVAS) == planned


def test_plan_frame_reuses_the_scene_while_what_is_drawn_is_unchanged() -> None:
    spec = LayoutSpec(type=LayoutType.GRID, theme=Theme.DARK)
    cache = scene.SceneCache()
    feeds = _feeds(3, speaking={1})
    selection, first = scene.plan_frame(None, feeds, spec, CANVAS, 0.0, cache=cache)
    # Speech goes on (last_spoke moves every tick), nothing drawn changes: the same object.
    talking = [dataclasses.replace(f, last_spoke=0.1) if f.id == "p1" else f for f in feeds]
    selection, second = scene.plan_frame(selection, talking, spec, CANVAS, 0.1, cache=cache)
    assert second is first
    # A change that is drawn (p2 mutes) gives a new scene, the one build_scene makes.
    muted = [dataclasses.replace(f, muted=True) if f.id == "p2" else f for f in talking]
    selection, third = scene.plan_frame(selection, muted, spec, CANVAS, 0.2, cache=cache)
    tiles = arrange(selection, muted, spec.type, CANVAS)
    assert third == scene.build_scene(tiles, muted, selection.hidden, spec.theme, CANVAS)
    assert third != first
    assert (cache.hits, cache.misses) == (1, 2)


def test_renaming_a_hidden_presenter_relabels_their_share() -> None:
    """A share's label is its presenter's name, read from the presenter's feed even when that
    feed has no tile: the cache must see the rename."""
    spec = LayoutSpec(type=LayoutType.GRID, grid_size=2)
    cache = scene.SceneCache()
    feeds = [
        ParticipantView(id="p1", name="Ann", joined_at=0.0),
        ParticipantView(id="p2", name="Bo", joined_at=1.0, speaking=True, last_spoke=0.0),
        ParticipantView(id="p1-screen", name="x", screen_of="p1", joined_at=2.0),
    ]
    selection, _ = scene.plan_frame(None, feeds, spec, CANVAS, 0.0, cache=cache)
    assert "p1" not in selection.visible and "p1-screen" in selection.visible
    renamed = [dataclasses.replace(f, name="Cy") if f.id == "p1" else f for f in feeds]
    selection, second = scene.plan_frame(selection, renamed, spec, CANVAS, 0.1, cache=cache)
    assert "p1" not in selection.visible
    labels = {
        o.sprite.key[1]
        for plan in second.tiles
        for o in plan.overlays
        if o.sprite.key[0] == "label"
    }
    assert labels == {"Bo", "Cy — screen"}
    assert (cache.hits, cache.misses) == (0, 2)
