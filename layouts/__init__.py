"""Pure layout engine: who is visible, where each tile goes, and what is drawn that is not video.

numpy and Pillow only: no networking, no codecs. Same inputs, same pixels.
"""

import importlib

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


def __getattr__(name: str) -> object:
    """`layouts.plan_frame` and `layouts.Scene`, imported on first use.

    Lazy so that `import layouts.model` (the job validator, `recorder validate`) does not pay for
    numpy and Pillow.
    """
    if name in ("plan_frame", "Scene"):
        return getattr(importlib.import_module("layouts.scene"), name)
    raise AttributeError(f"module 'layouts' has no attribute {name!r}")
