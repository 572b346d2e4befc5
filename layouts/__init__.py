"""Pure layout engine: who is visible, where each tile goes, and what is drawn that is not video.

numpy and Pillow only: no networking, no codecs. Same inputs, same pixels.
"""

from layouts.model import (
    Fit,
    LayoutSpec,
    LayoutType,
    Orientation,
    ParticipantView,
    Priority,
    Rect,
    Size,
    Theme,
    Tile,
    TileRole,
)

__all__ = [
    "Fit",
    "LayoutSpec",
    "LayoutType",
    "Orientation",
    "ParticipantView",
    "Priority",
    "Rect",
    "Size",
    "Theme",
    "Tile",
    "TileRole",
]
