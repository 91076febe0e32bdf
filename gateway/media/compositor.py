"""The compositor: one yuv420p picture of the canvas from the room's video tracks.

Every ``render`` composes straight into the planes of the output frame, so there is no
canvas-to-frame copy: the pre-rendered background is copied in (skipped when opaque regions
cover the canvas), then each region is drawn in z order: the source's latest frame, cropped by
numpy slicing and scaled by swscale (PyAV), pasted with a plane copy or an integer alpha
blend; a placeholder when the source has no picture; then the overlays. Output frames come from
a small pool and are reused once no one references them. Scaled pictures are cached per
(source frame, size, crop, fit), so an unchanged source costs one plane copy and a source that
already has the region's size is never rescaled. Python work per frame is O(regions); pixels
are only touched by numpy and swscale, which release the GIL.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
import structlog
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw

from gateway.media.bus import FrameBus
from gateway.media.fonts import find_font_face, load_font
from gateway.media.layout.model import Background, Canvas, parse_color
from gateway.media.layout.placed import PlacedRegion
from gateway.media.overlays import OverlayRenderer, fill_rect, rgb_to_yuv, scale_image
from gateway.media.track import Track, TrackKind, TrackSource, VideoSubscription

log = structlog.get_logger(__name__)

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]
# a plane is an array, or one int for a solid colour (numpy broadcasts it when pasting)
PlaneData = np.ndarray | int
BLACK_YUV = (16, 128, 128)
NAME_CARD_RGB = (48, 48, 48)
_ONE = 256  # alpha in 1/256 steps


def plane_views(frame: av.VideoFrame) -> Planes:
    """Numpy views (no copy) of a yuv420p frame's Y, U, V planes, without line padding."""
    views = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        views.append(rows[:, :plane.width])
    return views[0], views[1], views[2]


def rgb_to_frame(rgb: np.ndarray) -> av.VideoFrame:
    """An (h, w, 3) uint8 RGB image as a yuv420p frame (swscale, BT.601 like the cameras)."""
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
        format="yuv420p", threads=1)


@dataclass
class _Picture:
    """Something to paste at (x, y) of the canvas: w x h luma, half-size chroma."""

    x: int
    y: int
    w: int
    h: int
    y_data: PlaneData
    u_data: PlaneData
    v_data: PlaneData
    keep: object = None  # the frame the views point into


def _solid(x: int, y: int, w: int, h: int, rgb: tuple[int, int, int] | None) -> _Picture:
    yy, uu, vv = rgb_to_yuv(*rgb) if rgb is not None else BLACK_YUV
    return _Picture(x, y, w, h, yy, uu, vv)


def _from_frame(frame: av.VideoFrame, x: int, y: int) -> _Picture:
    py, pu, pv = plane_views(frame)
    return _Picture(x, y, frame.width, frame.height, py, pu, pv, keep=frame)


class _FramePool:
    """Output frames, reused once nobody holds them any more. A fresh canvas-sized buffer
    comes straight from mmap and costs a page fault per 4 KB on first write (about 0.4 ms
    for 720p, more than the whole composite of a 2x2 grid)."""

    def __init__(self, width: int, height: int, size: int = 6) -> None:
        self.width, self.height, self.size = width, height, size
        self._frames: list[av.VideoFrame] = []

    def get(self) -> av.VideoFrame:
        for frame in self._frames:
            # 3 = this list, the loop variable and getrefcount's argument: no one else has it
            if sys.getrefcount(frame) <= 3:
                frame.make_writable()  # copies only if libav code still shares the buffer
                return frame
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        if len(self._frames) < self.size:
            self._frames.append(frame)
        return frame


@dataclass
class _Source:
    """One (participant, camera|screen) a region shows, subscribed while a region needs it."""

    participant_id: str
    kind: str
    track: Track | None = None
    sub: VideoSubscription | None = None
    last: tuple[av.VideoFrame, int] | None = None  # for placeholder "last"

    def unsubscribe(self) -> None:
        if self.track is not None and self.sub is not None:
            self.track.unsubscribe(self.sub)
        self.track, self.sub = None, None


@dataclass
class _RegionState:
    """Per-region caches: the scaled picture of the last source frame, the placeholder."""

    scaler: VideoReformatter = field(default_factory=VideoReformatter)
    key: tuple[object, ...] | None = None
    pictures: list[_Picture] = field(default_factory=list)
    placeholder: list[_Picture] | None = None
    scratch: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict)


class Compositor:
    """Draws a canvas from placed regions. ``set_*`` may be called from any thread; ``render``
    runs on one thread (the composition's worker)."""

    def __init__(self, canvas: Canvas, bus: FrameBus,
                 load_image: Callable[[str], Image.Image] | None = None, font_path: str = "") -> None:
        self.canvas = canvas
        self.bus = bus
        self.load_image = load_image
        self.font_path = font_path
        self._regions: tuple[PlacedRegion, ...] = ()
        self._overlays: OverlayRenderer | None = None
        self._background: Planes = self._render_background(canvas.background)
        self._background_version = 0  # part of the picture cache key: bars are views of it
        self._sources: dict[tuple[str, str], _Source] = {}
        self._states: dict[PlacedRegion, _RegionState] = {}
        self._synced: tuple[PlacedRegion, ...] | None = None
        self._covered = False  # opaque regions hide the whole background: skip copying it
        self._pool = _FramePool(canvas.width, canvas.height)
        self._tracks_changed = True
        self._unlisten = bus.listen(self._on_bus)
        self.frames = 0
        self.rescales = 0  # swscale calls for region pictures (a cache miss that needed scaling)

    # ---------------------------------------------------------------- configuration
    def set_regions(self, regions: list[PlacedRegion]) -> None:
        """Takes effect at the next render (one atomic swap, no lock on the render path)."""
        self._regions = tuple(sorted(regions, key=lambda r: r.z))  # stable: equal z keep list order

    def set_background(self, background: Background) -> None:
        self._background = self._render_background(background)
        self._background_version += 1

    def set_overlays(self, renderer: OverlayRenderer | None) -> None:
        self._overlays = renderer

    def close(self) -> None:
        """Stop following the bus and drop every subscription; call it once rendering stopped."""
        self._unlisten()
        for source in self._sources.values():
            source.unsubscribe()
        self._sources.clear()
        self._states.clear()

    def _on_bus(self, _event: str, track: Track) -> None:
        if track.kind is TrackKind.VIDEO:
            self._tracks_changed = True  # runs on the publisher's thread: just flag it

    # ---------------------------------------------------------------- rendering
    def render(self, now: float | None = None) -> av.VideoFrame:
        """Compose one canvas-sized yuv420p frame. ``now`` (epoch seconds) is for the
        timestamp overlay; the caller stamps the frame's pts."""
        regions = self._regions
        if regions is not self._synced or self._tracks_changed:
            self._sync(regions)
        frame = self._pool.get()
        planes = plane_views(frame)
        if not self._covered:
            for dst, src in zip(planes, self._background, strict=True):
                np.copyto(dst, src)
        for region in regions:
            self._draw(region, planes)
        overlays = self._overlays
        if overlays is not None:
            overlays.blend(*planes, now=now)
        self.frames += 1
        return frame

    def _sync(self, regions: tuple[PlacedRegion, ...]) -> None:
        """Subscribe to what the regions show, drop what they no longer show, follow track
        changes on the bus."""
        self._tracks_changed = False  # first: a change during the sync flags it again
        wanted = {(r.participant_id, r.track) for r in regions if r.participant_id is not None}
        for key in list(self._sources):
            if key not in wanted:
                self._sources.pop(key).unsubscribe()
        for pid, kind in wanted:
            source = self._sources.setdefault((pid, kind), _Source(pid, kind))
            track = self.bus.find(pid, TrackKind.VIDEO, TrackSource(kind))
            if track is not source.track:
                source.unsubscribe()
                if track is not None:
                    source.track, source.sub = track, track.subscribe_video()
        self._states = {r: self._states.get(r) or _RegionState() for r in regions}
        self._covered = _covers(regions, self.canvas.width, self.canvas.height)
        self._synced = regions

    def _draw(self, region: PlacedRegion, planes: Planes) -> None:
        if region.alpha <= 0:
            return
        state = self._states[region]
        picture = self._source_frame(region)
        if picture is not None:
            pieces = self._scaled(region, state, *picture)
        else:
            if state.placeholder is None:
                state.placeholder = self._placeholder(region)
            pieces = state.placeholder
        alpha = round(region.alpha * _ONE)
        for piece in pieces:
            _paste(piece, planes, alpha, state.scratch)

    def _source_frame(self, region: PlacedRegion) -> tuple[av.VideoFrame, int] | None:
        """The picture to show: the track's latest frame, or the last one for placeholder
        "last"; None when a placeholder is due."""
        if region.participant_id is None:
            return None
        source = self._sources.get((region.participant_id, region.track))
        if source is None:
            return None
        track = source.track
        if source.sub is not None and track is not None and not (track.muted or track.closed):
            frame, seq = source.sub.latest()
            if frame is not None:
                source.last = (frame, seq)
                return frame, seq
        if region.placeholder == "last":
            return source.last
        return None

    # ---------------------------------------------------------------- geometry and scaling
    def _scaled(self, region: PlacedRegion, state: _RegionState, frame: av.VideoFrame,
                seq: int) -> list[_Picture]:
        key = (seq, region.w, region.h, region.crop, region.fit, self._background_version)
        if key == state.key:
            return state.pictures
        cx, cy, cw, ch = _crop_rect(region.crop, frame.width, frame.height)
        if region.fit == "fill":
            cx, cy, cw, ch = _cover(cx, cy, cw, ch, region.w, region.h)
            dw, dh = region.w, region.h
        else:
            dw, dh = _contain(cw, ch, region.w, region.h)
        x, y = region.x + ((region.w - dw) // 2 & ~1), region.y + ((region.h - dh) // 2 & ~1)
        whole = (cx, cy, cw, ch) == (0, 0, frame.width, frame.height)
        if (cw, ch) == (dw, dh):  # no scaling: paste straight from the source (or its slice)
            py, pu, pv = plane_views(frame)
            if not whole:
                py, pu, pv = _slice((py, pu, pv), cx, cy, cw, ch)
            picture = _Picture(x, y, dw, dh, py, pu, pv, keep=frame)
        else:
            source = frame if whole else _crop_copy(frame, cx, cy, cw, ch)
            scaled = state.scaler.reformat(source, dw, dh, interpolation="BILINEAR", threads=1)
            self.rescales += 1
            picture = _from_frame(scaled, x, y)
        pictures = [picture, *self._bars(region, picture)]
        state.key, state.pictures = key, pictures
        return pictures

    def _bars(self, region: PlacedRegion, picture: _Picture) -> list[_Picture]:
        """The letterbox around a fitted picture: the region's colour, else the background."""
        rects = [
            (region.x, region.y, region.w, picture.y - region.y),  # top
            (region.x, picture.y + picture.h, region.w, region.y + region.h - picture.y - picture.h),
            (region.x, picture.y, picture.x - region.x, picture.h),  # left
            (picture.x + picture.w, picture.y, region.x + region.w - picture.x - picture.w, picture.h),
        ]
        bars = []
        for x, y, w, h in rects:
            if w <= 0 or h <= 0:
                continue
            if region.background is not None:
                bars.append(_solid(x, y, w, h, region.background))
            else:
                by, bu, bv = _slice(self._background, x, y, w, h)
                bars.append(_Picture(x, y, w, h, by, bu, bv))
        return bars

    # ---------------------------------------------------------------- placeholders
    def _placeholder(self, region: PlacedRegion) -> list[_Picture]:
        x, y, w, h = region.x, region.y, region.w, region.h
        kind = region.placeholder
        try:
            if kind == "none":
                return []
            if kind == "image" and region.placeholder_image:
                return [_from_frame(self._image_card(region.placeholder_image, w, h, region), x, y)]
            if kind == "name":
                name = region.name or region.participant_id or ""
                return [_from_frame(self._name_card(name, w, h), x, y)]
        except Exception as exc:  # a broken image or font must not stop the composite
            log.warning("placeholder failed, drawing black", placeholder=kind, error=str(exc))
        return [_solid(x, y, w, h, None)]  # black, and "last" before any frame was seen

    def _image_card(self, file_id: str, w: int, h: int, region: PlacedRegion) -> av.VideoFrame:
        if self.load_image is None:
            raise ValueError("no image loader configured")
        rgba = scale_image(self.load_image(file_id), w, h, region.fit)
        under = Image.new("RGBA", (w, h), (*(region.background or (0, 0, 0)), 255))
        return rgb_to_frame(np.asarray(Image.alpha_composite(under, rgba).convert("RGB")))

    def _name_card(self, name: str, w: int, h: int) -> av.VideoFrame:
        """The participant's name in white, centred on dark grey, as large as fits."""
        card = Image.new("RGB", (w, h), NAME_CARD_RGB)
        if name:
            path, index = find_font_face(self.font_path)
            draw = ImageDraw.Draw(card)
            size = max(10, min(h // 6, 96))
            while True:
                font = load_font(path, size, index)
                left, top, right, bottom = draw.textbbox((0, 0), name, font=font, anchor="mm")
                if (right - left <= w * 0.9 and bottom - top <= h * 0.9) or size <= 8:
                    break
                size = max(8, int(size * 0.85))
            draw.text((w / 2, h / 2), name, font=font, fill=(255, 255, 255), anchor="mm")
        return rgb_to_frame(np.asarray(card))

    # ---------------------------------------------------------------- background
    def _render_background(self, background: Background) -> Planes:
        """Full-canvas planes of the background colour, with its image drawn over it."""
        w, h = self.canvas.width, self.canvas.height
        rgb = parse_color(background.color)
        if background.image:
            try:
                if self.load_image is None:
                    raise ValueError("no image loader configured")
                rgba = scale_image(self.load_image(background.image), w, h, background.scale)
                under = Image.new("RGBA", (w, h), (*rgb, 255))
                image = np.asarray(Image.alpha_composite(under, rgba).convert("RGB"))
                return tuple(p.copy() for p in plane_views(rgb_to_frame(image)))  # type: ignore[return-value]
            except Exception as exc:
                log.warning("background image failed, using the colour", image=background.image,
                            error=str(exc))
        planes = (np.empty((h, w), np.uint8), np.empty((h // 2, w // 2), np.uint8),
                  np.empty((h // 2, w // 2), np.uint8))
        fill_rect(*planes, 0, 0, w, h, rgb)
        return planes


# -------------------------------------------------------------------- pixel helpers
def _crop_rect(crop: tuple[int, int, int, int] | None, sw: int, sh: int) -> tuple[int, int, int, int]:
    """The source rectangle to show: the crop clamped to the frame, on even offsets (chroma)."""
    if crop is None:
        return 0, 0, sw, sh
    x, y, w, h = crop
    x, y = min(x, max(sw - 2, 0)) & ~1, min(y, max(sh - 2, 0)) & ~1
    w = min(w or sw, sw - x)
    h = min(h or sh, sh - y)
    # even sizes unless the rectangle ends at the frame's (odd) edge
    w = w if x + w == sw else max(w & ~1, 2)
    h = h if y + h == sh else max(h & ~1, 2)
    return x, y, w, h


def _cover(x: int, y: int, w: int, h: int, rw: int, rh: int) -> tuple[int, int, int, int]:
    """Shrink a source rectangle, centred, to the region's aspect ratio (fill = crop, no bars)."""
    if w * rh > h * rw:  # source wider than the region
        nw = min(w, max(2, round(h * rw / rh) & ~1))
        return x + ((w - nw) // 2 & ~1), y, nw, h
    nh = min(h, max(2, round(w * rh / rw) & ~1))
    return x, y + ((h - nh) // 2 & ~1), w, nh


def _contain(w: int, h: int, rw: int, rh: int) -> tuple[int, int]:
    """The largest even size with the source's aspect ratio inside the region (fit)."""
    scale = min(rw / w, rh / h)
    dw = min(rw, max(2, round(w * scale / 2) * 2))
    dh = min(rh, max(2, round(h * scale / 2) * 2))
    return dw, dh


def _covers(regions: tuple[PlacedRegion, ...], width: int, height: int) -> bool:
    """Whether opaque regions paint every pixel: each one always fills its whole rectangle
    (picture and letterbox, or a placeholder) unless it is translucent or "none"."""
    mask = np.zeros((height // 2, width // 2), bool)  # per 2x2 block: regions are even
    for r in regions:
        if r.alpha >= 1 and r.placeholder != "none":
            mask[r.y // 2:(r.y + r.h) // 2, r.x // 2:(r.x + r.w) // 2] = True
    return bool(mask.all())


def _slice(planes: Planes, x: int, y: int, w: int, h: int) -> Planes:
    py, pu, pv = planes
    cy, cx = slice(y // 2, (y + h + 1) // 2), slice(x // 2, (x + w + 1) // 2)
    return py[y:y + h, x:x + w], pu[cy, cx], pv[cy, cx]


def _crop_copy(frame: av.VideoFrame, x: int, y: int, w: int, h: int) -> av.VideoFrame:
    """A new frame holding a rectangle of ``frame`` (numpy slice copies; swscale cannot crop)."""
    out = av.VideoFrame(w, h, "yuv420p")
    for dst, src in zip(plane_views(out), _slice(plane_views(frame), x, y, w, h), strict=True):
        np.copyto(dst, src)
    return out


def _paste(piece: _Picture, planes: Planes, alpha: int, scratch: dict[tuple[int, ...], np.ndarray]) -> None:
    """Copy (alpha 256) or blend (dst = (src*a + dst*(256-a) + 128) >> 8) a picture into the
    canvas planes, clipped to the canvas."""
    py, pu, pv = planes
    ch, cw = py.shape
    w, h = min(piece.w, cw - piece.x), min(piece.h, ch - piece.y)
    if w <= 0 or h <= 0:
        return
    hw, hh = (w + 1) // 2, (h + 1) // 2
    cx, cy = piece.x // 2, piece.y // 2
    targets = (
        (py[piece.y:piece.y + h, piece.x:piece.x + w], piece.y_data, h, w),
        (pu[cy:cy + hh, cx:cx + hw], piece.u_data, hh, hw),
        (pv[cy:cy + hh, cx:cx + hw], piece.v_data, hh, hw),
    )
    for dst, src, rows, cols in targets:
        data = src if isinstance(src, int) else src[:rows, :cols]
        if alpha >= _ONE:
            dst[...] = data
            continue
        acc = _scratch(scratch, dst.shape, 0)
        np.multiply(dst, _ONE - alpha, out=acc, dtype=np.uint16)
        if isinstance(data, int):
            acc += np.uint16(data * alpha + 128)
        else:
            term = _scratch(scratch, dst.shape, 1)
            np.multiply(data, alpha, out=term, dtype=np.uint16)
            acc += term
            acc += np.uint16(128)
        acc >>= 8
        np.copyto(dst, acc, casting="unsafe")


def _scratch(cache: dict[tuple[int, ...], np.ndarray], shape: tuple[int, ...], slot: int) -> np.ndarray:
    buf = cache.get((*shape, slot))
    if buf is None:
        buf = cache[(*shape, slot)] = np.empty(shape, np.uint16)
    return buf
