"""TRTC mix layouts (seed 001 §6) at the seed's thresholds, on a 1280x720 canvas."""

from __future__ import annotations

import itertools

import pytest

from gateway.media.layout.placed import VideoSource

# grid edges per shape on 1280x720: thirds snap to even pixels (426.67 -> 426, 853.33 -> 854)
EDGES = {
    (1, 1): ([0, 1280], [0, 720]),
    (2, 1): ([0, 640, 1280], [0, 720]),
    (2, 2): ([0, 640, 1280], [0, 360, 720]),
    (3, 3): ([0, 426, 854, 1280], [0, 240, 480, 720]),
    (4, 4): ([0, 320, 640, 960, 1280], [0, 180, 360, 540, 720]),
    (5, 5): ([0, 256, 512, 768, 1024, 1280], [0, 144, 288, 432, 576, 720]),
}


def cells(shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    xs, ys = EDGES[shape]
    return [(x0, y0, x1 - x0, y1 - y0) for y0, y1 in itertools.pairwise(ys)
            for x0, x1 in itertools.pairwise(xs)]


@pytest.mark.parametrize(("count", "shape"), [
    (1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (5, (3, 3)), (9, (3, 3)),
    (10, (4, 4)), (16, (4, 4)), (17, (5, 5)), (25, (5, 5)),
])
def test_grid_thresholds(place, cams, rects, count, shape):
    placed = place("grid", cams(count))
    assert rects(placed) == cells(shape)[:count]
    assert [r.participant_id for r in placed] == [f"p{i}" for i in range(count)]  # row-major
    assert {r.z for r in placed} == {0}


def test_grid_exact_cells(place, cams, rects):
    assert rects(place("grid", cams(2))) == [(0, 0, 640, 720), (640, 0, 640, 720)]
    assert rects(place("grid", cams(3))) == [(0, 0, 640, 360), (640, 0, 640, 360), (0, 360, 640, 360)]
    assert rects(place("grid", cams(5)))[:4] == [(0, 0, 426, 240), (426, 0, 428, 240), (854, 0, 426, 240),
                                                (0, 240, 426, 240)]


def test_grid_caps_at_25(place, cams, rects):
    placed = place("grid", cams(30), max_videos=64)
    assert rects(placed) == cells((5, 5))
    assert placed[-1].participant_id == "p24"


def test_grid_empty_room(place):
    assert place("grid", []) == []


# floating, <=17 videos: 4 per row, tile 23.5% (300.8 x 169.2 -> 300 x 170), gap 1.2% (15.36, 8.64)
FLOAT_17_X = [16, 332, 648, 964]
FLOAT_17_Y = [542, 364, 186, 8]  # bottom row first
# >17 videos: 5 per row, tile 18.8% (240.64 x 135.36 -> 240 x 136), gap 1% (12.8, 7.2)
FLOAT_18_X = [12, 266, 520, 774, 1026]
FLOAT_18_Y = [578, 434, 292, 150, 8]


def test_floating_17(place, cams, rects):
    placed = place("floating", cams(17))
    assert rects(placed)[0] == (0, 0, 1280, 720) and placed[0].z == 0
    assert placed[0].participant_id == "p0"
    small = placed[1:]
    assert len(small) == 16 and {r.z for r in small} == {1}
    assert rects(small) == [(x, y, 300, 170) for y in FLOAT_17_Y for x in FLOAT_17_X]
    assert [r.participant_id for r in small] == [f"p{i}" for i in range(1, 17)]
    # margins and gaps: 1.2% of 1280 = 15.36 and of 720 = 8.64, snapped
    first, second = small[0], small[1]
    assert first.x == 16 and 1280 - (small[3].x + small[3].w) == 16
    assert second.x - (first.x + first.w) == 16
    assert 720 - (first.y + first.h) == 8
    assert first.y - (small[4].y + small[4].h) == 8
    assert small[12].y == 8  # the fourth row reaches the top margin


def test_floating_18(place, cams, rects):
    placed = place("floating", cams(18))
    small = placed[1:]
    assert len(small) == 17 and {r.z for r in small} == {1}
    expected = [(x, y, 240, 136) for y in FLOAT_18_Y for x in FLOAT_18_X][:17]
    assert rects(small) == expected
    assert [r.y for r in small[15:]] == [150, 150]  # 5 + 5 + 5 + 2, rows upward
    assert small[0].x == 12 and 720 - (small[0].y + small[0].h) == 6


def test_floating_25_fills_five_rows(place, cams, rects):
    small = place("floating", cams(25))[1:]
    assert rects(small) == [(x, y, 240, 136) for y in FLOAT_18_Y for x in FLOAT_18_X][:24]


def test_floating_main_named(place, cams):
    placed = place("floating", cams(4), main="p2")
    assert placed[0].participant_id == "p2" and (placed[0].w, placed[0].h) == (1280, 720)
    assert [r.participant_id for r in placed[1:]] == ["p0", "p1", "p3"]


def column(x: int, w: int, h: int, count: int, y0: int = 0) -> list[tuple[int, int, int, int]]:
    return [(x, y0 + k * h, w, h) for k in range(count)]


def test_screen_share_5(place, cams, rects):
    assert rects(place("screen_share", cams(5))) == [(0, 0, 1024, 720), *column(1024, 256, 180, 4)]


def test_screen_share_6_and_7(place, cams, rects):
    # 1/7 x 1/6 small windows, big 6/7 W (1097.14 -> 1098)
    assert rects(place("screen_share", cams(7))) == [(0, 0, 1098, 720), *column(1098, 182, 120, 6)]
    assert rects(place("screen_share", cams(6))) == [(0, 0, 1098, 720), *column(1098, 182, 120, 5)]


def test_screen_share_9(place, cams, rects):
    # 1/9 x 1/8, big 8/9 W (1137.78 -> 1138)
    assert rects(place("screen_share", cams(9))) == [(0, 0, 1138, 720), *column(1138, 142, 90, 8)]
    assert rects(place("screen_share", cams(8))) == [(0, 0, 1138, 720), *column(1138, 142, 90, 7)]


def test_screen_share_10_and_17(place, cams, rects):
    assert rects(place("screen_share", cams(17))) == [
        (0, 0, 1024, 720), *column(1024, 128, 90, 8), *column(1152, 128, 90, 8)]
    assert rects(place("screen_share", cams(10))) == [
        (0, 0, 1024, 720), *column(1024, 128, 90, 8), (1152, 0, 128, 90)]


def test_screen_share_24_overflows_along_the_bottom(place, cams, rects):
    placed = place("screen_share", cams(24))
    bottom = [(k * 128, 630, 128, 90) for k in range(7)]
    assert rects(placed) == [(0, 0, 1024, 630), *column(1024, 128, 90, 8), *column(1152, 128, 90, 8), *bottom]
    assert rects(place("screen_share", cams(18)))[0] == (0, 0, 1024, 630)
    assert rects(place("screen_share", cams(18)))[-1] == (0, 630, 128, 90)


def test_screen_share_caps_at_24(place, cams):
    assert len(place("screen_share", cams(30), max_videos=64)) == 24


def test_screen_share_main_is_the_share(place, cams):
    sources = [*cams(4), VideoSource("p2", "screen", name="Person 2")]
    placed = place("screen_share", sources)
    assert (placed[0].participant_id, placed[0].track) == ("p2", "screen")
    assert (placed[0].x, placed[0].y, placed[0].w, placed[0].h) == (0, 0, 1024, 720)
    assert [(r.participant_id, r.track) for r in placed[1:]] == [(f"p{i}", "camera") for i in range(4)]
    # the named main's own share is preferred; a named camera-only main yields to a share
    both = [*cams(3), VideoSource("p1", "screen"), VideoSource("p2", "screen")]
    assert (place("screen_share", both, main="p2")[0].participant_id,
            place("screen_share", both, main="p2")[0].track) == ("p2", "screen")
    assert place("screen_share", both, main="p0")[0].track == "screen"


def test_screen_share_without_share_uses_main(place, cams):
    assert place("screen_share", cams(3), main="p1")[0].participant_id == "p1"
    assert place("screen_share", cams(3))[0].participant_id == "p0"


def test_screen_share_alone_fills(place, rects):
    assert rects(place("screen_share", [VideoSource("p0", "screen")])) == [(0, 0, 1280, 720)]
