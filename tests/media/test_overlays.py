"""Watermark overlays, checked by content on synthetic mid-grey yuv420p planes."""

from __future__ import annotations

import math
import os
import tracemalloc

import av
import numpy as np
import pytest
from PIL import Image

from gateway.media.fonts import find_font, find_font_face, load_font
from gateway.media.layout.model import (
    Canvas,
    ImageWatermark,
    TextWatermark,
    TimestampWatermark,
    Watermarks,
)
from gateway.media.overlays import (
    OverlayPlane,
    OverlayRenderer,
    WatermarkError,
    fill_rect,
    rgb_to_yuv,
    text_padding,
)

GREY = 128
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def planes(width: int = 640, height: int = 360) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = np.full((height // 2, width // 2), GREY, np.uint8)
    return np.full((height, width), GREY, np.uint8), u, u.copy()


def render(watermarks: Watermarks, canvas: Canvas | None = None, images: dict[str, Image.Image] | None = None,
           now: float = T0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    canvas = canvas or Canvas(width=640, height=360)
    renderer = OverlayRenderer(watermarks, canvas, lambda file_id: (images or {})[file_id])
    y, u, v = planes(canvas.width, canvas.height)
    renderer.blend(y, u, v, now=now)
    return y, u, v


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) exclusive of the True pixels."""
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def near(plane: np.ndarray, value: float, tol: float) -> np.ndarray:
    return np.abs(plane.astype(np.int32) - value) <= tol


def text(value: str, **kw: object) -> Watermarks:
    return Watermarks(texts=[TextWatermark(text=value, **kw)])


def ink(value: str, font: str | None = None) -> np.ndarray:
    """Pixels a white caption without a box changes."""
    y, _, _ = render(text(value, x=10, y=10, size=32, color="FFFFFF", font=font))
    return y != GREY


# -- colour conversion ------------------------------------------------------------------------

@pytest.mark.parametrize("rgb", [RED, GREEN, BLUE, (255, 255, 255), (0, 0, 0), (128, 128, 128),
                                 (255, 136, 0), (17, 200, 90), (90, 30, 160)])
def test_rgb_to_yuv_matches_swscale(rgb: tuple[int, int, int]) -> None:
    solid = np.empty((16, 16, 3), np.uint8)
    solid[:] = rgb
    frame = av.VideoFrame.from_ndarray(solid, format="rgb24").reformat(format="yuv420p")
    ref_y, ref_u, ref_v = (int(np.median(p.reshape(-1))) for p in np.split(frame.to_ndarray(), [16, 20]))
    y, u, v = rgb_to_yuv(*rgb)
    assert max(abs(y - ref_y), abs(u - ref_u), abs(v - ref_v)) <= 2, ((y, u, v), (ref_y, ref_u, ref_v))


def test_fill_rect_fills_only_the_rectangle() -> None:
    y, u, v = planes()
    fill_rect(y, u, v, 10, 20, 30, 40, RED)
    ry, ru, rv = rgb_to_yuv(*RED)
    assert bbox(y != GREY) == (10, 20, 40, 60) and (y[20:60, 10:40] == ry).all()
    assert bbox(u != GREY) == (5, 10, 20, 30)
    assert (u[10:30, 5:20] == ru).all() and (v[10:30, 5:20] == rv).all()
    fill_rect(y, u, v, 620, 340, 100, 100, BLUE)  # clipped, no error
    assert (y[340:, 620:] == rgb_to_yuv(*BLUE)[0]).all()


# -- text -------------------------------------------------------------------------------------

def test_text_with_box_changes_only_its_box() -> None:
    caption, size, x0, y0 = "Mediagate HH", 40, 100, 60
    y, u, v = render(text(caption, x=x0, y=y0, size=size, color="FF0000", background="0000FF"))

    path, index = find_font_face()
    font = load_font(path, size, index)
    pad = text_padding(size)
    ascent, descent = font.getmetrics()
    x1, y1 = x0 + math.ceil(font.getlength(caption)) + 2 * pad, y0 + ascent + descent + 2 * pad
    cx0, cy0, cx1, cy1 = bbox(y != GREY)
    assert (cx0, cy0) == (x0, y0)
    assert abs(cx1 - x1) <= 3 and abs(cy1 - y1) <= 3, ((cx1, cy1), (x1, y1))

    # outside the box nothing moved, in luma or chroma
    outside = np.ones(y.shape, bool)
    outside[cy0:cy1, cx0:cx1] = False
    assert (y[outside] == GREY).all()
    chroma_outside = np.ones(u.shape, bool)
    chroma_outside[cy0 // 2:(cy1 + 1) // 2, cx0 // 2:(cx1 + 1) // 2] = False
    assert (u[chroma_outside] == GREY).all() and (v[chroma_outside] == GREY).all()

    # the padding strip is pure box colour; the text is red somewhere inside
    by, bu, bv = rgb_to_yuv(*BLUE)
    strip = (slice(cy0, cy0 + 2), slice(cx0, cx1 - 1))
    assert near(y[strip], by, 3).all()
    chroma_strip = (cy0 // 2, slice(cx0 // 2, cx1 // 2))
    assert near(u[chroma_strip], bu, 3).all() and near(v[chroma_strip], bv, 3).all()
    ry, ru, rv = rgb_to_yuv(*RED)
    chroma_box = (slice(cy0 // 2, cy1 // 2), slice(cx0 // 2, cx1 // 2))
    assert near(y[cy0:cy1, cx0:cx1], ry, 6).sum() > 100
    assert (near(u[chroma_box], ru, 6) & near(v[chroma_box], rv, 6)).any()


def test_text_alpha_half_blends_halfway() -> None:
    y, u, v = render(text("Half", x=40, y=40, size=32, color="FF0000", background="0000FF", alpha=0.5))
    by, bu, bv = rgb_to_yuv(*BLUE)
    assert near(y[40:42, 40:60], (GREY + by) / 2, 3).all()
    assert near(u[20, 20:30], (GREY + bu) / 2, 3).all() and near(v[20, 20:30], (GREY + bv) / 2, 3).all()


def test_text_at_odd_position_keeps_exact_luma_placement() -> None:
    y, _, _ = render(text("Odd", x=101, y=51, size=24, background="000000"))
    assert bbox(y != GREY)[:2] == (101, 51)


def test_text_is_clipped_to_the_canvas() -> None:
    y, u, _ = render(text("edge of the canvas", x=600, y=340, size=32, background="FF0000"))
    assert bbox(y != GREY) == (600, 340, 640, 360)
    assert bbox(u != GREY) == (300, 170, 320, 180)


def test_cjk_text_renders_real_glyphs() -> None:
    cjk, latin = ink("会议 直播 テスト"), ink("Live Meeting Test")
    assert 0.5 < cjk.sum() / latin.sum() < 3
    # distinct characters give distinct glyphs; a font without them draws the same "tofu" box
    glyphs = [ink(char) for char in "会议直播テ"]
    assert all((a ^ b).sum() > 50 for i, a in enumerate(glyphs) for b in glyphs[i + 1:])
    if os.path.isfile(DEJAVU):  # show the check really catches tofu
        tofu = [ink(char, font=DEJAVU) for char in "会议直"]
        assert (tofu[0] == tofu[1]).all() and (tofu[1] == tofu[2]).all()


# -- images -----------------------------------------------------------------------------------

def test_image_fit_keeps_transparent_bars() -> None:
    wide = Image.new("RGB", (200, 100), RED)
    mark = ImageWatermark(file_id="logo", x=40, y=40, w=100, h=100, scale="fit")
    y, u, _ = render(Watermarks(images=[mark]), images={"logo": wide})
    ry, ru, _ = rgb_to_yuv(*RED)
    assert bbox(y != GREY) == (40, 65, 140, 115)  # 100x50 centred in 100x100: 25-row bars
    assert (y[40:65, 40:140] == GREY).all() and (y[115:140, 40:140] == GREY).all()
    assert near(y[65:115, 40:140], ry, 3).all()
    assert (u[20:32, 20:70] == GREY).all() and near(u[33:57, 20:70], ru, 3).all()


def test_image_fill_crops_and_alphas_multiply() -> None:
    half = Image.new("RGBA", (300, 100), (*GREEN, 128))
    y, _, _ = render(Watermarks(images=[ImageWatermark(file_id="a", x=20, y=20, w=60, h=60, scale="fill",
                                                       alpha=0.5)]), images={"a": half})
    assert bbox(y != GREY) == (20, 20, 80, 80)  # no bars
    gy = rgb_to_yuv(*GREEN)[0]
    assert near(y[20:80, 20:80], GREY + (gy - GREY) * 0.25, 3).all()


def test_fraction_units_land_on_canvas_pixels() -> None:
    wm = Watermarks(
        images=[ImageWatermark(file_id="g", x=0.5, y=0.25, w=0.25, h=0.5, units="fraction", scale="stretch")],
        texts=[TextWatermark(text="frac", x=0.125, y=0.75, units="fraction", size=20, background="000000")],
    )
    y, _, _ = render(wm, images={"g": Image.new("RGB", (7, 3), GREEN)})
    assert (y[90:270, 320:480] == rgb_to_yuv(*GREEN)[0]).all()
    assert (y[:90, 300:] == GREY).all() and (y[270:, 320:] == GREY).all() and (y[90:270, 480:] == GREY).all()
    assert bbox(y[:, :300] != GREY)[:2] == (80, 270)


def test_image_load_failure_names_the_watermark() -> None:
    def load(file_id: str) -> Image.Image:
        if file_id == "missing":
            raise FileNotFoundError(file_id)
        return Image.new("RGB", (4, 4))

    wm = Watermarks(images=[ImageWatermark(file_id=name, w=10, h=10) for name in ("ok", "missing")])
    with pytest.raises(WatermarkError, match=r"watermarks\.images\[1\].*missing") as info:
        OverlayRenderer(wm, Canvas(width=640, height=360), load)
    assert info.value.where == "watermarks.images[1]"


def test_opaque_plane_takes_the_copy_path_and_transparent_plane_is_empty() -> None:
    opaque = OverlayPlane.from_rgba(Image.new("RGB", (10, 10), RED), 4, 4, 64, 64)
    clear = OverlayPlane.from_rgba(Image.new("RGBA", (10, 10), (0, 0, 0, 0)), 4, 4, 64, 64)
    assert opaque.opaque and clear.h == 0
    y, u, v = planes(64, 64)
    opaque.blend(y, u, v)
    clear.blend(y, u, v)
    assert bbox(y != GREY) == (4, 4, 14, 14) and (y[4:14, 4:14] == rgb_to_yuv(*RED)[0]).all()


# -- timestamp --------------------------------------------------------------------------------

def test_timestamp_rerenders_only_when_its_text_changes() -> None:
    canvas = Canvas(width=640, height=360)
    clock = OverlayRenderer(Watermarks(timestamp=TimestampWatermark(format="%H:%M:%S", utc=True, x=10, y=10)),
                            canvas, lambda _: Image.new("RGB", (1, 1)))
    frames = []
    for now in (T0 + 0.1, T0 + 0.5, T0 + 0.99, T0 + 1.0, T0 + 1.7):
        y, u, v = planes()
        clock.blend(y, u, v, now=now)
        frames.append(y)
        if now == T0 + 0.1:
            assert clock.timestamp_renders == 1
    assert clock.timestamp_renders == 2
    assert (frames[0] == frames[2]).all() and (frames[3] == frames[4]).all()
    assert not (frames[2] == frames[3]).all()

    minutes = OverlayRenderer(Watermarks(timestamp=TimestampWatermark(format="%Y-%m-%d %H:%M", utc=True)),
                              canvas, lambda _: Image.new("RGB", (1, 1)))
    y, u, v = planes()
    for second in range(30):  # T0 is hh:13:20: the minute turns at +40 s
        minutes.blend(y, u, v, now=T0 + second)
    assert minutes.timestamp_renders == 1
    minutes.blend(y, u, v, now=T0 + 40)
    assert minutes.timestamp_renders == 2


# -- cost -------------------------------------------------------------------------------------

def test_blend_on_720p_touches_only_the_caption() -> None:
    canvas = Canvas(width=1280, height=720)
    renderer = OverlayRenderer(text("Live 直播 2024 conference", x=500, y=300, size=26, background="203060"),
                               canvas, lambda _: Image.new("RGB", (1, 1)))
    (plane,) = renderer.planes
    assert plane.w * plane.h <= 340 * 50, (plane.w, plane.h)
    y, u, v = planes(1280, 720)
    before = y.copy(), u.copy(), v.copy()
    renderer.blend(y, u, v)  # warm-up
    y, u, v = (p.copy() for p in before)
    tracemalloc.start()
    renderer.blend(y, u, v)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8_192, peak  # scratch buffers are preallocated; a full luma plane is 921,600 bytes
    rect = (slice(plane.y, plane.y + plane.h), slice(plane.x, plane.x + plane.w))
    crect = (slice(plane.y // 2, (plane.y + plane.h) // 2), slice(plane.x // 2, (plane.x + plane.w) // 2))
    for after, orig, area in ((y, before[0], rect), (u, before[1], crect), (v, before[2], crect)):
        changed = after != orig
        assert changed[area].any()
        changed[area] = False
        assert not changed.any()


# -- fonts ------------------------------------------------------------------------------------

def test_find_font() -> None:
    path = find_font()
    assert os.path.isfile(path)
    assert find_font_face("", "NotoSansCJK") == find_font_face()  # the vendor's spelling means the default
    with pytest.raises(ValueError, match=r"/nonexistent/font\.ttf"):
        find_font("/nonexistent/font.ttf")
    with pytest.raises(ValueError, match=r"/nonexistent/other\.otf"):
        find_font("", "/nonexistent/other.otf")
    if os.path.isfile(DEJAVU):
        assert find_font("", DEJAVU) == DEJAVU
    with pytest.raises(WatermarkError, match=r"watermarks\.texts\[0\]"):
        OverlayRenderer(text("x", font="/nonexistent/font.ttf"), Canvas(), lambda _: Image.new("RGB", (1, 1)))
