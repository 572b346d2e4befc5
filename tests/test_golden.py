"""Golden frames: every layout x theme x room size, and the special cases, pixel for pixel.

Each case is rendered through the real selection, geometry, drawing and compositor
(`recorder.testing.stills.render_still`) at the low-quality canvas, converted to RGB once with
the compositor's own matrix, and compared with `tests/golden/<case>.png`.

Regenerate on purpose (after a deliberate visual change, then look at the PNGs):
    .venv/bin/python scripts/update_goldens.py          (see docs/goldens.md)
which runs this file with RECORDER_UPDATE_GOLDENS=1: mismatching or missing goldens are
rewritten and those tests are reported as skipped, never as passed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layouts import draw, geometry
from layouts.model import LayoutType, Orientation, Theme
from recorder.media.compositor import Compositor, frame_to_rgb
from recorder.testing.stills import StillSpec, render_still

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE_ENV_VAR = "RECORDER_UPDATE_GOLDENS"
# Tolerances. Everything drawn is deterministic, but libswscale's scaling of the source video
# takes CPU-specific SIMD paths (SSE/AVX2/NEON) that round differently by a level or two, and a
# FreeType upgrade can move anti-aliased glyph edges. Both are small or sparse, so a golden
# matches when, over all pixels and channels of the frame:
# * the mean absolute difference is at most MAX_MEAN_ABS_DIFF: a moved tile edge shifts it far
#   beyond (see the deliberate-change tests at the end);
# * 99% of the differences are at most MAX_P99_ABS_DIFF levels: rounding noise is one or two
#   levels, while recolouring anything that covers 1% of the frame (a side tile, an avatar, a
#   palette colour) by more than that fails;
# * 99.9% of the differences are at most MAX_P999_ABS_DIFF: a few hundred pixels of glyph edges
#   may differ more, a changed label, badge or mark is thousands of pixels.
MAX_MEAN_ABS_DIFF = 1.0
MAX_P99_ABS_DIFF = 6
MAX_P999_ABS_DIFF = 24
PARTICIPANT_COUNTS = (0, 1, 2, 3, 4, 6)


def _name(layout: LayoutType, theme: Theme, participants: int, case: str = "") -> str:
    suffix = f"-{case}" if case else ""
    return f"{layout.value.lower()}-{theme.value.lower()}-{participants}p{suffix}"


def _cases() -> dict[str, StillSpec]:
    cases: dict[str, StillSpec] = {}
    for layout in LayoutType:
        for theme in Theme:
            for count in PARTICIPANT_COUNTS:
                cases[_name(layout, theme, count)] = StillSpec(layout, theme, count)
    special: dict[str, dict[str, object]] = {
        # SPOTLIGHT shows participant 1 (first joined) when nobody speaks: mark them.
        "video-off": {"video_off": frozenset({1, 3})},
        "muted": {"muted": frozenset({1, 2})},
        "speaking": {"speaking": frozenset({2})},
        "screen-share": {"screen_share": True, "muted": frozenset({1})},
        "portrait-source": {"portrait_sources": frozenset({1, 2})},
        "portrait-canvas": {"orientation": Orientation.PORTRAIT, "speaking": frozenset({1})},
    }
    for case, changes in special.items():
        for layout in LayoutType:
            spec = StillSpec(layout, Theme.DEFAULT, 3, **changes)  # type: ignore[arg-type]
            cases[_name(layout, Theme.DEFAULT, 3, case)] = spec
    cases["spotlight-dark-3p-portrait-canvas-screen-share"] = StillSpec(
        LayoutType.SPOTLIGHT,
        Theme.DARK,
        3,
        screen_share=True,
        orientation=Orientation.PORTRAIT,
    )
    return cases


CASES = _cases()
_COMPOSITORS: dict[object, Compositor] = {}


def _render(spec: StillSpec, *, fresh: bool = False) -> np.ndarray:
    """The still as RGB; one compositor per canvas is shared (its caches make the suite fast)
    unless `fresh`, for renders made with patched constants."""
    compositor = Compositor(spec.canvas) if fresh else _COMPOSITORS.get(spec.canvas)
    if compositor is None:
        compositor = _COMPOSITORS.setdefault(spec.canvas, Compositor(spec.canvas))
    return frame_to_rgb(render_still(spec, 0.0, compositor))


def _difference(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float, float]:
    """Mean, 99th and 99.9th percentile of the absolute differences (inf: different sizes)."""
    if actual.shape != expected.shape:
        return float("inf"), float("inf"), float("inf")
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    p99, p999 = np.percentile(diff, [99, 99.9])
    return float(diff.mean()), float(p99), float(p999)


def _matches(actual: np.ndarray, expected: np.ndarray) -> bool:
    mean, p99, p999 = _difference(actual, expected)
    return mean <= MAX_MEAN_ABS_DIFF and p99 <= MAX_P99_ABS_DIFF and p999 <= MAX_P999_ABS_DIFF


def _load(name: str) -> np.ndarray:
    with Image.open(GOLDEN_DIR / f"{name}.png") as image:
        return np.asarray(image.convert("RGB"))


def _save(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, optimize=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, tmp_path: Path) -> None:
    actual = _render(CASES[name])
    path = GOLDEN_DIR / f"{name}.png"
    updating = os.environ.get(UPDATE_ENV_VAR) == "1"
    if not path.exists():
        if updating:
            _save(actual, path)
            pytest.skip(f"golden {path.name} written")
        pytest.fail(f"no golden {path}: run scripts/update_goldens.py and look at the result")
    expected = _load(name)
    if _matches(actual, expected):
        return
    if updating:
        _save(actual, path)
        pytest.skip(f"golden {path.name} rewritten")
    mean, p99, p999 = _difference(actual, expected)
    _save(actual, tmp_path / f"{name}.actual.png")
    if actual.shape == expected.shape:
        diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16)).max(axis=2)
        _save(np.clip(diff * 8, 0, 255).astype(np.uint8), tmp_path / f"{name}.diff.png")
    pytest.fail(
        f"{name}: mean |diff| {mean:.3f} (max {MAX_MEAN_ABS_DIFF}), 99th percentile {p99:.1f} "
        f"(max {MAX_P99_ABS_DIFF}), 99.9th {p999:.1f} (max {MAX_P999_ABS_DIFF}); "
        f"actual and diff in {tmp_path}"
    )


def test_goldens_stay_small() -> None:
    total = sum(path.stat().st_size for path in GOLDEN_DIR.glob("*.png"))
    assert total < 5 * 1024 * 1024
    stale = {path.stem for path in GOLDEN_DIR.glob("*.png")} - set(CASES)
    assert not stale, f"goldens without a case: {sorted(stale)}"


# The comparison must catch deliberate changes: a layout constant and a drawing constant.


def test_a_changed_margin_fails_the_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    name = _name(LayoutType.GRID, Theme.DEFAULT, 3)
    assert _matches(_render(CASES[name]), _load(name))
    monkeypatch.setattr(geometry, "MARGIN_FRACTION", geometry.MARGIN_FRACTION * 1.5)
    mean, _, _ = _difference(_render(CASES[name], fresh=True), _load(name))
    assert mean > MAX_MEAN_ABS_DIFF


def test_a_changed_label_fails_the_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    name = _name(LayoutType.SIDEBAR, Theme.LIGHT, 4)
    monkeypatch.setattr(draw, "LABEL_FONT_FRACTION", draw.LABEL_FONT_FRACTION * 1.15)
    draw.name_label.cache_clear()  # sprites are cached by their arguments, not the constants
    try:
        changed = _render(CASES[name], fresh=True)
    finally:
        monkeypatch.undo()
        draw.name_label.cache_clear()
    assert not _matches(changed, _load(name))
    assert _matches(_render(CASES[name]), _load(name))


# `recorder render`: the PNG it writes is the still, and the contact sheet holds every layout.


def test_render_command_writes_the_still(tmp_path: Path) -> None:
    from recorder.cli import main

    out = tmp_path / "x.png"
    argv = ["render", "--layout", "sidebar", "--theme", "light", "--participants", "3"]
    argv += ["--screen-share", "--muted", "2", "--quality", "low", "--out", str(out)]
    assert main(argv) == 0
    with Image.open(out) as image:
        written = np.asarray(image.convert("RGB"))
    spec = StillSpec(LayoutType.SIDEBAR, Theme.LIGHT, 3, screen_share=True, muted=frozenset({2}))
    assert _matches(written, _render(spec))


def test_render_command_contact_sheet_and_refusals(tmp_path: Path) -> None:
    from recorder.cli import main
    from recorder.commands import render

    out = tmp_path / "sheet.png"
    assert main(["render", "--contact-sheet", "--quality", "low", "--out", str(out)]) == 0
    with Image.open(out) as image:
        width, height = image.size
    columns, rows = len(Theme), len(LayoutType)
    assert width == columns * 854 + (columns + 1) * render.SHEET_GAP_PX
    assert height == rows * (480 + render.CAPTION_HEIGHT_PX) + (rows + 1) * render.SHEET_GAP_PX
    assert main(["render", "--participants", "2", "--muted", "3", "--out", str(out)]) == 2
    with pytest.raises(SystemExit):
        main(["render", "--layout", "MOSAIC", "--out", str(out)])


def test_a_recoloured_side_tile_fails_the_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    # A small region (SIDEBAR's last side tile, ~4% of the frame) shifted by 10 levels: the mean
    # barely moves, the 99th percentile catches it.
    from recorder.testing import video

    name = _name(LayoutType.SIDEBAR, Theme.DARK, 4)
    palette = list(video.PALETTE)
    palette[3] = tuple(max(0, c - 10) for c in palette[3])  # type: ignore[assignment]
    monkeypatch.setattr(video, "PALETTE", tuple(palette))
    video._camera_base.cache_clear()
    try:
        changed = _render(CASES[name], fresh=True)
    finally:
        monkeypatch.undo()
        video._camera_base.cache_clear()
    mean, p99, _ = _difference(changed, _load(name))
    assert mean <= MAX_MEAN_ABS_DIFF  # the mean alone would let it through
    assert p99 > MAX_P99_ABS_DIFF
