"""The colours of each theme, and the contrast rule they are held to.

A theme is everything drawn that is not video: the canvas around the tiles, the tile behind a
letterboxed or absent video, the name label, the speaking ring, the initials avatars, the "+N"
badge and the empty-room card. Colours are sRGB triples; alphas are 0..255.

Readability is a rule, not a taste: label text on its background, avatar initials on every avatar
colour, badge text and the empty-room text all meet the WCAG 2.x contrast ratio of at least
`MIN_TEXT_CONTRAST` (the "AA, normal text" level). The label background is translucent so a
little of the video shows through; its contrast is checked over both a black and a white video,
the two extremes of what can lie under it (`label_background_over`).
"""

from __future__ import annotations

from dataclasses import dataclass

from layouts.model import Theme

RGB = tuple[int, int, int]

# WCAG 2.x "AA" for normal-size text: the least contrast ratio text must have on its background.
MIN_TEXT_CONTRAST = 4.5
# WCAG 2.x 1.4.11: the least contrast of a meaningful graphic (the mute glyph on its disc).
MIN_GRAPHIC_CONTRAST = 3.0


@dataclass(frozen=True, slots=True)
class ThemeColors:
    """The palette of one theme (see the module docstring for where each colour is used)."""

    canvas_background: RGB
    tile_background: RGB
    label_background: RGB
    label_background_alpha: int  # 0..255; the label is translucent over the video
    label_text: RGB
    accent: RGB  # the speaking ring
    mute_background: RGB  # the disc behind the microphone glyph
    mute_glyph: RGB
    avatar_palette: tuple[RGB, ...]  # one is picked per participant by a stable hash of the id
    avatar_text: RGB
    card_background: RGB  # the empty-room card's panel
    card_text: RGB


# Avatar colours: saturated but dark enough for white initials (each >= 4.5:1 against white).
_DARK_AVATARS: tuple[RGB, ...] = (
    (183, 28, 28),  # red
    (173, 20, 87),  # pink
    (106, 27, 154),  # purple
    (69, 39, 160),  # deep purple
    (40, 53, 147),  # indigo
    (21, 101, 192),  # blue
    (0, 105, 92),  # teal
    (46, 125, 50),  # green
    (158, 73, 0),  # burnt orange
    (93, 64, 55),  # brown
)
# Pastel avatars with dark initials for the light theme (each >= 4.5:1 against the text colour).
_LIGHT_AVATARS: tuple[RGB, ...] = (
    (255, 205, 210),
    (248, 187, 208),
    (225, 190, 231),
    (209, 196, 233),
    (197, 202, 233),
    (187, 222, 251),
    (178, 223, 219),
    (200, 230, 201),
    (255, 224, 178),
    (215, 204, 200),
)

_THEMES: dict[Theme, ThemeColors] = {
    Theme.DEFAULT: ThemeColors(
        canvas_background=(32, 33, 36),
        tile_background=(60, 64, 67),
        label_background=(32, 33, 36),
        label_background_alpha=204,
        label_text=(255, 255, 255),
        accent=(138, 180, 248),
        mute_background=(217, 48, 37),
        mute_glyph=(255, 255, 255),
        avatar_palette=_DARK_AVATARS,
        avatar_text=(255, 255, 255),
        card_background=(60, 64, 67),
        card_text=(232, 234, 237),
    ),
    Theme.DARK: ThemeColors(
        canvas_background=(10, 10, 12),
        tile_background=(30, 31, 36),
        label_background=(0, 0, 0),
        label_background_alpha=191,
        label_text=(245, 245, 247),
        accent=(48, 209, 88),
        mute_background=(215, 40, 40),
        mute_glyph=(255, 255, 255),
        avatar_palette=_DARK_AVATARS,
        avatar_text=(255, 255, 255),
        card_background=(30, 31, 36),
        card_text=(220, 221, 226),
    ),
    Theme.LIGHT: ThemeColors(
        canvas_background=(243, 244, 246),
        tile_background=(221, 225, 231),
        label_background=(255, 255, 255),
        label_background_alpha=224,
        label_text=(17, 24, 39),
        accent=(37, 99, 235),
        mute_background=(200, 30, 30),
        mute_glyph=(255, 255, 255),
        avatar_palette=_LIGHT_AVATARS,
        avatar_text=(17, 24, 39),
        card_background=(255, 255, 255),
        card_text=(55, 65, 81),
    ),
}


def theme_colors(theme: Theme) -> ThemeColors:
    """The palette of `theme`."""
    return _THEMES[theme]


def relative_luminance(color: RGB) -> float:
    """WCAG 2.x relative luminance of an sRGB colour, 0 (black) to 1 (white)."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = color
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def contrast_ratio(first: RGB, second: RGB) -> float:
    """WCAG 2.x contrast ratio of two colours, 1 (same) to 21 (black on white)."""
    high, low = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def label_background_over(colors: ThemeColors, video: RGB) -> RGB:
    """The colour a viewer sees where the translucent label background lies over `video`."""
    alpha = colors.label_background_alpha / 255
    return tuple(  # type: ignore[return-value]
        round(alpha * fg + (1 - alpha) * bg)
        for fg, bg in zip(colors.label_background, video, strict=True)
    )
