"""The compositor, verified by content: solid-colour sources on a frame bus, then the colours
found inside each region of the rendered canvas."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from gateway.media.bus import FrameBus
from gateway.media.compositor import Compositor
from gateway.media.layout.model import Background, Canvas
from gateway.media.layout.placed import PlacedRegion
from gateway.media.track import Track

RED, GREEN, BLUE, YELLOW = (220, 30, 30), (30, 200, 40), (40, 50, 220), (230, 220, 40)
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (48, 48, 48)
BG = (90, 0, 120)  # canvas background: a colour no source uses


def solid(rgb: tuple[int, int, int], w: int = 320, h: int = 180) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.full((h, w, 3), rgb, np.uint8), format="rgb24")


def halves(left: tuple[int, int, int], right: tuple[int, int, int], w: int = 320, h: int = 180) -> av.VideoFrame:
    image = np.empty((h, w, 3), np.uint8)
    image[:, : w // 2] = left
    image[:, w // 2:] = right
    return av.VideoFrame.from_ndarray(image, format="rgb24")


def rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24").astype(int)


def near(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 10) -> bool:
    return bool(np.all(np.abs(pixel - np.array(colour)) <= tol))


def centre(image: np.ndarray, region: PlacedRegion) -> np.ndarray:
    return image[region.y + region.h // 2, region.x + region.w // 2]


@pytest.fixture
def bus() -> FrameBus:
    return FrameBus()


@pytest.fixture
def canvas() -> Canvas:
    return Canvas(width=640, height=360, fps=30, background=Background(color="5A0078"))


def camera(bus: FrameBus, pid: str, source: str = "camera") -> Track:
    return bus.create_track("video", source, pid, name=pid)


def show(compositor: Compositor, pushes: dict[Track, av.VideoFrame]) -> np.ndarray:
    """Render once (subscribes lazily), publish the frames, render again."""
    compositor.render()
    for track, frame in pushes.items():
        track.push_frame(frame)
    return rgb(compositor.render())


def test_grid_regions_show_their_sources_and_output_format(bus: FrameBus, canvas: Canvas) -> None:
    colours = {"p1": RED, "p2": GREEN, "p3": BLUE, "p4": YELLOW}
    regions = [PlacedRegion(x=(i % 2) * 320, y=(i // 2) * 180, w=320, h=180, participant_id=pid)
               for i, pid in enumerate(colours)]
    compositor = Compositor(canvas, bus)
    compositor.set_regions(regions)
    tracks = {pid: camera(bus, pid) for pid in colours}
    # p1 already has the region's size (pasted as is), the others are scaled by swscale
    sizes = {"p1": (320, 180), "p2": (640, 360), "p3": (1280, 720), "p4": (160, 90)}
    frame = compositor.render()
    for pid, colour in colours.items():
        tracks[pid].push_frame(solid(colour, *sizes[pid]))
    frame = compositor.render()
    assert (frame.width, frame.height, frame.format.name) == (640, 360, "yuv420p")
    image = rgb(frame)
    for region, colour in zip(regions, colours.values(), strict=True):
        assert near(centre(image, region), colour)
        assert near(image[region.y + 4, region.x + 4], colour)  # corners too: fully covered
        assert near(image[region.y + region.h - 5, region.x + region.w - 5], colour)
    assert compositor.rescales == 3


def test_fit_letterboxes_with_the_canvas_background(bus: FrameBus, canvas: Canvas) -> None:
    region = PlacedRegion(x=0, y=0, w=640, h=360, participant_id="p1", fit="fit")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    image = show(compositor, {camera(bus, "p1"): solid(RED, 240, 180)})  # 4:3 in 16:9: side bars
    assert near(image[180, 320], RED)
    assert near(image[180, 20], BG) and near(image[180, 620], BG)  # bars
    assert near(image[180, 90], RED) and near(image[180, 550], RED)  # picture is 480 wide, centred


def test_fit_bars_take_the_region_background(bus: FrameBus, canvas: Canvas) -> None:
    region = PlacedRegion(x=0, y=0, w=640, h=360, participant_id="p1", background=WHITE)
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    image = show(compositor, {camera(bus, "p1"): solid(RED, 240, 180)})
    assert near(image[180, 20], WHITE) and near(image[180, 620], WHITE)
    assert near(image[180, 320], RED)


def test_fill_covers_the_region_without_bars(bus: FrameBus, canvas: Canvas) -> None:
    region = PlacedRegion(x=0, y=0, w=640, h=360, participant_id="p1", fit="fill")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    # tall source with a distinct top/bottom: fill must crop them away, centred
    source = np.full((480, 240, 3), RED, np.uint8)
    source[:60] = GREEN
    source[-60:] = GREEN
    image = show(compositor, {camera(bus, "p1"): av.VideoFrame.from_ndarray(source, format="rgb24")})
    for y, x in [(4, 4), (4, 635), (355, 4), (355, 635), (180, 320), (180, 4)]:
        assert near(image[y, x], RED), (y, x)


def test_crop_shows_the_chosen_part_of_the_source(bus: FrameBus, canvas: Canvas) -> None:
    right_half = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1", crop=(160, 0, 0, 0), fit="fill")
    left_half = PlacedRegion(x=320, y=0, w=320, h=360, participant_id="p1", crop=(0, 0, 160, 180),
                             fit="fill")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([right_half, left_half])
    image = show(compositor, {camera(bus, "p1"): halves(RED, GREEN)})
    for y, x in [(4, 4), (90, 160), (175, 315)]:
        assert near(image[y, x], GREEN), (y, x)
    for y, x in [(4, 324), (180, 480), (355, 635)]:
        assert near(image[y, x], RED), (y, x)


def test_crop_without_scaling_pastes_the_slice(bus: FrameBus, canvas: Canvas) -> None:
    # a 320x180 crop of a 640x180 source into a 320x180 region: no swscale at all
    region = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1", crop=(320, 0, 320, 180))
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    image = show(compositor, {camera(bus, "p1"): halves(RED, GREEN, 640, 180)})
    assert near(image[4, 4], GREEN) and near(image[175, 315], GREEN)
    assert compositor.rescales == 0


def test_alpha_blends_over_the_lower_region(bus: FrameBus, canvas: Canvas) -> None:
    base = PlacedRegion(x=0, y=0, w=640, h=360, participant_id="p1", z=0)
    half = PlacedRegion(x=160, y=90, w=320, h=180, participant_id="p2", z=1, alpha=0.5)
    compositor = Compositor(canvas, bus)
    compositor.set_regions([half, base])
    image = show(compositor, {camera(bus, "p1"): solid(RED, 640, 360), camera(bus, "p2"): solid(BLUE)})
    mix = tuple((a + b) // 2 for a, b in zip(RED, BLUE, strict=True))
    assert near(image[180, 320], mix)
    assert near(image[20, 20], RED)


def test_alpha_zero_draws_nothing(bus: FrameBus, canvas: Canvas) -> None:
    region = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1", alpha=0.0)
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    image = show(compositor, {camera(bus, "p1"): solid(RED)})
    assert near(image[90, 160], BG)


@pytest.mark.parametrize("order", [1, -1])
def test_higher_z_is_on_top(bus: FrameBus, canvas: Canvas, order: int) -> None:
    low = PlacedRegion(x=0, y=0, w=400, h=300, participant_id="p1", z=2)
    high = PlacedRegion(x=200, y=100, w=400, h=200, participant_id="p2", z=5)
    compositor = Compositor(canvas, bus)
    compositor.set_regions([low, high][::order])
    image = show(compositor, {camera(bus, "p1"): solid(RED, 400, 300), camera(bus, "p2"): solid(GREEN, 400, 200)})
    assert near(image[200, 300], GREEN)  # the overlap
    assert near(image[50, 50], RED)
    assert near(image[250, 550], GREEN)


def test_placeholder_black_and_none(bus: FrameBus, canvas: Canvas) -> None:
    black = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="absent", placeholder="black")
    empty = PlacedRegion(x=320, y=0, w=320, h=180, participant_id=None, placeholder="black")
    nothing = PlacedRegion(x=0, y=180, w=320, h=180, participant_id="absent", placeholder="none")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([black, empty, nothing])
    image = rgb(compositor.render())
    assert near(centre(image, black), BLACK)
    assert near(centre(image, empty), BLACK)
    assert near(centre(image, nothing), BG)


def test_placeholder_last_keeps_the_last_frame(bus: FrameBus, canvas: Canvas) -> None:
    region = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1", placeholder="last")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    assert near(centre(rgb(compositor.render()), region), BLACK)  # nothing seen yet: black
    track = camera(bus, "p1")
    assert near(centre(show(compositor, {track: solid(RED)}), region), RED)
    bus.remove_track(track.track_id)  # the camera goes away
    assert near(centre(rgb(compositor.render()), region), RED)

    black = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p2", placeholder="black")
    compositor.set_regions([black])
    track2 = camera(bus, "p2")
    assert near(centre(show(compositor, {track2: solid(GREEN)}), black), GREEN)
    bus.remove_track(track2.track_id)
    assert near(centre(rgb(compositor.render()), black), BLACK)


def test_muted_track_shows_the_placeholder(bus: FrameBus, canvas: Canvas) -> None:
    region = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1", placeholder="black")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    track = camera(bus, "p1")
    assert near(centre(show(compositor, {track: solid(RED)}), region), RED)
    track.muted = True
    assert near(centre(rgb(compositor.render()), region), BLACK)


def test_placeholder_name_card(bus: FrameBus, canvas: Canvas) -> None:
    region = PlacedRegion(x=0, y=0, w=640, h=360, participant_id="p1", name="Alice", placeholder="name")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    image = rgb(compositor.render())
    assert near(image[10, 10], GREY)  # the card is dark grey
    middle = image[150:210, 220:420]
    assert middle.max() > 200  # white text in the centre, not plain grey
    assert np.abs(middle - np.array(GREY)).max() > 100


def test_placeholder_image(bus: FrameBus, canvas: Canvas) -> None:
    loads: list[str] = []

    def load(file_id: str) -> Image.Image:
        loads.append(file_id)
        return Image.new("RGB", (64, 36), YELLOW)

    region = PlacedRegion(x=320, y=180, w=320, h=180, participant_id="p1", placeholder="image",
                          placeholder_image="F1")
    compositor = Compositor(canvas, bus, load_image=load)
    compositor.set_regions([region])
    for _ in range(3):
        image = rgb(compositor.render())
    assert near(centre(image, region), YELLOW)
    assert loads == ["F1"]  # pre-scaled once


def test_broken_placeholder_image_falls_back_to_black(bus: FrameBus, canvas: Canvas) -> None:
    def load(file_id: str) -> Image.Image:
        raise FileNotFoundError(file_id)

    region = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1", placeholder="image",
                          placeholder_image="missing")
    compositor = Compositor(canvas, bus, load_image=load)
    compositor.set_regions([region])
    assert near(centre(rgb(compositor.render()), region), BLACK)


def test_set_regions_takes_effect_on_the_next_render(bus: FrameBus, canvas: Canvas) -> None:
    left = PlacedRegion(x=0, y=0, w=320, h=360, participant_id="p1", fit="fill")
    right = PlacedRegion(x=320, y=0, w=320, h=360, participant_id="p1", fit="fill")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([left])
    track = camera(bus, "p1")
    image = show(compositor, {track: solid(RED)})
    assert near(centre(image, left), RED) and near(centre(image, right), BG)
    compositor.set_regions([right])
    image = rgb(compositor.render())
    assert near(centre(image, left), BG) and near(centre(image, right), RED)


def test_subscriptions_follow_regions_and_tracks(bus: FrameBus, canvas: Canvas) -> None:
    region = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1", placeholder="black")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    assert near(centre(rgb(compositor.render()), region), BLACK)  # nobody there yet
    track = camera(bus, "p1")  # joins later: found at the next render
    assert near(centre(show(compositor, {track: solid(GREEN)}), region), GREEN)
    assert len(track._video_subs) == 1
    compositor.set_regions([])
    compositor.render()
    assert track._video_subs == ()  # the region went away: unsubscribed
    # a screen share region picks the screen track, not the camera
    screen = camera(bus, "p1", "screen")
    compositor.set_regions([PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1", track="screen")])
    image = show(compositor, {screen: solid(BLUE), track: solid(RED)})
    assert near(image[90, 160], BLUE)
    compositor.close()
    assert screen._video_subs == () and track._video_subs == ()


def test_unchanged_source_is_not_rescaled(bus: FrameBus, canvas: Canvas) -> None:
    region = PlacedRegion(x=0, y=0, w=640, h=360, participant_id="p1")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    track = camera(bus, "p1")
    show(compositor, {track: solid(RED)})
    for _ in range(5):
        compositor.render()
    assert compositor.rescales == 1
    track.push_frame(solid(GREEN))
    assert near(centre(rgb(compositor.render()), region), GREEN)
    assert compositor.rescales == 2


def test_background_image_and_colour(bus: FrameBus, canvas: Canvas) -> None:
    def load(file_id: str) -> Image.Image:
        image = Image.new("RGB", (100, 100), RED)
        image.paste(GREEN, (50, 0, 100, 100))
        return image

    compositor = Compositor(canvas, bus, load_image=load)
    compositor.set_background(Background(color="FFFFFF", image="bg", scale="stretch"))
    image = rgb(compositor.render())
    assert near(image[180, 100], RED) and near(image[180, 540], GREEN)
    compositor.set_background(Background(color="FFFFFF", image="bg", scale="fit"))
    image = rgb(compositor.render())
    assert near(image[180, 20], WHITE) and near(image[180, 250], RED) and near(image[180, 400], GREEN)
    compositor.set_background(Background(color="00FF00"))
    assert near(rgb(compositor.render())[5, 5], (0, 255, 0))


def test_overlays_are_blended_last(bus: FrameBus, canvas: Canvas) -> None:
    calls: list[float | None] = []

    class Marker:
        def blend(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, now: float | None = None) -> None:
            calls.append(now)
            y[0:20, 0:20] = 235
            u[0:10, 0:10] = 128
            v[0:10, 0:10] = 128

    region = PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([region])
    compositor.set_overlays(Marker())  # type: ignore[arg-type]
    image = show(compositor, {camera(bus, "p1"): solid(RED)})
    assert near(image[5, 5], WHITE) and near(image[90, 160], RED)
    compositor.set_overlays(None)
    assert near(rgb(compositor.render())[5, 5], RED)
    assert len(calls) == 2


def test_frames_kept_by_a_consumer_are_never_drawn_over(bus: FrameBus, canvas: Canvas) -> None:
    full = PlacedRegion(x=0, y=0, w=640, h=360, participant_id="p1", fit="fill")
    compositor = Compositor(canvas, bus)
    compositor.set_regions([full])
    track = camera(bus, "p1")
    compositor.render()
    track.push_frame(solid(RED))
    kept = compositor.render()
    for colour in (GREEN, BLUE, YELLOW, GREEN, BLUE, YELLOW, GREEN, BLUE):
        track.push_frame(solid(colour))
        compositor.render()  # dropped at once: its buffer is reused
    assert near(rgb(kept)[180, 320], RED)
    # the full-canvas region hid the background; a smaller layout must show it again
    compositor.set_regions([PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1", fit="fill")])
    for _ in range(3):
        image = rgb(compositor.render())
    assert near(image[300, 600], BG) and near(image[90, 160], BLUE)
