"""The compositor: content checks on real frames made by the synthetic sources."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layouts import draw
from layouts.draw import PlacedSprite, Sprite
from layouts.model import LayoutSpec, LayoutType, ParticipantView, Rect, Size, Theme
from layouts.scene import Scene, plan_frame
from layouts.themes import theme_colors
from recorder.media import compositor as compositor_module
from recorder.media.compositor import Compositor, frame_to_rgb, plane_views, rgb_to_yuv
from recorder.testing.video import (
    MAX_MARKED_FRACTION,
    PALETTE,
    PALETTE_MIN_DISTANCE,
    SyntheticScreen,
    SyntheticVideo,
    nearest_participant,
)

CANVAS = Size(854, 480)
# A flat colour through yuv420p and back moves by a few levels (rounding of both matrices).
ROUND_TRIP_TOLERANCE = 3


def _feeds(count: int, **flags: set[int]) -> list[ParticipantView]:
    return [
        ParticipantView(
            id=f"p{i}",
            name=f"Person {i}",
            video_on=i not in flags.get("off", set()),
            muted=i in flags.get("muted", set()),
            joined_at=float(i),
        )
        for i in range(count)
    ]


def _plan(feeds: list[ParticipantView], layout: LayoutType = LayoutType.GRID) -> Scene:
    _, scene = plan_frame(None, feeds, LayoutSpec(type=layout, theme=Theme.DARK), CANVAS, 0.0)
    return scene


def _median(rgb: np.ndarray, rect: Rect) -> tuple[float, float, float]:
    region = rgb[rect.y : rect.bottom, rect.x : rect.right].reshape(-1, 3)
    r, g, b = np.median(region, axis=0)
    return float(r), float(g), float(b)


def test_palette_is_far_apart() -> None:
    distances = [
        np.linalg.norm(np.subtract(a, b)) for i, a in enumerate(PALETTE) for b in PALETTE[i + 1 :]
    ]
    assert min(distances) >= PALETTE_MIN_DISTANCE


@pytest.mark.parametrize("size", [Size(1280, 720), Size(640, 360), Size(720, 1280)])
def test_synthetic_camera_is_mostly_its_palette_colour(size: Size) -> None:
    for index in range(len(PALETTE)):
        camera = SyntheticVideo(index, "Carolina Montgomery", size, "rgb24")
        rgb = camera.frame_at(12.345).to_ndarray()
        marked = np.any(rgb != np.array(camera.color, dtype=np.uint8), axis=2)
        assert 0.01 < marked.mean() < MAX_MARKED_FRACTION
        assert nearest_participant(_median(rgb, Rect(0, 0, size.width, size.height))) == index


def test_synthetic_video_is_a_pure_function_of_time() -> None:
    camera = SyntheticVideo(2, "Carol")
    first, again, later = camera.frame_at(1.5), camera.frame_at(1.5), camera.frame_at(1.6)
    assert first.pts == again.pts == 135_000 and first.time_base == Fraction(1, 90_000)
    assert np.array_equal(first.to_ndarray(), again.to_ndarray())
    assert not np.array_equal(first.to_ndarray(), later.to_ndarray())  # the clock and square move


def test_rgb_round_trip_keeps_colours() -> None:
    stripe = 8  # wide enough that chroma interpolation at the stripe edges leaves the middle
    rgb = np.zeros((4, stripe * len(PALETTE), 3), dtype=np.uint8)
    for i, color in enumerate(PALETTE):
        rgb[:, stripe * i : stripe * (i + 1)] = color
    y, u, v = rgb_to_yuv(rgb)
    assert y.shape == (4, 64) and u.shape == (2, 32)
    assert y.min() >= 16 and y.max() <= 235  # limited range
    frame = av.VideoFrame(64, 4, "yuv420p")
    for plane, values in zip(plane_views(frame), (y, u, v), strict=True):
        plane[...] = values
    back = frame_to_rgb(frame).astype(int)
    middles = [stripe * i + stripe // 2 for i in range(len(PALETTE))]
    assert np.abs(back[:, middles] - rgb[:, middles]).max() <= ROUND_TRIP_TOLERANCE


@pytest.mark.parametrize(
    ("size", "pixel_format"),
    [
        (Size(1280, 720), "yuv420p"),
        (Size(640, 360), "rgb24"),
        (Size(1920, 1080), "nv12"),
        (Size(853, 479), "yuv420p"),  # odd sides
        (Size(720, 1280), "yuv420p"),  # portrait phone
    ],
)
def test_each_tile_shows_its_participant(size: Size, pixel_format: str) -> None:
    feeds = _feeds(4)
    scene = _plan(feeds)
    frames = {
        feed.id: SyntheticVideo(i, feed.name, size, pixel_format).frame_at(0.5)
        for i, feed in enumerate(feeds)
    }
    out = Compositor(CANVAS).compose(scene, frames)
    assert (out.width, out.height, out.format.name) == (854, 480, "yuv420p")
    rgb = frame_to_rgb(out)
    for plan in scene.tiles:
        index = int(plan.tile.feed_id[1:])
        rect = plan.tile.rect
        # A central band of the tile: covered by the video even when it is letterboxed.
        band = Rect(rect.x + rect.width * 3 // 8, rect.y, rect.width // 4, rect.height)
        assert nearest_participant(_median(rgb, band)) == index, plan.tile
    # Between tiles: the theme's canvas colour.
    canvas_color = theme_colors(Theme.DARK).canvas_background
    assert np.abs(rgb[1, 1].astype(int) - canvas_color).max() <= ROUND_TRIP_TOLERANCE


def test_video_off_and_missing_frames_show_the_avatar() -> None:
    feeds = _feeds(3, off={1})
    scene = _plan(feeds)
    frames: dict[str, av.VideoFrame | None] = {
        "p0": SyntheticVideo(0, "a").frame_at(0.0),
        "p1": SyntheticVideo(1, "b").frame_at(0.0),  # ignored: video is off
        "p2": None,  # video on, nothing arrived yet
    }
    rgb = frame_to_rgb(Compositor(CANVAS).compose(scene, frames)).astype(int)
    by_id = {plan.tile.feed_id: plan for plan in scene.tiles}
    assert nearest_participant(_median(rgb, by_id["p0"].tile.rect)) == 0
    tile_color = theme_colors(Theme.DARK).tile_background
    for feed_id in ("p1", "p2"):
        plan = by_id[feed_id]
        avatar = plan.avatar
        centre_y = avatar.y + avatar.sprite.height // 2
        color = draw.avatar_color(feed_id, Theme.DARK)
        # Just inside the disc's top edge: avatar colour, clear of the initials.
        top = rgb[avatar.y + 6, avatar.x + avatar.sprite.width // 2]
        assert np.abs(top - color).max() <= ROUND_TRIP_TOLERANCE + 2, feed_id
        # Beside the disc, still in the tile: the tile colour.
        beside = rgb[centre_y, plan.tile.rect.x + 4]
        assert np.abs(beside - tile_color).max() <= ROUND_TRIP_TOLERANCE, feed_id


def test_letterboxed_share_leaves_tile_colour_around_it() -> None:
    feeds = [ParticipantView(id="s", name="Alice", screen_of="gone")]
    scene = _plan(feeds, LayoutType.SPOTLIGHT)
    (plan,) = scene.tiles
    screen = SyntheticScreen(0, "Slides", Size(1000, 1000))  # square: bars left and right
    rgb = frame_to_rgb(Compositor(CANVAS).compose(scene, {"s": screen.frame_at(0.0)})).astype(int)
    rect = plan.tile.rect
    tile_color = theme_colors(Theme.DARK).tile_background
    middle = rect.y + rect.height // 2
    assert np.abs(rgb[middle, rect.x + 4] - tile_color).max() <= ROUND_TRIP_TOLERANCE
    assert np.abs(rgb[middle, rect.right - 4] - tile_color).max() <= ROUND_TRIP_TOLERANCE
    centre = rgb[middle, rect.x + rect.width // 2 + 60]
    assert np.abs(centre - (250, 250, 250)).max() <= ROUND_TRIP_TOLERANCE  # the slide


def _translucent(color: tuple[int, int, int], alpha: int, size: int = 8) -> Sprite:
    rgba = np.empty((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = color
    rgba[..., 3] = alpha
    rgba.setflags(write=False)
    return Sprite(rgba, ("test", color, alpha, size))


def _bare_scene(overlays: tuple[PlacedSprite, ...], theme: Theme = Theme.LIGHT) -> Scene:
    _, empty = plan_frame(None, [], LayoutSpec(theme=theme), CANVAS, 0.0)
    return Scene(
        canvas=CANVAS,
        theme=theme,
        background=empty.background,
        tile_background=empty.tile_background,
        tiles=(),
        overlays=overlays,
    )


def test_blend_is_exact_rounding_of_the_alpha_mix() -> None:
    # Every (target, alpha) pair against one colour value, in one call.
    target = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 256, axis=1)
    alpha = np.repeat(np.arange(256, dtype=np.uint16)[None, :], 256, axis=0)
    color = 200
    expected = np.floor((color * alpha + target.astype(np.int64) * (255 - alpha)) / 255 + 0.5)
    compositor_module._blend(target, (color * alpha + 128).astype(np.uint16), 255 - alpha)
    assert np.array_equal(target, expected.astype(np.uint8))


def test_translucent_sprite_mixes_with_what_is_under_it() -> None:
    red = (220, 20, 20)
    background = theme_colors(Theme.LIGHT).canvas_background
    scene = _bare_scene((PlacedSprite(_translucent(red, 128, 16), 100, 100),))
    rgb = frame_to_rgb(Compositor(CANVAS).compose(scene, {})).astype(int)
    expected = (np.array(red) * 128 + np.array(background) * 127) / 255
    assert np.abs(rgb[108, 108] - expected).max() <= ROUND_TRIP_TOLERANCE + 1
    assert np.abs(rgb[90, 90] - background).max() <= ROUND_TRIP_TOLERANCE  # untouched around it


def test_opaque_sprite_is_copied_and_transparent_sprite_changes_nothing() -> None:
    opaque = PlacedSprite(_translucent((10, 200, 30), 255), 20, 20)
    clear = PlacedSprite(_translucent((10, 200, 30), 0), 40, 40)
    compositor = Compositor(CANVAS)
    base = plane_views(compositor.compose(_bare_scene(()), {}))
    out = plane_views(compositor.compose(_bare_scene((opaque, clear)), {}))
    y, _, _ = rgb_to_yuv(np.full((8, 8, 3), (10, 200, 30), dtype=np.uint8))
    assert np.array_equal(out[0][20:28, 20:28], y)
    for plane_out, plane_base in zip(out, base, strict=True):
        assert np.array_equal(plane_out[20:, 40:], plane_base[20:, 40:])  # the clear one


def test_sprites_are_clipped_at_the_canvas_edge_and_must_sit_at_even_positions() -> None:
    sprite = _translucent((0, 0, 255), 255, 20)
    compositor = Compositor(CANVAS)
    scene = _bare_scene(
        (
            PlacedSprite(sprite, -10, -10),
            PlacedSprite(sprite, CANVAS.width - 10, CANVAS.height - 10),
            PlacedSprite(sprite, 5000, 0),
        )
    )
    rgb = frame_to_rgb(compositor.compose(scene, {})).astype(int)
    assert np.abs(rgb[5, 5] - (0, 0, 255)).max() <= 4
    assert np.abs(rgb[-5, -5] - (0, 0, 255)).max() <= 4
    with pytest.raises(ValueError, match="odd"):
        compositor.compose(_bare_scene((PlacedSprite(sprite, 3, 4),)), {})


def test_output_frames_are_never_reused() -> None:
    feeds = _feeds(2)
    scene = _plan(feeds)
    compositor = Compositor(CANVAS)
    first = compositor.compose(scene, {"p0": SyntheticVideo(0, "a").frame_at(0.0)})
    kept = [plane.copy() for plane in plane_views(first)]
    second = compositor.compose(scene, {"p0": SyntheticVideo(2, "c").frame_at(1.0)})
    assert second is not first
    for plane, copy in zip(plane_views(first), kept, strict=True):
        assert np.array_equal(plane, copy)  # composing again did not write into the first frame
    assert not np.array_equal(plane_views(second)[0], kept[0])


def test_unchanged_sources_are_not_scaled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    placements: list[object] = []
    real = compositor_module.place_video

    def counting(*args: object) -> object:
        placements.append(args)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(compositor_module, "place_video", counting)
    feeds = _feeds(3)
    scene = _plan(feeds)
    frames = {f.id: SyntheticVideo(i, f.name).frame_at(0.0) for i, f in enumerate(feeds)}
    compositor = Compositor(CANVAS)
    first = plane_views(compositor.compose(scene, frames))[0].copy()
    assert len(placements) == 3
    again = plane_views(compositor.compose(scene, frames))[0]
    assert len(placements) == 3  # same frame objects: nothing scaled
    assert np.array_equal(first, again)
    frames["p1"] = SyntheticVideo(1, "x").frame_at(0.5)  # a new frame for one tile
    compositor.compose(scene, frames)
    assert len(placements) == 4
    # A tile that leaves and comes back is scaled afresh (its cache entry was dropped).
    compositor.compose(_plan(feeds[:1]), frames)
    compositor.compose(scene, frames)
    assert len(placements) == 4 + 1 + 3  # p0 alone (a new rect), then all three afresh


def test_background_and_sprites_are_converted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    real = compositor_module.rgb_to_yuv

    def counting(rgb: np.ndarray, pixel_format: str = "yuv420p") -> object:
        calls.append(rgb.shape)
        return real(rgb, pixel_format)

    monkeypatch.setattr(compositor_module, "rgb_to_yuv", counting)
    feeds = _feeds(2, muted={0})
    scene = _plan(feeds)
    compositor = Compositor(CANVAS)
    compositor.compose(scene, {})
    first = len(calls)
    assert first >= 4  # background, two avatars, two labels, the mute mark (some shared)
    compositor.compose(scene, {})
    assert len(calls) == first


@pytest.mark.parametrize("theme", list(Theme))
@pytest.mark.parametrize("layout", list(LayoutType))
@pytest.mark.parametrize("canvas", [CANVAS, Size(480, 854), Size(1920, 1080)])
def test_the_background_filled_in_yuv_is_the_converted_rgb_background(
    theme: Theme, layout: LayoutType, canvas: Size
) -> None:
    """The compositor fills the background's flat rectangles colour by colour instead of
    converting the whole RGB picture: the planes must be the conversion's, bit for bit."""
    for count in (0, 1, 3, 6):
        feeds = [*_feeds(count)]
        if count == 6:  # a share in SPOTLIGHT: the presenter's PIP is not in the background
            feeds[5] = ParticipantView(id="p5", name="S", screen_of="p0", joined_at=5.0)
        _, scene = plan_frame(None, feeds, LayoutSpec(type=layout, theme=theme), canvas, 0.0)
        filled = Compositor(canvas)._background(scene.background)
        for plane, converted in zip(filled, rgb_to_yuv(scene.background.rgb()), strict=True):
            assert np.array_equal(plane, converted), (count, scene.background.tiles)


def test_pip_backdrop_hides_the_main_tile_under_a_letterboxed_pip() -> None:
    feeds = [
        ParticipantView(id="cam", name="Alice"),
        ParticipantView(id="cam-screen", name="Alice", screen_of="cam", joined_at=1.0),
    ]
    scene = _plan(feeds, LayoutType.SPOTLIGHT)
    _main, pip = scene.tiles
    frames = {
        "cam-screen": SyntheticScreen(0, "Slides", Size(1280, 720)).frame_at(0.0),
        "cam": SyntheticVideo(1, "Alice", Size(720, 1280)).frame_at(0.0),  # portrait: letterboxed
    }
    rgb = frame_to_rgb(Compositor(CANVAS).compose(scene, frames)).astype(int)
    r = pip.tile.rect
    tile_color = theme_colors(Theme.DARK).tile_background
    assert np.abs(rgb[r.y + r.height // 2, r.x + 2] - tile_color).max() <= ROUND_TRIP_TOLERANCE
    assert nearest_participant(_median(rgb, Rect(r.x + r.width // 2 - 4, r.y + 10, 8, 8))) == 1


def test_scene_for_another_canvas_is_refused() -> None:
    _, scene = plan_frame(None, [], LayoutSpec(), Size(1280, 720), 0.0)
    with pytest.raises(ValueError, match="scene is for"):
        Compositor(CANVAS).compose(scene, {})


def test_compose_bench_reports_every_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from recorder.cli import main

    report_path = tmp_path / "bench.json"
    argv = ["bench", "--compose", "--quality", "low", "--frames", "3", "--json", str(report_path)]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["machine"]["note"].startswith("one thread")
    rows = report["compose"]["results"]
    assert [(r["quality"], r["sources"]) for r in rows] == [
        ("low", "changing"),
        ("low", "unchanged"),
    ]
    for row in rows:
        assert row["frames"] == 3 and row["canvas"] == "854x480"
        assert 0 < row["wall_ms_p50"] <= row["wall_ms_p95"]
        assert row["cpu_ms_mean"] > 0 and row["plan_ms"] > 0
    table = capsys.readouterr().out
    assert "854x480" in table and "changing" in table and "unchanged" in table


@given(
    data=st.data(),
    count=st.integers(min_value=0, max_value=7),
    layout=st.sampled_from(list(LayoutType)),
    theme=st.sampled_from(list(Theme)),
    canvas=st.sampled_from([Size(854, 480), Size(480, 854), Size(160, 90), Size(64, 64)]),
)
@settings(max_examples=40, deadline=None)
def test_any_room_composes(
    data: st.DataObject, count: int, layout: LayoutType, theme: Theme, canvas: Size
) -> None:
    feeds = [
        ParticipantView(
            id=f"id-{i}",
            name=data.draw(st.text(max_size=40)),
            video_on=data.draw(st.booleans()),
            muted=data.draw(st.booleans()),
            speaking=data.draw(st.booleans()),
            joined_at=float(i),
            screen_of="id-0" if i == 6 else None,
        )
        for i in range(count)
    ]
    _, scene = plan_frame(None, feeds, LayoutSpec(type=layout, theme=theme), canvas, 0.0)
    frames: dict[str, av.VideoFrame | None] = {}
    for feed in feeds:
        if data.draw(st.booleans()):
            width = data.draw(st.integers(min_value=1, max_value=300))
            height = data.draw(st.integers(min_value=1, max_value=300))
            rgb = np.full((height, width, 3), PALETTE[0], dtype=np.uint8)
            frames[feed.id] = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    out = Compositor(canvas).compose(scene, frames)
    assert (out.width, out.height, out.format.name) == (canvas.width, canvas.height, "yuv420p")


class _PoisonedCanvas:
    """Stands in for `av.VideoFrame` in the compositor: new canvases come full of garbage."""

    from_ndarray = staticmethod(av.VideoFrame.from_ndarray)

    def __new__(cls, width: int, height: int, pixel_format: str) -> av.VideoFrame:  # type: ignore[misc]
        frame = av.VideoFrame(width, height, pixel_format)
        for plane in plane_views(frame):
            plane[...] = 0xA5
        return frame


@pytest.mark.parametrize("layout", list(LayoutType))
def test_every_pixel_is_drawn_whatever_a_new_canvas_holds(
    layout: LayoutType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output frames are allocated fresh and not cleared: every pixel must be written, whatever
    the new memory holds (here: garbage), through roster changes, a camera that is off (avatar),
    a letterboxed portrait camera and a screen share's PIP."""
    feeds = _feeds(4, off={1})
    feeds.append(ParticipantView(id="p0-screen", name="S", screen_of="p0", joined_at=5.0))
    frames = {
        "p0": SyntheticVideo(0, "a").frame_at(0.0),
        "p2": SyntheticVideo(2, "c", Size(360, 640)).frame_at(0.0),  # portrait: letterboxed
        "p3": SyntheticVideo(3, "d").frame_at(0.0),
        "p0-screen": SyntheticScreen(0, "Slides", Size(1280, 720)).frame_at(0.0),
    }
    scenes = [_plan(feeds[:count], layout) for count in (5, 2, 4, 0, 5)]
    expected = [
        [p.copy() for p in plane_views(Compositor(CANVAS).compose(s, frames))] for s in scenes
    ]
    monkeypatch.setattr(compositor_module, "av", type("av", (), {"VideoFrame": _PoisonedCanvas}))
    poisoned = Compositor(CANVAS)
    for scene, planes in zip(scenes, expected, strict=True):
        out = plane_views(poisoned.compose(scene, frames))
        for plane, wanted in zip(out, planes, strict=True):
            assert np.array_equal(plane, wanted), layout
