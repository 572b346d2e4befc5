"""The compositor: one `Scene` plus the latest frame of each feed in, one yuv420p frame out.

The work per tick, all in libswscale (through PyAV) and numpy, nothing per pixel in Python:

1. a fresh output frame gets the scene's background, made in Y/U/V once per distinct background
   (a new one at every roster or layout change) and cached: it is flat rectangles at even
   positions (the canvas colour, the tile colour under each tile), so each is filled with its
   colour's Y/U/V, which is exactly what converting the whole RGB picture gives (tests check)
   for ~1% of the cost (~0.3 ms instead of ~35 ms at 1080p, more than a tick's budget);
2. each tile's source frame (any size, any pixel format) is scaled by libswscale to the size
   `layouts.geometry.place_video` asks for, the crop is a numpy slice of the scaled planes, and
   the blit is a plane copy; the scaled planes are cached per tile while the tile's source is the
   very same frame object as last tick, so an unchanged source costs one copy;
3. the overlay sprites, converted once to premultiplied Y/U/V planes plus alpha and cached by
   `Sprite.key`, are blended with integer arithmetic (opaque sprites are copied).

Colour: everything is BT.601, limited ("MPEG", 16..235) range, both ways: RGB backgrounds and
sprites are converted to YUV by libswscale with that matrix, sources are converted to it when
they are scaled, output frames are tagged with it, and `frame_to_rgb` converts back with it.
Those one-off RGB conversions use swscale's bit-exact, accurate-rounding mode, so they do not
depend on the CPU's SIMD flavour.

Ownership of output frames: `compose` returns a frame it has just allocated and never touches
again; the caller (the encoder) owns it and may keep it as long as it likes. Only the scaled
source planes and the background/sprite conversions are reused between ticks, and they are only
ever read after they are made. Allocating the output costs microseconds (the allocator recycles
the previous frame's pages), far less than the risk of an encoder reading a frame we overwrite.

Not thread-safe: one compositor belongs to one media thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from layouts.draw import PlacedSprite, Sprite
from layouts.geometry import Placement, check_canvas, place_video
from layouts.model import Fit, Rect, Size
from layouts.scene import Background, Scene
from layouts.themes import RGB, theme_colors

# Scaling filter for source video, chosen by measurement (one core, 1280x720 yuv420p source;
# quality as PSNR of a zone plate against a Lanczos reference, the worst case for aliasing):
#   to 910x512 (a 1080p GRID tile):  BILINEAR 0.45 ms 22.7 dB, AREA 0.46 ms 24.9 dB,
#                                     BICUBIC 0.70 ms 32.7 dB, FAST_BILINEAR 0.43 ms 19.0 dB
#   to 620x350 (a 720p GRID tile):   AREA 0.31 ms 25.1 dB, BICUBIC 0.98 ms 32.5 dB
# AREA is the best picture at bilinear's price; BICUBIC is sharper but would take the 1080p
# four-tile compose from ~2.7 ms to ~3.7 ms, past the 3 ms budget. Enlarging, AREA is bilinear.
SCALE_INTERPOLATION = Interpolation.AREA
# One libswscale thread: a recorder is one process per recording, sized per core by the bench.
SCALE_THREADS = 1
# The colour matrix and range of every frame the compositor makes (see the module docstring).
COLORSPACE = Colorspace.ITU601
COLOR_RANGE = ColorRange.MPEG
# Flags for one-off RGB <-> YUV conversions: no scaling, exact and CPU-independent rounding.
_EXACT_CONVERSION = Interpolation.POINT | Interpolation.ACCURATE_RND | Interpolation.BITEXACT
# How many converted backgrounds and sprites are kept (least recently used are dropped).
BACKGROUND_CACHE_SIZE = 4
SPRITE_CACHE_SIZE = 512

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def plane_views(frame: av.VideoFrame) -> Planes:
    """Numpy views (no copy) of a yuv420p frame's Y, U and V planes, without the row padding."""
    views = []
    for plane in frame.planes[:3]:
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        views.append(rows[:, : plane.width])
    return views[0], views[1], views[2]


def rgb_to_yuv(rgb: np.ndarray, pixel_format: str = "yuv420p") -> Planes:
    """Convert an RGB uint8 array (height, width, 3; even sides for yuv420p) to Y, U, V planes.

    BT.601 limited range, bit-exact: the one RGB -> YUV conversion of the project.
    """
    source = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    converted = source.reformat(
        format=pixel_format,
        dst_colorspace=COLORSPACE,
        dst_color_range=COLOR_RANGE,
        interpolation=_EXACT_CONVERSION,
        threads=SCALE_THREADS,
    )
    y, u, v = plane_views(converted)
    return y.copy(), u.copy(), v.copy()


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A yuv420p frame as an RGB uint8 array (height, width, 3), with the compositor's matrix."""
    return frame.reformat(
        format="rgb24",
        src_colorspace=COLORSPACE,
        src_color_range=COLOR_RANGE,
        interpolation=Interpolation.BILINEAR
        | Interpolation.ACCURATE_RND
        | Interpolation.BITEXACT
        | Interpolation.FULL_CHR_H_INT,
        threads=SCALE_THREADS,
    ).to_ndarray()


@dataclass(frozen=True, slots=True)
class _SpritePlanes:
    """A sprite in YUV: for opaque sprites the planes to copy; otherwise, per plane, the colour
    premultiplied by alpha (plus the rounding bias 128) and 255 - alpha, both uint16."""

    opaque: bool
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    y_inv_alpha: np.ndarray | None
    c_inv_alpha: np.ndarray | None


def _convert_sprite(sprite: Sprite) -> _SpritePlanes:
    rgba = sprite.rgba
    if sprite.width % 2 or sprite.height % 2:
        raise ValueError(f"sprite {sprite.key[0]} has odd sides {sprite.width}x{sprite.height}")
    alpha = rgba[..., 3]
    y, u, v = rgb_to_yuv(rgba[..., :3], "yuv444p")
    if bool(np.all(alpha == 255)):
        return _SpritePlanes(True, y, _subsample(u), _subsample(v), None, None)

    a = alpha.astype(np.uint32)
    y_premultiplied = y * a
    # Chroma: alpha averaged over each 2x2 block and quantised first, then the alpha-weighted
    # mean colour of the block premultiplied by that quantised alpha. This keeps the blend's
    # sum within 255 * 255 (no uint16 overflow) and blends edges to the right colour.
    alpha_sum = _block_sum(a)  # 0 .. 4 * 255
    c_alpha = (alpha_sum + 2) // 4
    safe_sum = np.maximum(alpha_sum, 1)
    planes = []
    for plane in (u, v):
        weighted = _block_sum(plane * a)
        straight = (weighted + safe_sum // 2) // safe_sum
        planes.append(straight * c_alpha)
    bias = 128
    return _SpritePlanes(
        False,
        (y_premultiplied + bias).astype(np.uint16),
        (planes[0] + bias).astype(np.uint16),
        (planes[1] + bias).astype(np.uint16),
        (255 - a).astype(np.uint16),
        (255 - c_alpha).astype(np.uint16),
    )


def _block_sum(plane: np.ndarray) -> np.ndarray:
    """Sum over each 2x2 block (even sides)."""
    wide = plane.astype(np.uint32)
    return wide[0::2, 0::2] + wide[1::2, 0::2] + wide[0::2, 1::2] + wide[1::2, 1::2]


def _subsample(plane: np.ndarray) -> np.ndarray:
    return ((_block_sum(plane) + 2) // 4).astype(np.uint8)


def _blend(target: np.ndarray, premultiplied: np.ndarray, inverse_alpha: np.ndarray) -> None:
    """target = round((colour * A + target * (255 - A)) / 255), in uint16, in place.

    `premultiplied` already holds colour * A + 128; dividing by 255 with rounding is
    (t + (t >> 8)) >> 8 for t = value + 128, exact for every value up to 255 * 255.
    """
    mixed = np.multiply(target, inverse_alpha, dtype=np.uint16)
    mixed += premultiplied
    mixed += mixed >> 8
    mixed >>= 8
    target[...] = mixed


@dataclass(slots=True)
class _ScaledSource:
    """The last scaled frame of one tile and the crop of it the tile shows."""

    source: av.VideoFrame  # held so that the identity test below cannot be fooled by id reuse
    placement: Placement
    scaled: av.VideoFrame  # held: `crop` views point into its buffers
    crop: Planes


class Compositor:
    """Draws `Scene`s at one canvas size into yuv420p frames (see the module docstring)."""

    def __init__(self, canvas: Size, *, interpolation: Interpolation = SCALE_INTERPOLATION) -> None:
        check_canvas(canvas)
        self.canvas = canvas
        self.interpolation = interpolation
        self._backgrounds: OrderedDict[Background, Planes] = OrderedDict()
        self._sprites: OrderedDict[tuple[object, ...], _SpritePlanes] = OrderedDict()
        self._fills: dict[RGB, tuple[int, int, int]] = {}
        self._sources: dict[tuple[str, Rect, Fit], _ScaledSource] = {}
        self._scalers: dict[tuple[str, Rect, Fit], VideoReformatter] = {}

    def compose(self, scene: Scene, frames: Mapping[str, av.VideoFrame | None]) -> av.VideoFrame:
        """Draw `scene` with the latest frame of each feed (None or absent: not arrived yet).

        Returns a new yuv420p frame at the canvas size that the compositor will never write to
        again. Raises ValueError when the scene was planned for another canvas.
        """
        if scene.canvas != self.canvas:
            raise ValueError(f"scene is for {scene.canvas}, this compositor draws {self.canvas}")
        out = av.VideoFrame(self.canvas.width, self.canvas.height, "yuv420p")
        out.colorspace = COLORSPACE  # AVCOL_SPC_BT470BG (5): a BT.601 matrix, as PyAV maps it
        out.color_range = COLOR_RANGE
        target = plane_views(out)
        for plane, background in zip(target, self._background(scene.background), strict=True):
            np.copyto(plane, background)

        used: set[tuple[str, Rect, Fit]] = set()
        for plan in scene.tiles:
            rect = plan.tile.rect
            if plan.backdrop:
                self._fill(target, rect, scene.tile_background)
            frame = frames.get(plan.tile.feed_id) if plan.show_video else None
            if frame is None:
                self._draw_sprite(target, plan.avatar)
            else:
                key = (plan.tile.feed_id, rect, plan.tile.fit)
                used.add(key)
                self._draw_video(target, key, frame)
            for overlay in plan.overlays:
                self._draw_sprite(target, overlay)
        for overlay in scene.overlays:
            self._draw_sprite(target, overlay)

        # Forget tiles that are gone, so their source frames are not kept alive.
        for key in self._sources.keys() - used:
            del self._sources[key]
            self._scalers.pop(key, None)
        return out

    def _background(self, background: Background) -> Planes:
        planes = self._backgrounds.get(background)
        if planes is None:
            if background.canvas != self.canvas:
                raise ValueError(f"background is for {background.canvas}, not {self.canvas}")
            planes = self._flat_background(background)
            self._backgrounds[background] = planes
            while len(self._backgrounds) > BACKGROUND_CACHE_SIZE:
                self._backgrounds.popitem(last=False)
        else:
            self._backgrounds.move_to_end(background)
        return planes

    def _flat_background(self, background: Background) -> Planes:
        """`rgb_to_yuv(background.rgb())`, filled rectangle by rectangle (module docstring)."""
        colors = theme_colors(background.theme)
        width, height = self.canvas.width, self.canvas.height
        chroma = (height // 2, width // 2)
        planes = (
            np.empty((height, width), np.uint8),
            np.empty(chroma, np.uint8),
            np.empty(chroma, np.uint8),
        )
        self._fill(planes, Rect(0, 0, width, height), colors.canvas_background)
        for rect in background.tiles:
            self._fill(planes, rect, colors.tile_background)
        return planes

    def _fill(self, target: Planes, rect: Rect, color: RGB) -> None:
        yuv = self._fills.get(color)
        if yuv is None:
            y, u, v = rgb_to_yuv(np.full((2, 2, 3), color, dtype=np.uint8))
            yuv = (int(y[0, 0]), int(u[0, 0]), int(v[0, 0]))
            self._fills[color] = yuv
        y_plane, u_plane, v_plane = target
        y_plane[rect.y : rect.bottom, rect.x : rect.right] = yuv[0]
        cx, cy, cr, cb = rect.x // 2, rect.y // 2, rect.right // 2, rect.bottom // 2
        u_plane[cy:cb, cx:cr] = yuv[1]
        v_plane[cy:cb, cx:cr] = yuv[2]

    def _draw_video(self, target: Planes, key: tuple[str, Rect, Fit], frame: av.VideoFrame) -> None:
        _, rect, fit = key
        cached = self._sources.get(key)
        if cached is None or cached.source is not frame:
            placement = place_video(Size(frame.width, frame.height), rect, fit)
            scaler = self._scalers.get(key)
            if scaler is None:
                scaler = self._scalers[key] = VideoReformatter()
            scaled = scaler.reformat(
                frame,
                placement.scaled.width,
                placement.scaled.height,
                "yuv420p",
                dst_colorspace=COLORSPACE,
                dst_color_range=COLOR_RANGE,
                interpolation=self.interpolation,
                threads=SCALE_THREADS,
            )
            crop = placement.crop
            y, u, v = plane_views(scaled)
            cx, cy, cr, cb = crop.x // 2, crop.y // 2, crop.right // 2, crop.bottom // 2
            cached = _ScaledSource(
                frame,
                placement,
                scaled,
                (y[crop.y : crop.bottom, crop.x : crop.right], u[cy:cb, cx:cr], v[cy:cb, cx:cr]),
            )
            self._sources[key] = cached
        dest = cached.placement.dest
        y_plane, u_plane, v_plane = target
        y_plane[dest.y : dest.bottom, dest.x : dest.right] = cached.crop[0]
        cx, cy, cr, cb = dest.x // 2, dest.y // 2, dest.right // 2, dest.bottom // 2
        u_plane[cy:cb, cx:cr] = cached.crop[1]
        v_plane[cy:cb, cx:cr] = cached.crop[2]

    def _sprite_planes(self, sprite: Sprite) -> _SpritePlanes:
        planes = self._sprites.get(sprite.key)
        if planes is None:
            planes = _convert_sprite(sprite)
            self._sprites[sprite.key] = planes
            while len(self._sprites) > SPRITE_CACHE_SIZE:
                self._sprites.popitem(last=False)
        else:
            self._sprites.move_to_end(sprite.key)
        return planes

    def _draw_sprite(self, target: Planes, placed: PlacedSprite) -> None:
        sprite = placed.sprite
        # Clip to the canvas; positions and sizes are even, so the chroma bounds are exact.
        x0, y0 = max(placed.x, 0), max(placed.y, 0)
        x1 = min(placed.x + sprite.width, self.canvas.width)
        y1 = min(placed.y + sprite.height, self.canvas.height)
        if x0 >= x1 or y0 >= y1:
            return
        if placed.x % 2 or placed.y % 2:
            raise ValueError(f"sprite {sprite.key[0]} placed at odd position {placed.x},{placed.y}")
        planes = self._sprite_planes(sprite)
        sx0, sy0, sx1, sy1 = x0 - placed.x, y0 - placed.y, x1 - placed.x, y1 - placed.y
        luma = (slice(sy0, sy1), slice(sx0, sx1))
        chroma = (slice(sy0 // 2, sy1 // 2), slice(sx0 // 2, sx1 // 2))
        y_plane, u_plane, v_plane = target
        y_dest = y_plane[y0:y1, x0:x1]
        u_dest = u_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
        v_dest = v_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
        if planes.opaque:
            y_dest[...] = planes.y[luma]
            u_dest[...] = planes.u[chroma]
            v_dest[...] = planes.v[chroma]
            return
        if planes.y_inv_alpha is None or planes.c_inv_alpha is None:
            raise RuntimeError("a translucent sprite without alpha planes")  # cannot happen
        _blend(y_dest, planes.y[luma], planes.y_inv_alpha[luma])
        _blend(u_dest, planes.u[chroma], planes.c_inv_alpha[chroma])
        _blend(v_dest, planes.v[chroma], planes.c_inv_alpha[chroma])
