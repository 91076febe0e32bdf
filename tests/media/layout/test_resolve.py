"""resolve(): custom regions, server-filled windows, errors, and invariants of every template."""

from __future__ import annotations

import itertools

import pytest

from gateway.media.layout.model import Layout
from gateway.media.layout.placed import PlacedRegion, TemplateContext, VideoSource
from gateway.media.layout.resolve import UnknownSource, resolve
from gateway.media.layout.templates import TemplateRegistry, UnknownTemplate, even, split
from gateway.pluginmanager import PluginManager
from plugins.layouts import TEMPLATES, LayoutsPlugin

ALL_TEMPLATES = {
    "grid", "floating", "screen_share", "horizontal", "vertical", "tiled", "corner", "five_up",
    "tile", "screen", "podium", "lecture", "free", "rect", *(f"big_small_x{n}" for n in range(2, 11)),
    "big_small_top", "big_small_bottom", "speaker", "voice_activated",
}
# templates whose windows may hover above a full-canvas main (z 1 over z 0)
FLOATING = {"floating", "corner", "lecture"}


def custom(regions: list[dict], width: int = 1280, height: int = 720, **extra: object) -> Layout:
    return Layout.model_validate({"canvas": {"width": width, "height": height}, "template": "custom",
                                  "regions": regions, **extra})


# -------------------------------------------------------------------------------------------
# Registry and plugin
# -------------------------------------------------------------------------------------------

def test_plugin_registers_every_template_through_the_hook():
    manager = PluginManager()
    manager.register(LayoutsPlugin(), name="layouts")
    results = manager.hook.mediagate_layout_templates()
    registry = TemplateRegistry()
    for table in results:
        registry.update(table)
    assert set(registry.names()) == ALL_TEMPLATES == set(TEMPLATES)


def test_unknown_template_lists_known_names(registry, cams):
    with pytest.raises(UnknownTemplate) as caught:
        registry.get("mosaic")
    message = str(caught.value)
    assert message.startswith("unknown layout template 'mosaic'; known templates: big_small_bottom, ")
    assert message.endswith(", voice_activated (or 'custom' with regions)")
    assert all(name in message for name in ALL_TEMPLATES)
    assert caught.value.known == sorted(ALL_TEMPLATES)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, KeyError)
    assert caught.value.where == "template"
    with pytest.raises(UnknownTemplate, match="unknown layout template 'mosaic'"):
        resolve(Layout(template="mosaic"), cams(2), registry)
    with pytest.raises(KeyError):
        registry["mosaic"]


def test_registry_refuses_duplicates_and_reserved_names(registry):
    with pytest.raises(ValueError, match="already registered"):
        registry.register("grid", TEMPLATES["tiled"])
    registry.register("grid", TEMPLATES["tiled"], replace=True)
    assert registry.get("grid") is TEMPLATES["tiled"]
    with pytest.raises(ValueError, match="reserved"):
        registry.register("custom", TEMPLATES["grid"])
    assert "grid" in registry and "custom" not in registry and len(registry) == len(ALL_TEMPLATES)


def test_plugin_template_is_called_with_context(cams):
    seen: list[TemplateContext] = []

    def mine(ctx: TemplateContext) -> list:
        seen.append(ctx)
        return []

    registry = TemplateRegistry({"mine": mine})
    assert resolve(Layout(template="mine", main="p3", max_videos=2), cams(5), registry,
                   active_speaker="p1") == []
    ctx = seen[0]
    assert ctx.main == VideoSource("p3", name="Person 3")
    assert [s.participant_id for s in ctx.sources] == ["p0", "p3"]  # limited, the main kept
    assert (ctx.active_speaker, ctx.max_videos, ctx.canvas.width) == ("p1", 2, 1280)


# -------------------------------------------------------------------------------------------
# Custom layouts
# -------------------------------------------------------------------------------------------

def test_fractional_custom_layout_3tee(registry, cams):
    # 3tee /room/mix_live/update_layout: {"x":0,"y":0,"w":1,"h":1} + {"x":0.5,"y":0,"w":0.5,"h":1}
    layout = custom([
        {"source": {"participant": "p0"}, "x": 0, "y": 0, "w": 1, "h": 1, "units": "fraction", "z": 0},
        {"source": {"participant": "p1"}, "x": 0.5, "y": 0, "w": 0.5, "h": 1, "units": "fraction", "z": 1},
    ])
    placed = resolve(layout, cams(2), registry)
    assert [(r.participant_id, r.x, r.y, r.w, r.h, r.z) for r in placed] == [
        ("p0", 0, 0, 1280, 720, 0), ("p1", 640, 0, 640, 720, 1)]


def test_null_regions_are_filled_by_the_server(registry, cams):
    layout = custom([
        {"source": {"participant": "p2"}, "x": 0, "y": 0, "w": 640, "h": 360},
        {"x": 640, "y": 0, "w": 640, "h": 360},
        {"x": 0, "y": 360, "w": 640, "h": 360},
        {"x": 640, "y": 360, "w": 640, "h": 360},
    ])
    placed = resolve(layout, cams(3), registry)
    assert [(r.participant_id, r.name, r.x, r.y) for r in placed] == [
        ("p2", "Person 2", 0, 0), ("p0", "Person 0", 640, 0), ("p1", "Person 1", 0, 360), (None, "", 640, 360)]


def test_null_regions_fill_a_screen_share_once(registry):
    sources = [VideoSource("p0"), VideoSource("p0", "screen"), VideoSource("p1")]
    layout = custom([{"source": {"participant": "p0"}, "w": 100, "h": 100},
                     {"x": 100, "w": 100, "h": 100}, {"x": 200, "w": 100, "h": 100}])
    placed = resolve(layout, sources, registry)
    assert [(r.participant_id, r.track) for r in placed] == [("p0", "camera"), ("p0", "screen"),
                                                              ("p1", "camera")]


def test_null_region_fill_respects_max_videos(registry, cams):
    layout = custom([{"w": 100, "h": 100}, {"x": 100, "w": 100, "h": 100}], max_videos=1)
    assert [r.participant_id for r in resolve(layout, cams(3), registry)] == ["p0", None]


def test_unknown_source_names_the_region(registry, cams):
    layout = custom([{"source": {"participant": "p0"}, "w": 100, "h": 100},
                     {"source": {"participant": "ghost"}, "w": 100, "h": 100}])
    with pytest.raises(UnknownSource) as caught:
        resolve(layout, cams(2), registry)
    assert caught.value.where == "regions[1]" and caught.value.participant == "ghost"
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == "regions[1]: participant 'ghost' is not in the room"


def test_missing_track_keeps_its_window(registry, cams):
    layout = custom([{"source": {"participant": "p1", "track": "screen"}, "w": 640, "h": 360,
                      "placeholder": "name"}])
    (region,) = resolve(layout, cams(2), registry)
    assert (region.participant_id, region.track, region.name, region.placeholder) == (
        "p1", "screen", "Person 1", "name")


def test_participant_by_name_when_unique(registry):
    sources = [VideoSource("id-1", name="alice"), VideoSource("id-2", name="bob")]
    layout = custom([{"source": {"participant": "bob"}, "w": 100, "h": 100}])
    assert resolve(layout, sources, registry)[0].participant_id == "id-2"
    assert resolve(Layout(template="speaker", main="bob"), sources, registry)[0].participant_id == "id-2"


def test_region_attributes_are_carried(registry, cams):
    layout = custom([{
        "source": {"participant": "p0"}, "x": 11, "y": 21, "w": 301, "h": 199, "z": 3, "fit": "fill",
        "crop": {"x": 10, "y": 20, "w": 300, "h": 0}, "alpha": 0.5, "placeholder": "image",
        "placeholder_image": "file-1", "background": "#ff8800",
    }])
    (region,) = resolve(layout, cams(1), registry)
    # (11, 21) snaps down to even, the far edges (312, 220) up to even
    assert region == PlacedRegion(x=10, y=20, w=302, h=200, z=3, participant_id="p0", track="camera",
                                  name="Person 0", fit="fill", crop=(10, 20, 300, 0), alpha=0.5,
                                  placeholder="image", placeholder_image="file-1", background=(255, 136, 0))


def test_sorted_by_z_then_given_order(registry, cams):
    layout = custom([{"source": {"participant": f"p{i}"}, "x": 10 * i, "w": 10, "h": 10, "z": z}
                     for i, z in enumerate([2, 0, 1, 0, 2])])
    placed = resolve(layout, cams(5), registry)
    assert [(r.participant_id, r.z) for r in placed] == [("p1", 0), ("p3", 0), ("p2", 1), ("p0", 2), ("p4", 2)]


# -------------------------------------------------------------------------------------------
# Main selection and limits
# -------------------------------------------------------------------------------------------

def test_max_videos_limits_template_sources(place, cams, rects):
    placed = place("grid", cams(10), max_videos=4)
    assert rects(placed) == [(0, 0, 640, 360), (640, 0, 640, 360), (0, 360, 640, 360), (640, 360, 640, 360)]
    assert [r.participant_id for r in placed] == ["p0", "p1", "p2", "p3"]
    assert [r.participant_id for r in place("grid", cams(10), max_videos=4, main="p9")] == [
        "p9", "p0", "p1", "p2"]


def test_main_absent_falls_back_to_first(place, cams):
    assert place("speaker", cams(3), main="gone")[0].participant_id == "p0"


# -------------------------------------------------------------------------------------------
# Invariants of every template
# -------------------------------------------------------------------------------------------

def overlaps(a: PlacedRegion, b: PlacedRegion) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def room(count: int) -> list[VideoSource]:
    sources = [VideoSource(f"p{i}", name=f"Person {i}") for i in range(count)]
    if count >= 3:  # one screen share among the sources exercises the screen-oriented templates
        sources[2] = VideoSource("p1", "screen")
    return sources


@pytest.mark.parametrize("size", [(1280, 720), (800, 600), (1920, 1080), (640, 360), (720, 1280), (1000, 562)])
@pytest.mark.parametrize("template", sorted(ALL_TEMPLATES))
def test_every_template_inside_even_and_not_overlapping(place, template, size):
    width, height = size
    for count in range(0, 27):
        placed = place(template, room(count), width=width, height=height)
        assert len(placed) <= min(count, 25), (template, count)
        if count:
            assert placed, (template, count)
        shown = [(r.participant_id, r.track) for r in placed]
        assert len(shown) == len(set(shown)), (template, count)
        for r in placed:
            assert r.participant_id is not None
            assert r.x % 2 == r.y % 2 == r.w % 2 == r.h % 2 == 0, (template, count, r)
            assert r.w >= 2 and r.h >= 2 and r.x >= 0 and r.y >= 0
            assert r.x + r.w <= width and r.y + r.h <= height, (template, count, r)
        for a, b in itertools.combinations(placed, 2):
            if template in FLOATING and a.z != b.z:
                continue  # a window hovering over the full-canvas main
            assert not overlaps(a, b), (template, count, a, b)


def test_floating_windows_hover_over_the_main_only(place, cams):
    for template in sorted(FLOATING):
        placed = place(template, [*cams(5), VideoSource("p0", "screen")])
        assert (placed[0].w, placed[0].h, placed[0].z) == (1280, 720, 0)
        assert all(r.z == 1 for r in placed[1:])


def test_geometry_helpers():
    assert [even(v) for v in (0, 0.9, 1, 2.9, 3, 426.67, 853.33, 1097.14)] == [0, 0, 2, 2, 4, 426, 854, 1098]
    assert split(0, 1280, 3) == [(0, 426), (426, 428), (854, 426)]
    assert split(100, 300, 2) == [(100, 150), (250, 150)]


def test_audio_only_sources_get_a_name_card_instead_of_a_black_last_frame() -> None:
    from gateway.media.layout.model import Layout
    from gateway.media.layout.placed import VideoSource
    from gateway.media.layout.resolve import resolve
    from gateway.media.layout.templates import TemplateRegistry

    sources = [VideoSource("a", "camera", "Alice"), VideoSource("b", "camera", "Bob", has_video=False)]
    placed = resolve(Layout(template="grid"), sources, TemplateRegistry(TEMPLATES))
    assert {r.participant_id: r.placeholder for r in placed} == {"a": "last", "b": "name"}
    explicit = Layout.model_validate({"template": "custom", "regions": [
        {"source": {"participant": "b"}, "x": 0, "y": 0, "w": 100, "h": 100, "placeholder": "black"}]})
    assert resolve(explicit, sources, TemplateRegistry(TEMPLATES))[0].placeholder == "black"
