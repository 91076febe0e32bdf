"""Egress over the API: bad requests are refused naming the field and leave nothing behind;
live updates change a recording's own composite, and refuse to change a shared one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


@pytest.fixture
async def room(client: Any, auth: dict[str, str]) -> str:
    await client.post("/v1/rooms", json={"room_id": "eg"}, headers=auth)
    response = await client.post("/v1/rooms/eg/ingress", headers=auth,
                                 json={"kind": "test", "identity": "red", "pattern": {"color": "FF0000"}})
    assert response.status == 201
    return (await response.json())["participant_id"]


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ({"kind": "teleport"}, 400, "validation_error", "kind"),
    ({"kind": "record", "record": {"file_prefix": "../x"}}, 400, "validation_error", "record.file_prefix"),
    ({"kind": "record", "record": {"storage": {"backend": "ftp"}}}, 400, "validation_error",
     "record.storage.backend"),
    ({"kind": "record", "urls": ["rtmp://cdn/live/x"]}, 400, "validation_error", "urls"),
    ({"kind": "record", "source": {"participant": "ghost"}}, 404, "participant_not_found", "participant_id"),
    ({"kind": "record", "encoding": {"fps": 500}}, 400, "validation_error", "encoding.fps"),
    ({"kind": "record", "layout": {"template": "custom", "regions": [{"x": 1300, "y": 0, "w": 10, "h": 10}]}},
     400, "validation_error", "layout.regions[0]"),
])
async def test_bad_egress_requests_name_the_field_and_start_nothing(client: Any, auth: dict[str, str], room: str,
                                                                   node: Any, body: dict, status: int, code: str,
                                                                   field: str) -> None:
    response = await client.post("/v1/rooms/eg/egress", json=body, headers=auth)
    assert response.status == status, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == code and error["field"] == field
    assert node.egress.list("eg") == []
    assert (await node.rooms.get("eg")).media.composites == {}


async def test_live_update_of_an_own_layout_and_refusal_on_the_shared_one(client: Any, auth: dict[str, str],
                                                                          room: str, node: Any) -> None:
    shared = await (await client.post("/v1/rooms/eg/egress", json={"kind": "record"}, headers=auth)).json()
    response = await client.patch(f"/v1/egress/{shared['egress_id']}", json={"layout": {"template": "speaker"}},
                                  headers=auth)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "follows_room_layout"
    media = (await node.rooms.get("eg")).media
    assert media.composites["room"].layout.template == "grid"  # the room's composite is untouched
    response = await client.patch(f"/v1/egress/{shared['egress_id']}", json={"urls": ["rtmp://x/y"]}, headers=auth)
    assert response.status == 400 and (await response.json())["error"]["field"] == "urls"

    own = await (await client.post("/v1/rooms/eg/egress", headers=auth, json={
        "kind": "record", "layout": {"template": "grid"}})).json()
    key = f"egress:{own['egress_id']}"
    response = await client.patch(f"/v1/egress/{own['egress_id']}", headers=auth, json={"layout": {
        "template": "custom", "regions": [{"source": {"participant": "red"}, "x": 0, "y": 0, "w": 320, "h": 180}]}})
    assert response.status == 200, await response.text()
    regions = media.composites[key].compositor._regions
    assert [(r.participant_id, r.x, r.y, r.w, r.h) for r in regions] == [(room, 0, 0, 320, 180)]
    assert media.composites["room"].layout.template == "grid"

    await asyncio.sleep(0.5)
    stopped = await (await client.delete(f"/v1/egress/{own['egress_id']}", headers=auth)).json()
    assert stopped["status"] == "complete"
    response = await client.patch(f"/v1/egress/{own['egress_id']}", json={"layout": {"template": "grid"}},
                                  headers=auth)
    assert response.status == 422 and (await response.json())["error"]["code"] == "egress_ended"
    assert key not in media.composites
