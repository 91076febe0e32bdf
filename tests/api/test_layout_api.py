"""PUT/GET /v1/rooms/{id}/layout: templates, custom regions, and errors that name the offending region."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient


def region(x: float, y: float, w: float, h: float, participant: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"x": x, "y": y, "w": w, "h": h, **extra}
    if participant is not None:
        out["source"] = {"participant": participant}
    return out


async def put(client: TestClient, api: Any, room_id: str, layout: dict[str, Any]) -> Any:
    return await client.put(f"/v1/rooms/{room_id}/layout", json=layout, headers=api.auth)


async def rejected(client: TestClient, api: Any, room_id: str, layout: dict[str, Any], field: str,
                   code: str = "validation_error") -> dict[str, Any]:
    """PUT must fail with 400 naming `field`, and the room's layout must be what it was."""
    before, stored_before = await api.layout(room_id), (await api.room(room_id))["layout"]
    body = await api.expect_error(await put(client, api, room_id, layout), 400, code, field)
    assert await api.layout(room_id) == before
    assert (await api.room(room_id))["layout"] == stored_before
    return body


async def test_default_layout(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    layout = await api.layout("r")
    assert layout["template"] == "grid" and layout["regions"] == []
    assert (layout["canvas"]["width"], layout["canvas"]["height"], layout["canvas"]["fps"]) == (1280, 720, 30)
    assert (await api.room("r"))["layout"] is None  # nothing set yet


async def test_canvas_from_room_creation(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r", canvas={"width": 1080, "height": 1920, "fps": 25})
    layout = await api.layout("r")
    assert (layout["canvas"]["width"], layout["canvas"]["height"], layout["canvas"]["fps"]) == (1080, 1920, 25)


async def test_put_grid_then_get(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    await api.add_test_participant("r", "src")
    layout = {"canvas": {"width": 1920, "height": 1080, "fps": 25, "background": {"color": "#112233"}},
              "template": "grid", "max_videos": 9,
              "watermarks": {"texts": [{"text": "直播 live", "x": 10, "y": 10}]}}
    response = await put(client, api, "r", layout)
    assert response.status == 200, await response.text()
    stored = await response.json()
    assert stored["template"] == "grid" and stored["max_videos"] == 9
    assert stored["canvas"]["background"]["color"] == "112233"
    assert stored["watermarks"]["texts"][0]["text"] == "直播 live"
    assert await api.layout("r") == stored
    assert (await api.room("r"))["layout"] == stored


async def test_put_custom_regions(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    one = await api.add_test_participant("r", "one")
    two = await api.add_test_participant("r", "two")
    layout = {"template": "custom", "regions": [
        region(0, 0, 640, 720, one["participant_id"]),
        region(0.5, 0, 0.5, 1, two["participant_id"], units="fraction", z=1, fit="fill")]}
    response = await put(client, api, "r", layout)
    assert response.status == 200, await response.text()
    stored = await api.layout("r")
    assert [(r["source"]["participant"], r["units"]) for r in stored["regions"]] == [
        (one["participant_id"], "px"), (two["participant_id"], "fraction")]


async def test_region_outside_canvas(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    await rejected(client, api, "r", {"template": "custom", "regions": [region(1000, 0, 400, 720)]}, "regions[0]")
    await rejected(client, api, "r", {"template": "custom", "regions": [
        region(0, 0, 0.5, 1, units="fraction"), region(0.6, 0, 0.5, 1, units="fraction")]}, "regions[1]")
    await rejected(client, api, "r", {"canvas": {"width": 640, "height": 360}, "template": "custom",
                                      "regions": [region(0, 0, 640, 361)]}, "regions[0]")


async def test_region_exactly_filling_the_canvas_is_fine(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    response = await put(client, api, "r", {"template": "custom", "regions": [region(0, 0, 1280, 720),
                                                                             region(0, 0, 1, 1, units="fraction")]})
    assert response.status == 200, await response.text()


async def test_region_with_unknown_participant(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    src = await api.add_test_participant("r", "src")
    await rejected(client, api, "r", {"template": "custom", "regions": [region(0, 0, 640, 360, "nobody")]},
                   "regions[0].source", code="unknown_source")
    await rejected(client, api, "r", {"template": "custom", "regions": [
        region(0, 0, 640, 360, src["participant_id"]), region(640, 0, 640, 360, "PA_gone")]},
        "regions[1].source", code="unknown_source")


async def test_region_source_by_identity(client: TestClient, api: Any) -> None:
    """SourceRef.participant is documented as 'participant id (or identity)'."""
    await api.create_room(room_id="r")
    src = await api.add_test_participant("r", "cam1", name="Front camera")
    response = await put(client, api, "r", {"template": "custom", "regions": [region(0, 0, 640, 360, "cam1")]})
    assert response.status == 200, await response.text()
    assert (await api.layout("r"))["regions"][0]["source"]["participant"] in ("cam1", src["participant_id"])


async def test_unknown_template(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    body = await rejected(client, api, "r", {"template": "mosaic_of_doom"}, "template")
    assert "grid" in body["error"]["message"]  # the message lists what exists
    await rejected(client, api, "r", {"template": "grid", "screen_template": "nope"}, "screen_template")


async def test_custom_without_regions(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    before = await api.layout("r")
    response = await put(client, api, "r", {"template": "custom"})
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "validation_error" and "region" in body["error"]["message"]
    assert await api.layout("r") == before


async def test_trtc_window_beyond_landscape_canvas(client: TestClient, api: Any) -> None:
    """TRTC seed: a 1280x720 mix with a window starting at x=1300 is refused, not cropped."""
    await api.create_room(room_id="r")
    one = await api.add_test_participant("r", "one")
    two = await api.add_test_participant("r", "two")
    good = {"canvas": {"width": 1280, "height": 720}, "template": "custom",
            "regions": [region(0, 0, 640, 720, one["participant_id"]),
                        region(640, 0, 640, 720, two["participant_id"])]}
    assert (await put(client, api, "r", good)).status == 200
    bad = {"canvas": {"width": 1280, "height": 720}, "template": "custom",
           "regions": [region(0, 0, 640, 720, one["participant_id"]),
                       region(1300, 0, 320, 180, two["participant_id"])]}
    body = await rejected(client, api, "r", bad, "regions[1]")
    assert "1280x720" in body["error"]["message"]
    assert (await api.layout("r"))["regions"][1]["x"] == 640


async def test_trtc_portrait_window_overflowing_height(client: TestClient, api: Any) -> None:
    """Portrait 1080x1920 with a (100, 50, 216, 1920) window: 50 + 1920 > 1920, refused naming it."""
    await api.create_room(room_id="r")
    one = await api.add_test_participant("r", "one")
    two = await api.add_test_participant("r", "two")
    canvas = {"width": 1080, "height": 1920}
    good = {"canvas": canvas, "template": "custom", "regions": [region(0, 0, 1080, 1920, one["participant_id"]),
                                                               region(100, 50, 216, 384, two["participant_id"],
                                                                      z=1)]}
    assert (await put(client, api, "r", good)).status == 200
    bad = {**good, "regions": [good["regions"][0], region(100, 50, 216, 1920, two["participant_id"], z=1)]}
    body = await rejected(client, api, "r", bad, "regions[1]")
    assert "regions[1]" in body["error"]["message"]


async def test_watermarks_outside_canvas(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    await rejected(client, api, "r", {"watermarks": {"texts": [{"text": "x", "x": 1280, "y": 10}]}},
                   "watermarks.texts[0]")
    await rejected(client, api, "r", {"watermarks": {"images": [{"file_id": "FI_x", "x": 1200, "y": 0, "w": 100,
                                                                 "h": 50}]}}, "watermarks.images[0]")


async def test_bad_fields_are_named(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    await rejected(client, api, "r", {"templte": "grid"}, "templte")
    await rejected(client, api, "r", {"canvas": {"width": 8}}, "canvas.width")
    await rejected(client, api, "r", {"canvas": {"background": {"color": "blue"}}}, "canvas.background.color")
    await rejected(client, api, "r", {"template": "custom", "regions": [region(0, 0, 0, 10)]}, "regions[0].w")
    await rejected(client, api, "r", {"regions": [{**region(0, 0, 10, 10), "units": "inch"}]}, "regions[0].units")
    await rejected(client, api, "r", {"max_videos": 0}, "max_videos")


async def test_missing_image_is_named(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    await rejected(client, api, "r", {"canvas": {"background": {"image": "FI_doesnotexist"}}},
                   "canvas.background.image", code="bad_image")


async def test_layout_permissions(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    await api.expect_error(await put(client, api, "ghost", {"template": "grid"}), 404, "room_not_found", "room_id")
    token = {"Authorization": f"Bearer {await api.join_token('r', 'alice')}"}
    response = await client.get("/v1/rooms/r/layout", headers=token)
    assert response.status == 200
    before = await api.layout("r")
    response = await client.put("/v1/rooms/r/layout", json={"template": "speaker"}, headers=token)
    await api.expect_error(response, 403, "operator_only")
    assert await api.layout("r") == before


async def test_layout_change_is_an_event(client: TestClient, api: Any, event_log: Any) -> None:
    await api.create_room(room_id="r")
    log = event_log("r")
    assert (await put(client, api, "r", {"template": "speaker"})).status == 200
    events = log.named("room.layout")
    assert [(e.data["template"], e.data["regions"]) for e in events] == [("speaker", 0)]
    await rejected(client, api, "r", {"template": "nope"}, "template")
    assert log.named("room.layout") == events
