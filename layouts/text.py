"""Text for sprites: the shipped font, untrusted names made safe to draw, ellipsis, initials.

Every string drawn on a recording comes through here. The font is the one shipped in the package
(`layouts/fonts/DejaVuSans-Bold.ttf`, loaded with importlib.resources) and laid out with Pillow's
basic layout engine, never a system font or libraqm, so the same text gives the same pixels on
every machine (golden frames depend on it).

Names come from room participants and are untrusted: `clean_text` removes control characters,
format characters (bidi overrides and isolates, zero-width joiners), surrogates, private-use and
unassigned code points, and stacks of combining marks, and it caps the length, so no name can
reorder the label, draw outside it, or cost more than a bounded amount to measure. A character the
font does not have is drawn as the font's missing-glyph box; nothing here raises on any `str`.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from importlib import resources
from io import BytesIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PACKAGE = "layouts"
FONT_RESOURCE = "fonts/DejaVuSans-Bold.ttf"
ELLIPSIS = "…"
# Longest text kept from an untrusted name, in code points: far more than fits any label, small
# enough that measuring it for the ellipsis stays cheap.
MAX_TEXT_CHARS = 128
# Combining marks kept after one base character: enough for real scripts (Vietnamese stacks two),
# not for "Zalgo" text that would paint far above and below the label.
MAX_COMBINING_MARKS = 2
# The name drawn when nothing drawable is left of a name.
FALLBACK_NAME = "Guest"

# Unicode general categories removed from untrusted text: controls (Cc), format characters (Cf:
# bidi overrides and isolates, zero-width and invisible characters), surrogates (Cs), private use
# (Co) and unassigned (Cn); line and paragraph separators (Zl, Zp) become spaces.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_SPACE_CATEGORIES = frozenset({"Zs", "Zl", "Zp"})
_COMBINING_CATEGORIES = frozenset({"Mn", "Me"})


@lru_cache(maxsize=1)
def _font_bytes() -> bytes:
    return resources.files(FONT_PACKAGE).joinpath(FONT_RESOURCE).read_bytes()


@lru_cache(maxsize=64)
def font(size_px: int) -> ImageFont.FreeTypeFont:
    """The shipped bold font at `size_px` pixels (em size), with the basic layout engine."""
    return ImageFont.truetype(
        BytesIO(_font_bytes()), max(1, size_px), layout_engine=ImageFont.Layout.BASIC
    )


def clean_text(text: str) -> str:
    """`text` made safe to draw: see the module docstring. Whitespace runs become one space."""
    out: list[str] = []
    marks = 0
    pending_space = False
    for char in unicodedata.normalize("NFC", text[: MAX_TEXT_CHARS * 4]):
        category = unicodedata.category(char)
        if category in _REMOVED_CATEGORIES:
            if char in "\t\n\r\v\f":
                pending_space = bool(out)
            continue
        if category in _SPACE_CATEGORIES or char.isspace():
            pending_space = bool(out)
            continue
        if category in _COMBINING_CATEGORIES:
            if not out or marks >= MAX_COMBINING_MARKS:
                continue
            marks += 1
            out.append(char)
            continue
        if len(out) >= MAX_TEXT_CHARS:
            break
        if pending_space:
            out.append(" ")
            pending_space = False
        marks = 0
        out.append(char)
    return "".join(out).strip()


def display_name(name: str) -> str:
    """The name as a label shows it: cleaned, or `FALLBACK_NAME` when nothing drawable is left."""
    return clean_text(name) or FALLBACK_NAME


def text_width(text: str, size_px: int) -> float:
    """Advance width of `text` in the shipped font at `size_px`, in pixels."""
    return font(size_px).getlength(text)


def ellipsize(text: str, size_px: int, max_width_px: float) -> str:
    """The longest prefix of `text` that fits `max_width_px`, ending in "…" when cut.

    Returns "" when not even the ellipsis fits. A binary search over prefixes: the width of a
    prefix grows with its length (no kerning that could shrink it in the basic layout).
    """
    if text_width(text, size_px) <= max_width_px:
        return text
    if text_width(ELLIPSIS, size_px) > max_width_px:
        return ""
    low, high = 0, len(text)  # the answer prefix length lies in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if text_width(text[:middle].rstrip() + ELLIPSIS, size_px) <= max_width_px:
            low = middle
        else:
            high = middle
    return text[:low].rstrip() + ELLIPSIS


def initials(name: str) -> str:
    """One or two capital initials: the first and last words' first letters ("?" if none)."""
    words = [word for word in clean_text(name).split(" ") if word]
    letters = [next((c for c in word if c.isalnum()), "") for word in words]
    letters = [letter for letter in letters if letter]
    if not letters:
        return "?"
    picked = letters[0] if len(letters) == 1 else letters[0] + letters[-1]
    # str.upper can lengthen a letter ("ß" -> "SS"); keep one character per initial.
    return "".join(letter.upper()[0] for letter in picked)


def text_mask(
    text: str, size_px: int, box: tuple[int, int], anchor_xy: tuple[float, float], anchor: str
) -> np.ndarray:
    """An 8-bit coverage mask of `box` (width, height) with `text` drawn at `anchor_xy`.

    `anchor` is Pillow's text anchor ("lm": left, vertically centred on the font's ascender and
    descender; "mm": centred): centring on font metrics rather than on the string's own bounding
    box keeps names with and without descenders on the same baseline.
    """
    image = Image.new("L", box, 0)
    ImageDraw.Draw(image).text(anchor_xy, text, fill=255, font=font(size_px), anchor=anchor)
    return np.asarray(image)
