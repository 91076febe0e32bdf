"""Juphoon merge modes, smart modes, and the speaker templates, on a 1280x720 canvas."""

from __future__ import annotations

import pytest

from gateway.media.layout.placed import VideoSource


def test_tile_is_the_grid(place, cams):
    for count in (1, 2, 4, 5, 9, 16, 25):
        assert place("tile", cams(count)) == place("grid", cams(count))


def test_podium_share_big_on_top(place, cams, rects):
    sources = [*cams(3), VideoSource("p1", "screen", name="Person 1")]
    placed = place("podium", sources)
    assert (placed[0].participant_id, placed[0].track) == ("p1", "screen")
    assert rects(placed) == [(0, 0, 1280, 540), (160, 540, 320, 180), (480, 540, 320, 180),
                             (800, 540, 320, 180)]
    assert [r.participant_id for r in placed[1:]] == ["p0", "p1", "p2"]
    assert place("podium", cams(3))[0].participant_id == "p0"  # no share: the main


def test_lecture(place, cams, rects):
    sources = [*cams(4), VideoSource("p2", "screen")]
    placed = place("lecture", sources)
    assert [(r.participant_id, r.track, r.z) for r in placed] == [("p2", "screen", 0), ("p2", "camera", 1)]
    assert rects(placed) == [(0, 0, 1280, 720), (934, 526, 320, 180)]
    # no share: the main alone; others hidden
    assert [(r.participant_id, r.w, r.h) for r in place("lecture", cams(4), main="p3")] == [("p3", 1280, 720)]
    # a sharer without a camera: the share alone
    assert len(place("lecture", [VideoSource("s", "screen"), *cams(2)])) == 1


def test_free_rows_fill_the_width(place, cams, rects):
    assert rects(place("free", cams(5))) == [(0, 0, 426, 360), (426, 0, 428, 360), (854, 0, 426, 360),
                                             (0, 360, 640, 360), (640, 360, 640, 360)]
    assert rects(place("free", cams(3))) == [(0, 0, 640, 360), (640, 0, 640, 360), (0, 360, 1280, 360)]


def test_rect_equal_sizes(place, cams, rects):
    assert rects(place("rect", cams(5))) == [(0, 0, 426, 360), (426, 0, 426, 360), (852, 0, 426, 360),
                                             (214, 360, 426, 360), (640, 360, 426, 360)]
    placed = place("rect", cams(25))
    assert rects(placed) == [(x, y, 256, 144) for y in (0, 144, 288, 432, 576)
                             for x in (0, 256, 512, 768, 1024)]


def test_big_small_x2(place, cams, rects):
    # 3x3 units (426|428|426 x 240): main 2x2 units top-left, 5 small cells around it
    assert rects(place("big_small_x2", cams(6))) == [
        (0, 0, 854, 480), (854, 0, 426, 240), (854, 240, 426, 240),
        (0, 480, 426, 240), (426, 480, 428, 240), (854, 480, 426, 240)]
    # 10 others do not fit 3x3: 4x4 units of 320x180, main 640x360
    placed = place("big_small_x2", cams(11))
    assert rects(placed) == [
        (0, 0, 640, 360), (640, 0, 320, 180), (960, 0, 320, 180), (640, 180, 320, 180), (960, 180, 320, 180),
        (0, 360, 320, 180), (320, 360, 320, 180), (640, 360, 320, 180), (960, 360, 320, 180),
        (0, 540, 320, 180), (320, 540, 320, 180)]


def test_big_small_x3(place, cams, rects):
    assert rects(place("big_small_x3", cams(4))) == [(0, 0, 960, 540), (960, 0, 320, 180),
                                                     (960, 180, 320, 180), (960, 360, 320, 180)]


def test_big_small_x10(place, cams, rects):
    # 11x11 units: 1280/11 = 116.4, 720/11 = 65.5; the main spans 10 units each way
    assert rects(place("big_small_x10", cams(3))) == [(0, 0, 1164, 654), (1164, 0, 116, 66),
                                                      (1164, 66, 116, 64)]


@pytest.mark.parametrize("scale", range(2, 11))
def test_big_small_main_is_n_times(place, cams, scale):
    placed = place(f"big_small_x{scale}", cams(8), main="p5")
    main, small = placed[0], placed[1]
    assert main.participant_id == "p5"
    assert abs(main.w - scale * small.w) <= 2 * scale and abs(main.h - scale * small.h) <= 2 * scale
    assert (main.x, main.y) == (0, 0)
    assert len(placed) == 8


def test_big_small_alone_fills(place, cams, rects):
    assert rects(place("big_small_x4", cams(1))) == [(0, 0, 1280, 720)]


def test_big_small_top_and_bottom(place, cams, rects):
    assert rects(place("big_small_top", cams(3))) == [(0, 0, 1280, 540), (320, 540, 320, 180),
                                                      (640, 540, 320, 180)]
    assert rects(place("big_small_bottom", cams(3))) == [(0, 180, 1280, 540), (320, 0, 320, 180),
                                                         (640, 0, 320, 180)]
    # 24 others: 3 rows of 8 (160x90)
    placed = place("big_small_bottom", cams(25))
    assert rects(placed)[0] == (0, 270, 1280, 450)
    assert rects(placed)[1:] == [(k * 160, y, 160, 90) for y in (0, 90, 180) for k in range(8)]


def test_speaker_filmstrip_on_the_right(place, cams, rects):
    assert rects(place("speaker", cams(5))) == [(0, 0, 960, 720), *[(960, k * 180, 320, 180)
                                                                   for k in range(4)]]
    placed = place("speaker", cams(25))
    assert rects(placed)[0] == (0, 0, 800, 720)
    assert rects(placed)[1:] == [(x, k * 90, 160, 90) for x in (800, 960, 1120) for k in range(8)]


def test_voice_activated_follows_the_speaker(place, cams):
    assert place("voice_activated", cams(4), active_speaker="p2")[0].participant_id == "p2"
    assert place("voice_activated", cams(4))[0].participant_id == "p0"
    assert place("voice_activated", cams(4), main="p3")[0].participant_id == "p3"  # silence: the main
    assert place("voice_activated", cams(4), main="p3", active_speaker="p1")[0].participant_id == "p1"
    # a speaker who is not in the room leaves the main in place
    assert place("voice_activated", cams(4), main="p3", active_speaker="gone")[0].participant_id == "p3"
    # the speaker's camera, not their screen
    sources = [*cams(2), VideoSource("p1", "screen")]
    big = place("voice_activated", sources, active_speaker="p1")[0]
    assert (big.participant_id, big.track, big.w) == ("p1", "camera", 960)


def test_screen_template_shows_only_the_share() -> None:
    from gateway.media.layout.model import Canvas
    from gateway.media.layout.placed import TemplateContext, VideoSource
    from plugins.layouts import TEMPLATES

    canvas = Canvas(width=1280, height=720)
    sources = [VideoSource("a", "camera", "a"), VideoSource("b", "camera", "b"), VideoSource("b", "screen", "b")]
    regions = TEMPLATES["screen"](TemplateContext(canvas=canvas, sources=sources, main=sources[2]))
    assert [(r.source.participant, r.source.track, r.x, r.y, r.w, r.h) for r in regions] == [
        ("b", "screen", 0, 0, 1280, 720)]
