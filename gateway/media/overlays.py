"""Watermarks (images, texts, a clock) blended straight into the compositor's yuv420p planes.

Everything static is converted once, when the layout is set, into :class:`OverlayPlane`
objects: premultiplied Y/U/V contributions plus alpha in 8.8 fixed point, trimmed to the
pixels that actually cover something. Per frame a plane costs a multiply, an add and a shift
in uint16 over its own rectangle, into preallocated scratch buffers, so a 300x40 caption
costs the same on a 720p canvas as on a 4K one. The timestamp is re-rendered only when its
text changes.

Colours use BT.601 limited range, what libswscale (and so x264 via PyAV) uses by default for
rgb24 -> yuv420p, so a watermark colour matches the same colour decoded from a camera.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from gateway.media.fonts import find_font_face, load_font
from gateway.media.layout.model import (
    Canvas,
    ImageWatermark,
    TextWatermark,
    TimestampWatermark,
    Watermarks,
    parse_color,
)

RGB = tuple[int, int, int]

# BT.601 limited range: rows give Y, U, V from R, G, B in 0..255
_RGB_TO_YUV = np.array([
    [65.481, 128.553, 24.966],
    [-37.797, -74.203, 112.0],
    [112.0, -93.786, -18.214],
], dtype=np.float32) / 255.0
_YUV_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float32)
_ONE = 256  # fixed-point 1.0 for alpha


class WatermarkError(ValueError):
    """A watermark that cannot be drawn; ``where`` names it like the layout validator does."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def rgb_to_yuv(r: int, g: int, b: int) -> tuple[int, int, int]:
    """One RGB colour as BT.601 limited-range (Y, U, V), as swscale converts it."""
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


def fill_rect(y: np.ndarray, u: np.ndarray, v: np.ndarray, x: int, y0: int, w: int, h: int, rgb: RGB) -> None:
    """Fill a luma rectangle with a solid colour, clipped to the planes.

    Chroma covers every 2x2 block the rectangle touches, so odd edges also tint the
    neighbouring pixel's chroma; keep rectangles even (as layouts do) to avoid that.
    """
    x0, x1 = max(x, 0), min(x + w, y.shape[1])
    top, bottom = max(y0, 0), min(y0 + h, y.shape[0])
    if x1 <= x0 or bottom <= top:
        return
    yy, uu, vv = rgb_to_yuv(*rgb)
    y[top:bottom, x0:x1] = yy
    chroma = (slice(top // 2, (bottom + 1) // 2), slice(x0 // 2, (x1 + 1) // 2))
    u[chroma] = uu
    v[chroma] = vv


class OverlayPlane:
    """A premultiplied overlay for one rectangle of a yuv420p canvas, at even x, y, w, h.

    ``alpha_y`` (h x w) and ``alpha_c`` (h/2 x w/2) are alpha in 1/256 steps; ``pre_y``,
    ``pre_u``, ``pre_v`` are alpha * value (+128 for rounding). ``blend`` computes
    ``dst = (dst * (256 - a) + pre) >> 8`` in uint16: with limited-range values
    (Y <= 235, U/V <= 240) that never exceeds 65535. Not thread-safe (shared scratch buffers).
    """

    def __init__(self, x: int, y: int, rgb: np.ndarray, alpha: np.ndarray) -> None:
        """``rgb`` (h x w x 3, 0..255) and ``alpha`` (h x w, 0..1) already clipped, even-sized
        and placed at even (x, y)."""
        a = np.rint(alpha * _ONE).astype(np.uint16)
        rows, cols = np.nonzero(a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).any(axis=(1, 3)))
        if rows.size == 0:  # fully transparent: nothing to do per frame
            self.x, self.y, self.w, self.h = x, y, 0, 0
            self.opaque = False
            return
        # trim to the covering pixels, on whole 2x2 blocks to keep chroma aligned
        r0, r1, c0, c1 = 2 * rows.min(), 2 * rows.max() + 2, 2 * cols.min(), 2 * cols.max() + 2
        a, rgb = a[r0:r1, c0:c1], rgb[r0:r1, c0:c1]
        self.x, self.y, self.h, self.w = x + int(c0), y + int(r0), int(r1 - r0), int(c1 - c0)

        yuv = np.rint(rgb.astype(np.float32) @ _RGB_TO_YUV.T + _YUV_OFFSET)
        yuv = np.clip(yuv, 0, 255).astype(np.uint16)
        self.opaque = bool((a == _ONE).all())
        if self.opaque:
            self.y8 = yuv[..., 0].astype(np.uint8)
            self.u8 = _box(yuv[..., 1].astype(np.uint32), self.h, self.w, avg=True).astype(np.uint8)
            self.v8 = _box(yuv[..., 2].astype(np.uint32), self.h, self.w, avg=True).astype(np.uint8)
            return
        self.alpha_y = a
        self.inv_y = _ONE - a
        self.pre_y = a * yuv[..., 0] + 128
        # chroma: average alpha and alpha*value over each 2x2 block (premultiplied, so exact)
        a32 = a.astype(np.uint32)
        sum_a = _box(a32, self.h, self.w)
        self.alpha_c = ((sum_a + 2) >> 2).astype(np.uint16)
        self.inv_c = _ONE - self.alpha_c
        cap = self.alpha_c.astype(np.uint32) * 240  # rounding must not push a*value past the bound
        self.pre_u, self.pre_v = (
            (np.minimum((_box(a32 * yuv[..., k], self.h, self.w) + 2) >> 2, cap) + 128).astype(np.uint16)
            for k in (1, 2)
        )
        self._scratch_y = np.empty((self.h, self.w), np.uint16)
        self._scratch_c = np.empty((self.h // 2, self.w // 2), np.uint16)

    @classmethod
    def from_rgba(cls, image: Image.Image | np.ndarray, x: int, y: int, canvas_w: int, canvas_h: int,
                  alpha: float = 1.0) -> OverlayPlane:
        """An RGBA (or RGB) image with its top-left at (x, y), clipped to the canvas; ``alpha``
        multiplies the image's own alpha."""
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGBA"))
        if image.shape[2] == 3:
            coverage = np.full(image.shape[:2], alpha, np.float32)
        else:
            coverage = image[..., 3].astype(np.float32) * (alpha / 255.0)
        return cls.from_arrays(image[..., :3], coverage, x, y, canvas_w, canvas_h)

    @classmethod
    def from_arrays(cls, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int, canvas_w: int,
                    canvas_h: int) -> OverlayPlane:
        """Colour (h x w x 3) and coverage (h x w, 0..1) at any (x, y): clip, then pad with
        transparent pixels to even position and size so luma placement stays exact."""
        h, w = alpha.shape
        left, top = max(0, -x), max(0, -y)
        right, bottom = min(w, canvas_w - x), min(h, canvas_h - y)
        if right <= left or bottom <= top:
            return cls(0, 0, np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.float32))
        rgb, alpha = rgb[top:bottom, left:right], alpha[top:bottom, left:right]
        x, y = x + left, y + top
        pad_left, pad_top = x & 1, y & 1
        pad_right = (pad_left + alpha.shape[1]) & 1
        pad_bottom = (pad_top + alpha.shape[0]) & 1
        if pad_left or pad_top or pad_right or pad_bottom:
            pads = ((pad_top, pad_bottom), (pad_left, pad_right))
            rgb = np.pad(rgb, (*pads, (0, 0)))
            alpha = np.pad(alpha, pads)
        return cls(x - pad_left, y - pad_top, rgb, alpha)

    def blend(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        """Draw into the planes in place; touches only this plane's rectangle."""
        if self.h == 0:
            return
        luma = y[self.y:self.y + self.h, self.x:self.x + self.w]
        cy, cx = self.y // 2, self.x // 2
        cu = u[cy:cy + self.h // 2, cx:cx + self.w // 2]
        cv = v[cy:cy + self.h // 2, cx:cx + self.w // 2]
        if luma.shape != (self.h, self.w) or cu.shape != (self.h // 2, self.w // 2):
            raise ValueError(f"planes {y.shape} are smaller than the canvas this overlay was built for")
        if self.opaque:
            luma[...] = self.y8
            cu[...] = self.u8
            cv[...] = self.v8
            return
        _mix(luma, self.inv_y, self.pre_y, self._scratch_y)
        _mix(cu, self.inv_c, self.pre_u, self._scratch_c)
        _mix(cv, self.inv_c, self.pre_v, self._scratch_c)


def _box(values: np.ndarray, h: int, w: int, avg: bool = False) -> np.ndarray:
    """Sum (or rounded mean) of each 2x2 block."""
    total = values.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    return (total + 2) >> 2 if avg else total


def _mix(dst: np.ndarray, inv: np.ndarray, pre: np.ndarray, scratch: np.ndarray) -> None:
    # widen into the scratch first: a mixed-type ufunc would allocate a cast buffer per call
    np.copyto(scratch, dst)
    scratch *= inv
    scratch += pre
    scratch >>= 8
    np.copyto(dst, scratch, casting="unsafe")


# -- rendering: text, images ---------------------------------------------------------------

def text_padding(size: int) -> int:
    """Space between the text and the edge of its background box."""
    return max(2, round(size * 0.2))


def render_text(text: str, font: ImageFont.FreeTypeFont, color: RGB, background: RGB | None,
                alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(rgb h x w x 3 float32, coverage h x w float32) for ``text``: the box is the widest
    line's advance by the font's line height per line, plus padding on every side; the text
    sits inside the padding whether or not the box is filled, so toggling it does not move text."""
    pad = text_padding(int(font.size))
    ascent, descent = font.getmetrics()
    line_height = ascent + descent  # from metrics, not ink, so a ticking clock's box keeps its height
    lines = text.split("\n")
    boxes = [font.getbbox(line, anchor="la") for line in lines]
    left = min(0, *(box[0] for box in boxes))
    top = min(0, *(i * line_height + box[1] for i, box in enumerate(boxes)))
    right = max(0, *(box[2] for box in boxes))
    bottom = max(len(lines) * line_height, *(i * line_height + box[3] for i, box in enumerate(boxes)))
    ox, oy = pad - left, pad - top
    mask = Image.new("L", (ox + right + pad, oy + bottom + pad), 0)
    draw = ImageDraw.Draw(mask)
    for i, line in enumerate(lines):
        draw.text((ox, oy + i * line_height), line, font=font, fill=255, anchor="la")
    ink = np.asarray(mask, dtype=np.float32) / 255.0
    fg = np.asarray(color, dtype=np.float32)
    if background is None:
        rgb = np.broadcast_to(fg, (*ink.shape, 3))
        return rgb, ink * alpha
    # text over its box first, then the whole box at the watermark's alpha
    bg = np.asarray(background, dtype=np.float32)
    rgb = bg + (fg - bg) * ink[..., None]
    return rgb, np.full(ink.shape, alpha, np.float32)


def scale_image(image: Image.Image, w: int, h: int, mode: Literal["fit", "fill", "stretch"]) -> Image.Image:
    """RGBA image of exactly w x h: ``fit`` letterboxes with transparent bars, ``fill`` crops
    centred, ``stretch`` ignores the aspect ratio."""
    image = ImageOps.exif_transpose(image).convert("RGBA")  # phone photos carry their rotation in EXIF
    resample = Image.Resampling.LANCZOS  # Pillow resamples RGBA premultiplied: no dark fringes
    if mode == "stretch":
        return image.resize((w, h), resample)
    if mode == "fill":
        return ImageOps.fit(image, (w, h), resample, centering=(0.5, 0.5))
    inner = ImageOps.contain(image, (w, h), resample)
    boxed = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    boxed.paste(inner, ((w - inner.width) // 2, (h - inner.height) // 2))
    return boxed


def _px(value: float, units: str, extent: int) -> int:
    return round(value * extent if units == "fraction" else value)


# -- the renderer ----------------------------------------------------------------------------

class _Clock:
    """The timestamp watermark: formatted per frame only when the second changes, rendered
    only when the text changes."""

    def __init__(self, mark: TimestampWatermark, canvas: Canvas, font: ImageFont.FreeTypeFont) -> None:
        self.mark, self.canvas, self.font = mark, canvas, font
        self.x, self.y = _px(mark.x, mark.units, canvas.width), _px(mark.y, mark.units, canvas.height)
        self.color = parse_color(mark.color)
        self.background = parse_color(mark.background) if mark.background else None
        self.tz = UTC if mark.utc else None
        self.every_frame = "%f" in mark.format  # microseconds: the text changes within a second
        self.renders = 0
        self._second: int | None = None
        self._text: str | None = None
        self._plane = OverlayPlane.from_arrays(  # placeholder until the first frame
            np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), np.float32), 0, 0, 0, 0)

    def plane_at(self, now: float) -> OverlayPlane:
        second = int(now // 1)
        if second != self._second or self.every_frame:
            self._second = second
            stamp = datetime.fromtimestamp(now, self.tz)
            text = (stamp if self.tz else stamp.astimezone()).strftime(self.mark.format)
            if text != self._text:
                self._text = text
                rgb, alpha = render_text(text, self.font, self.color, self.background, self.mark.alpha)
                self._plane = OverlayPlane.from_arrays(rgb, alpha, self.x, self.y,
                                                       self.canvas.width, self.canvas.height)
                self.renders += 1
        return self._plane


class OverlayRenderer:
    """All watermarks of one layout, ready to blend into every composed frame.

    Build it when the layout changes (fonts, images and text are rendered here), then call
    :meth:`blend` once per frame. ``load_image`` maps an uploaded file_id to a Pillow image;
    ``font_path`` is the node's ``media.font`` ("" searches for Noto Sans CJK).
    """

    def __init__(self, watermarks: Watermarks, canvas: Canvas, load_image: Callable[[str], Image.Image],
                 font_path: str = "") -> None:
        self.canvas = canvas
        self.planes: list[OverlayPlane] = []  # images first, then texts: the drawing order
        for index, mark in enumerate(watermarks.images):
            where = f"watermarks.images[{index}]"
            try:
                image = load_image(mark.file_id)
                if not isinstance(image, Image.Image):
                    raise TypeError(f"loader returned {type(image).__name__}, not an image")
                self.planes.append(self._image_plane(mark, image))
            except Exception as exc:
                raise WatermarkError(where, f"cannot use image {mark.file_id!r}: {exc}") from exc
        for index, text in enumerate(watermarks.texts):
            font = self._font(f"watermarks.texts[{index}]", text, font_path)
            self.planes.append(self._text_plane(text, font))
        self.clock: _Clock | None = None
        if watermarks.timestamp is not None:
            font = self._font("watermarks.timestamp", watermarks.timestamp, font_path)
            try:  # a bad format must fail here (a 400), not in the frame loop
                datetime.now().strftime(watermarks.timestamp.format)
            except ValueError as exc:
                raise WatermarkError("watermarks.timestamp", f"format: {exc}") from exc
            self.clock = _Clock(watermarks.timestamp, canvas, font)

    @property
    def timestamp_renders(self) -> int:
        """How many times the timestamp text was rasterised (once per visible change)."""
        return self.clock.renders if self.clock else 0

    def blend(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, now: float | None = None) -> None:
        """Draw every watermark into the yuv420p planes in place; ``now`` is epoch seconds."""
        for plane in self.planes:
            plane.blend(y, u, v)
        if self.clock is not None:
            self.clock.plane_at(time.time() if now is None else now).blend(y, u, v)

    def _image_plane(self, mark: ImageWatermark, image: Image.Image) -> OverlayPlane:
        cw, ch = self.canvas.width, self.canvas.height
        x, y = _px(mark.x, mark.units, cw), _px(mark.y, mark.units, ch)
        w = max(1, _px(mark.w, mark.units, cw))
        h = max(1, _px(mark.h, mark.units, ch))
        return OverlayPlane.from_rgba(scale_image(image, w, h, mark.scale), x, y, cw, ch, mark.alpha)

    def _text_plane(self, mark: TextWatermark, font: ImageFont.FreeTypeFont) -> OverlayPlane:
        background = parse_color(mark.background) if mark.background else None
        rgb, alpha = render_text(mark.text, font, parse_color(mark.color), background, mark.alpha)
        x = _px(mark.x, mark.units, self.canvas.width)
        y = _px(mark.y, mark.units, self.canvas.height)
        return OverlayPlane.from_arrays(rgb, alpha, x, y, self.canvas.width, self.canvas.height)

    @staticmethod
    def _font(where: str, mark: TextWatermark | TimestampWatermark, font_path: str) -> ImageFont.FreeTypeFont:
        try:
            path, index = find_font_face(font_path, mark.font)
            return load_font(path, mark.size, index)
        except (OSError, ValueError) as exc:
            raise WatermarkError(where, f"font: {exc}") from exc
