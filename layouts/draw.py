"""The sprites: everything drawn over or instead of video, as small RGBA images.

A `Sprite` holds straight (not premultiplied) RGBA, uint8, shape (height, width, 4), read-only,
with even width and height so that it lines up with yuv420p chroma when placed at even
coordinates. Straight alpha is what Pillow draws; the compositor converts each sprite once to
premultiplied Y/U/V planes plus alpha and caches that by `Sprite.key`.

Every sprite function is pure and cached (`functools.lru_cache`, keyed by text, size and theme),
so a steady room costs nothing to redraw: the same arguments return the very same `Sprite`.
Shapes are drawn at `SUPERSAMPLE` times the size and box-filtered down (Pillow's shapes are not
anti-aliased); text is anti-aliased by FreeType directly. Each element is drawn as a coverage mask
and composited with `Image.alpha_composite`, so edges blend to the colour beneath them and never
to black.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from layouts.model import Size, Theme
from layouts.text import display_name, ellipsize, initials, text_mask, text_width
from layouts.themes import RGB, theme_colors

# Shapes are drawn this many times larger and box-filtered down, for anti-aliased edges.
SUPERSAMPLE = 4
# How many cached copies of each kind of sprite are kept: a few tiles x a few sizes x themes.
SPRITE_CACHE_SIZE = 256

# Name label: text size and padding as fractions of the label's height; corner radius likewise.
LABEL_FONT_FRACTION = 0.52
LABEL_PADDING_FRACTION = 0.4
LABEL_RADIUS_FRACTION = 0.3
# What follows a presenter's name on the label of their screen share.
SCREEN_SUFFIX = " — screen"
# Avatar initials' size as a fraction of the disc's diameter.
AVATAR_FONT_FRACTION = 0.38
# The empty-room card.
EMPTY_ROOM_TEXT = "Waiting for participants"
CARD_FONT_FRACTION = 0.045  # of the canvas' short side
CARD_PADDING_FRACTION = 1.2  # of the text size
CARD_ICON_FRACTION = 2.2  # the person icon's height, of the text size


@dataclass(frozen=True, slots=True, eq=False)
class Sprite:
    """A drawn overlay: straight RGBA uint8 (height, width, 4), even sides, read-only.

    `key` names the sprite by what it was drawn from (kind, text, size, colours); two sprites with
    equal keys have equal pixels, so caches downstream key on it rather than on object identity.
    """

    rgba: np.ndarray
    key: tuple[object, ...]

    @property
    def width(self) -> int:
        return int(self.rgba.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgba.shape[0])


@dataclass(frozen=True, slots=True)
class PlacedSprite:
    """A sprite and the canvas (or tile-relative) position of its top-left corner, both even."""

    sprite: Sprite
    x: int
    y: int


def even_ceil(value: float) -> int:
    """The smallest even integer >= `value` (at least 2): sprite sides must be even."""
    return max(2, math.ceil(value / 2) * 2)


def even_round(value: float) -> int:
    """`value` rounded to the nearest even integer (at least 2)."""
    return max(2, round(value / 2) * 2)


# Draws a shape in white on a coverage mask; its second argument is the supersampling scale.
_Shape = Callable[[ImageDraw.ImageDraw, float], None]


class _Painter:
    """Builds one sprite from coverage masks, back to front, with straight-alpha compositing."""

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)
        self.image = Image.new("RGBA", self.size, (0, 0, 0, 0))

    def paint(self, coverage: np.ndarray | Image.Image, color: RGB, alpha: int = 255) -> None:
        """Lay `color` at `alpha` over what is drawn, weighted by `coverage` (0..255)."""
        mask = coverage if isinstance(coverage, Image.Image) else Image.fromarray(coverage, "L")
        if alpha != 255:
            mask = mask.point(lambda value: value * alpha // 255)
        layer = Image.new("RGBA", self.size, (*color, 0))
        layer.putalpha(mask)
        self.image.alpha_composite(layer)

    def shape(self, draw: _Shape) -> Image.Image:
        """A coverage mask of what `draw(context, scale)` draws, anti-aliased by supersampling.

        `draw` works in sprite pixels multiplied by `scale`.
        """
        width, height = self.size
        big = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
        draw(ImageDraw.Draw(big), SUPERSAMPLE)
        return big.resize(self.size, Image.Resampling.BOX)

    def sprite(self, key: tuple[object, ...]) -> Sprite:
        pixels = np.array(self.image, dtype=np.uint8)
        pixels.setflags(write=False)
        return Sprite(pixels, key)


def _rounded_box(width: int, height: int, radius: float) -> _Shape:
    def draw(context: ImageDraw.ImageDraw, s: float) -> None:
        context.rounded_rectangle(
            (0, 0, width * s - 1, height * s - 1), radius=radius * s, fill=255
        )

    return draw


def _disc(diameter: int) -> _Shape:
    def draw(context: ImageDraw.ImageDraw, s: float) -> None:
        context.ellipse((0, 0, diameter * s - 1, diameter * s - 1), fill=255)

    return draw


@lru_cache(maxsize=SPRITE_CACHE_SIZE)
def name_label(
    name: str, *, screen_share: bool, height_px: int, max_width_px: int, theme: Theme
) -> Sprite | None:
    """The name label of a tile: a translucent pill with the name, ellipsised to `max_width_px`.

    A screen share reads "Alice — screen", the name being shortened first so the suffix stays.
    None when not even an ellipsis fits (a tile too narrow for a label).
    """
    colors = theme_colors(theme)
    height = even_round(height_px)
    font_px = max(1, round(height * LABEL_FONT_FRACTION))
    padding = round(height * LABEL_PADDING_FRACTION)
    room = max_width_px - 2 * padding
    clean = display_name(name)
    text = ""
    if screen_share:
        suffix_width = text_width(SCREEN_SUFFIX, font_px)
        shortened = ellipsize(clean, font_px, room - suffix_width)
        if shortened:
            text = shortened + SCREEN_SUFFIX
        clean = clean + SCREEN_SUFFIX
    text = text or ellipsize(clean, font_px, room)
    if not text:
        return None
    width = min(even_ceil(text_width(text, font_px) + 2 * padding), max(2, max_width_px // 2 * 2))
    painter = _Painter(width, height)
    painter.paint(
        painter.shape(_rounded_box(width, height, height * LABEL_RADIUS_FRACTION)),
        colors.label_background,
        colors.label_background_alpha,
    )
    painter.paint(
        text_mask(text, font_px, (width, height), (padding, height / 2), "lm"), colors.label_text
    )
    return painter.sprite(("label", text, height, width, font_px, padding, theme))


@lru_cache(maxsize=SPRITE_CACHE_SIZE)
def mute_mark(diameter_px: int, theme: Theme) -> Sprite:
    """A struck-through microphone on a red disc, drawn from shapes (no emoji font needed)."""
    colors = theme_colors(theme)
    d = even_round(diameter_px)
    painter = _Painter(d, d)
    painter.paint(painter.shape(_disc(d)), colors.mute_background)

    def microphone(context: ImageDraw.ImageDraw, s: float) -> None:
        u = d * s  # the glyph is laid out in fractions of the disc's diameter
        stroke = max(1, round(0.06 * u))
        context.rounded_rectangle(
            (0.40 * u, 0.20 * u, 0.60 * u, 0.56 * u), radius=0.10 * u, fill=255
        )
        context.arc((0.30 * u, 0.30 * u, 0.70 * u, 0.66 * u), 0, 180, fill=255, width=stroke)
        context.line((0.5 * u, 0.66 * u, 0.5 * u, 0.78 * u), fill=255, width=stroke)
        context.line((0.38 * u, 0.78 * u, 0.62 * u, 0.78 * u), fill=255, width=stroke)

    def slash(width_fraction: float) -> _Shape:
        def draw(context: ImageDraw.ImageDraw, s: float) -> None:
            u = d * s
            context.line(
                (0.27 * u, 0.22 * u, 0.73 * u, 0.80 * u),
                fill=255,
                width=max(1, round(width_fraction * u)),
            )

        return draw

    painter.paint(painter.shape(microphone), colors.mute_glyph)
    # A gap in the disc's colour either side of the slash keeps the strike readable when small.
    painter.paint(painter.shape(slash(0.16)), colors.mute_background)
    painter.paint(painter.shape(slash(0.065)), colors.mute_glyph)
    return painter.sprite(("mute", d, colors.mute_background, colors.mute_glyph))


@lru_cache(maxsize=SPRITE_CACHE_SIZE)
def speaking_ring(tile: Size, thickness_px: int, theme: Theme) -> tuple[PlacedSprite, ...]:
    """The speaking highlight: a ring in the accent colour along the inside of a tile's edge.

    Four opaque strips positioned relative to the tile's top-left corner, rather than one
    tile-sized sprite that is transparent in the middle: blending a whole tile every frame to
    change its border would cost as much as the video itself.
    """
    colors = theme_colors(theme)
    t = even_round(thickness_px)
    width, height = tile.width, tile.height
    if width <= 2 * t or height <= 2 * t:
        return ()
    across = _solid(width, t, colors.accent)
    down = _solid(t, height - 2 * t, colors.accent)
    return (
        PlacedSprite(across, 0, 0),
        PlacedSprite(across, 0, height - t),
        PlacedSprite(down, 0, t),
        PlacedSprite(down, width - t, t),
    )


@lru_cache(maxsize=SPRITE_CACHE_SIZE)
def _solid(width: int, height: int, color: RGB) -> Sprite:
    pixels = np.empty((height, width, 4), dtype=np.uint8)
    pixels[..., :3] = color
    pixels[..., 3] = 255
    pixels.setflags(write=False)
    return Sprite(pixels, ("solid", width, height, color))


def avatar_color(participant_id: str, theme: Theme) -> RGB:
    """The avatar colour of a participant: a stable hash of the id picks from the theme palette.

    CRC-32 of the UTF-8 id, not Python's `hash` (salted per process): the same participant has
    the same colour in every recording and every golden frame.
    """
    palette = theme_colors(theme).avatar_palette
    digest = zlib.crc32(participant_id.encode("utf-8", "surrogatepass"))
    return palette[digest % len(palette)]


def avatar(participant_id: str, name: str, diameter_px: int, theme: Theme) -> Sprite:
    """The initials avatar shown instead of video: a disc in the participant's colour."""
    return _avatar(
        initials(name),
        avatar_color(participant_id, theme),
        theme_colors(theme).avatar_text,
        even_round(diameter_px),
    )


@lru_cache(maxsize=SPRITE_CACHE_SIZE)
def _avatar(letters: str, color: RGB, text_color: RGB, diameter: int) -> Sprite:
    painter = _Painter(diameter, diameter)
    painter.paint(painter.shape(_disc(diameter)), color)
    font_px = max(1, round(diameter * AVATAR_FONT_FRACTION))
    center = (diameter / 2, diameter / 2)
    painter.paint(text_mask(letters, font_px, (diameter, diameter), center, "mm"), text_color)
    return painter.sprite(("avatar", letters, color, text_color, diameter))


@lru_cache(maxsize=SPRITE_CACHE_SIZE)
def hidden_badge(count: int, height_px: int, theme: Theme) -> Sprite:
    """The "+N" badge: N more participants are present than are shown."""
    colors = theme_colors(theme)
    height = even_round(height_px)
    text = f"+{count}"
    font_px = max(1, round(height * LABEL_FONT_FRACTION))
    padding = round(height * LABEL_PADDING_FRACTION)
    width = max(height, even_ceil(text_width(text, font_px) + 2 * padding))
    painter = _Painter(width, height)
    painter.paint(
        painter.shape(_rounded_box(width, height, height / 2)),
        colors.label_background,
        colors.label_background_alpha,
    )
    painter.paint(
        text_mask(text, font_px, (width, height), (width / 2, height / 2), "mm"),
        colors.label_text,
    )
    return painter.sprite(("badge", text, height, width, font_px, theme))


@lru_cache(maxsize=SPRITE_CACHE_SIZE)
def empty_room_card(canvas: Size, theme: Theme) -> Sprite:
    """The card shown while nobody is present: a person icon over "Waiting for participants"."""
    colors = theme_colors(theme)
    font_px = max(8, round(min(canvas.width, canvas.height) * CARD_FONT_FRACTION))
    padding = round(font_px * CARD_PADDING_FRACTION)
    icon = round(font_px * CARD_ICON_FRACTION)
    text_w = text_width(EMPTY_ROOM_TEXT, font_px)
    width = min(even_ceil(text_w + 2 * padding), canvas.width // 2 * 2)
    height = min(even_ceil(icon + font_px * 1.6 + 2 * padding), canvas.height // 2 * 2)
    painter = _Painter(width, height)
    painter.paint(painter.shape(_rounded_box(width, height, font_px * 0.6)), colors.card_background)

    def person(context: ImageDraw.ImageDraw, s: float) -> None:
        cx, top = width / 2 * s, padding * s
        head = icon * 0.42 * s
        context.ellipse((cx - head / 2, top, cx + head / 2, top + head), fill=255)
        shoulders = icon * 0.9 * s
        body_top = top + head * 1.12
        context.chord(
            (cx - shoulders / 2, body_top, cx + shoulders / 2, body_top + icon * 1.1 * s),
            180,
            360,
            fill=255,
        )

    painter.paint(painter.shape(person), colors.card_text, 160)
    text_center = (width / 2, padding + icon + font_px * 0.8)
    painter.paint(
        text_mask(EMPTY_ROOM_TEXT, font_px, (width, height), text_center, "mm"), colors.card_text
    )
    return painter.sprite(("card", width, height, font_px, theme))
