"""Jocloud templates 1-5 and the seeds' example custom layouts (seeds 002 and 003)."""

from __future__ import annotations

import pytest

from gateway.media.layout.model import Layout
from gateway.media.layout.placed import PlacedRegion, VideoSource
from gateway.media.layout.resolve import resolve


def jocloud_layout(inputs: list[dict]) -> Layout:
    """A Jocloud mixconfig (800x600 output) translated field by field into our layout."""
    return Layout.model_validate({
        "canvas": {"width": 800, "height": 600},
        "template": "custom",
        "regions": [{
            "source": {"participant": item["uid"], "track": "camera"},
            "x": item["x"], "y": item["y"], "w": item["w"], "h": item["h"], "z": item["z"],
            # crop 0: centred with black sides (letterbox); crop 1: fill and crop
            "fit": "fit" if item["crop"] == 0 else "fill",
        } for item in inputs],
    })


@pytest.mark.parametrize(("first", "second"), [
    ("10266666", "10277777"),  # seed 002: recordoss/startrecord and updatelayout (zOrder, layoutX...)
    ("111", "222"),  # seed 003: rtmpforward/startrtmp (layer, pos_x...)
])
def test_seed_two_window_custom_layout(registry, first, second):
    layout = jocloud_layout([
        {"uid": first, "z": 0, "x": 0, "y": 0, "h": 600, "w": 400, "crop": 0},
        {"uid": second, "z": 1, "x": 400, "y": 0, "h": 600, "w": 400, "crop": 0},
    ])
    sources = [VideoSource(first, name="A"), VideoSource(second, name="B")]
    placed = resolve(layout, sources, registry)
    assert placed == [
        PlacedRegion(x=0, y=0, w=400, h=600, z=0, participant_id=first, track="camera", name="A", fit="fit"),
        PlacedRegion(x=400, y=0, w=400, h=600, z=1, participant_id=second, track="camera", name="B",
                     fit="fit"),
    ]


def test_seed_layout_z_order_sorts_bottom_first(registry):
    layout = jocloud_layout([
        {"uid": "222", "z": 1, "x": 400, "y": 0, "h": 600, "w": 400, "crop": 1},
        {"uid": "111", "z": 0, "x": 0, "y": 0, "h": 600, "w": 400, "crop": 0},
    ])
    placed = resolve(layout, [VideoSource("111"), VideoSource("222")], registry)
    assert [(r.participant_id, r.z, r.fit) for r in placed] == [("111", 0, "fit"), ("222", 1, "fill")]


def test_horizontal(place, cams, rects):
    assert rects(place("horizontal", cams(1))) == [(0, 0, 1280, 720)]
    # 4 others: quarter windows (320x180) in one row, big window above
    assert rects(place("horizontal", cams(5))) == [(0, 0, 1280, 540), *[(k * 320, 540, 320, 180)
                                                                       for k in range(4)]]
    # 2 others: still quarter size, centred
    assert rects(place("horizontal", cams(3))) == [(0, 0, 1280, 540), (320, 540, 320, 180),
                                                   (640, 540, 320, 180)]


def test_horizontal_two_rows_of_eight(place, cams, rects):
    placed = place("horizontal", cams(17))
    rows = [(k * 160, y, 160, 90) for y in (540, 630) for k in range(8)]
    assert rects(placed) == [(0, 0, 1280, 540), *rows]
    assert len(place("horizontal", cams(20))) == 17  # 1 + 2 x 8
    # 10 others: a full row of 8, then 2 centred on the second row
    assert rects(place("horizontal", cams(11)))[-2:] == [(480, 630, 160, 90), (640, 630, 160, 90)]


def test_vertical(place, cams, rects):
    assert rects(place("vertical", cams(3))) == [(0, 0, 960, 720), (960, 180, 320, 180), (960, 360, 320, 180)]
    columns = [(x, k * 90, 160, 90) for x in (960, 1120) for k in range(8)]
    assert rects(place("vertical", cams(17))) == [(0, 0, 960, 720), *columns]
    assert len(place("vertical", cams(25))) == 17


def test_tiled(place, cams, rects):
    assert rects(place("tiled", cams(1))) == [(0, 0, 1280, 720)]
    assert rects(place("tiled", cams(2))) == [(0, 0, 640, 720), (640, 0, 640, 720)]
    assert rects(place("tiled", cams(3))) == [(0, 0, 640, 360), (640, 0, 640, 360), (320, 360, 640, 360)]
    # 5: 3 x 2, one size (1280 / 3 -> 426), the short row centred
    assert rects(place("tiled", cams(5))) == [(0, 0, 426, 360), (426, 0, 426, 360), (852, 0, 426, 360),
                                              (214, 360, 426, 360), (640, 360, 426, 360)]
    assert rects(place("tiled", cams(16))) == [(x, y, 320, 180) for y in (0, 180, 360, 540)
                                               for x in (0, 320, 640, 960)]
    assert len(place("tiled", cams(20))) == 16


def test_tiled_sizes_equal(place, cams):
    for count in range(1, 17):
        assert len({(r.w, r.h) for r in place("tiled", cams(count))}) == 1


def test_corner(place, cams, rects):
    placed = place("corner", cams(5))
    # 1/4 size (320x180), 2% margins (25.6 -> 26, 14.4 -> 14): BR, BL, TR, TL
    assert rects(placed) == [(0, 0, 1280, 720), (934, 526, 320, 180), (26, 526, 320, 180),
                             (934, 14, 320, 180), (26, 14, 320, 180)]
    assert [r.z for r in placed] == [0, 1, 1, 1, 1]
    assert rects(place("corner", cams(2))) == [(0, 0, 1280, 720), (934, 526, 320, 180)]
    assert len(place("corner", cams(9))) == 5


def test_five_up(place, cams, rects):
    assert rects(place("five_up", cams(5))) == [(0, 0, 1280, 540), *[(k * 320, 540, 320, 180)
                                                                    for k in range(4)]]
    assert rects(place("five_up", cams(3))) == [(0, 0, 1280, 540), (320, 540, 320, 180),
                                                (640, 540, 320, 180)]
    assert rects(place("five_up", cams(1))) == [(0, 0, 1280, 720)]
    assert len(place("five_up", cams(8))) == 5


def test_main_named_goes_big(place, cams):
    for template in ("horizontal", "vertical", "corner", "five_up"):
        placed = place(template, cams(5), main="p3")
        big = max(placed, key=lambda r: r.w * r.h)
        assert big.participant_id == "p3", template
