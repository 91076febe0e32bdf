"""Rooms: create, list, read, update, lock, capacity, close, delete, timeouts and body errors."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.node import Node

ROOM_FIELDS = {"room_id", "topic", "status", "title", "owner_id", "host_id", "has_password", "has_host_password",
               "max_participants",
               "locked", "close_when_owner_leaves", "empty_timeout_s", "auto_composite", "auto_record",
               "voice_activated", "metadata", "layout", "node_id", "created_at", "participant_count",
               "participants"}


async def test_create_with_custom_id(client: TestClient, api: Any, node: Node) -> None:
    response = await client.post("/v1/rooms", json={"room_id": "Team_1-a", "topic": "standup", "max_participants": 5,
                                                    "password": "pw", "host_id": "h"}, headers=api.auth)
    assert response.status == 201
    room = await response.json()
    assert set(room) == ROOM_FIELDS
    assert room["room_id"] == "Team_1-a" and room["topic"] == "standup" and room["max_participants"] == 5
    assert room["has_password"] is True and room["host_id"] == "h" and room["status"] == "open"
    assert room["participant_count"] == 0 and room["participants"] == []
    assert room["node_id"] == node.node_id
    assert "password" not in room and "password_hash" not in room  # neither the password nor its hash
    assert await api.room("Team_1-a") == {**room}


async def test_create_generates_an_id(client: TestClient, api: Any) -> None:
    first = await api.create_room()
    second = await api.create_room(topic="x")
    assert re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", first["room_id"])
    assert first["room_id"] != second["room_id"]
    assert (await api.room(first["room_id"]))["room_id"] == first["room_id"]


async def test_custom_id_pattern_enforced(client: TestClient, api: Any) -> None:
    for bad in ("has space", "slash/id", "", "x" * 65, "ünï"):
        response = await client.post("/v1/rooms", json={"room_id": bad}, headers=api.auth)
        await api.expect_error(response, 400, "validation_error", "room_id")
    listing = await (await client.get("/v1/rooms", headers=api.auth)).json()
    assert listing["room_count"] == 0


async def test_duplicate_is_409_and_first_unchanged(client: TestClient, api: Any) -> None:
    first = await api.create_room(room_id="dup", topic="first", max_participants=3)
    response = await client.post("/v1/rooms", json={"room_id": "dup", "topic": "second", "password": "x"},
                                 headers=api.auth)
    await api.expect_error(response, 409, "room_exists", "room_id")
    assert await api.room("dup") == first
    listing = await (await client.get("/v1/rooms", headers=api.auth)).json()
    assert listing["room_count"] == 1


async def test_list_shape(client: TestClient, api: Any) -> None:
    empty = await (await client.get("/v1/rooms", headers=api.auth)).json()
    assert empty == {"rooms": [], "room_count": 0, "participant_count": 0}
    await api.create_room(room_id="a")
    await api.create_room(room_id="b")
    await api.add_test_participant("a", "src1")
    await api.add_test_participant("a", "src2")
    await api.add_test_participant("b", "src3")
    listing = await (await client.get("/v1/rooms", headers=api.auth)).json()
    assert set(listing) == {"rooms", "room_count", "participant_count"}
    assert listing["room_count"] == 2 and listing["participant_count"] == 3
    by_id = {r["room_id"]: r for r in listing["rooms"]}
    assert set(by_id) == {"a", "b"}
    assert by_id["a"]["participant_count"] == 2
    assert sorted(p["identity"] for p in by_id["a"]["participants"]) == ["src1", "src2"]
    assert [p["identity"] for p in by_id["b"]["participants"]] == ["src3"]


async def test_get_missing_room(client: TestClient, api: Any) -> None:
    response = await client.get("/v1/rooms/nope", headers=api.auth)
    await api.expect_error(response, 404, "room_not_found", "room_id")


async def test_patch_updates(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="p")
    response = await client.patch("/v1/rooms/p", json={"topic": "new topic", "max_participants": 7},
                                  headers=api.auth)
    assert response.status == 200
    room = await response.json()
    assert room["topic"] == "new topic" and room["max_participants"] == 7 and room["has_password"] is False
    response = await client.patch("/v1/rooms/p", json={"password": "pw"}, headers=api.auth)
    room = await response.json()
    assert room["has_password"] is True
    assert room["topic"] == "new topic" and room["max_participants"] == 7  # untouched keys stay
    response = await client.patch("/v1/rooms/p", json={"metadata": {"k": "v"}, "empty_timeout_s": 42},
                                  headers=api.auth)
    room = await response.json()
    assert room["metadata"] == {"k": "v"} and room["empty_timeout_s"] == 42
    assert await api.room("p") == room


async def test_patch_rejections_change_nothing(client: TestClient, api: Any) -> None:
    before = await api.create_room(room_id="p", topic="keep")
    cases = [({"bogus": 1}, "bogus"), ({"topic": "x", "colour": "red"}, "colour"),
             ({"max_participants": "many"}, "max_participants"), ({"max_participants": -1}, "max_participants"),
             ({"locked": "maybe"}, "locked"), ({"topic": "t" * 300}, "topic")]
    for body, field in cases:
        response = await client.patch("/v1/rooms/p", json=body, headers=api.auth)
        await api.expect_error(response, 400, "validation_error", field)
    assert await api.room("p") == before
    response = await client.patch("/v1/rooms/ghost", json={"topic": "x"}, headers=api.auth)
    await api.expect_error(response, 404, "room_not_found", "room_id")


async def test_lock_refuses_websocket_join(client: TestClient, api: Any, connect: Any) -> None:
    await api.create_room(room_id="l")
    token = await api.join_token("l", "alice")
    response = await client.post("/v1/rooms/l/lock", json={"locked": True}, headers=api.auth)
    assert response.status == 200
    assert (await response.json())["locked"] is True
    socket = await connect("l", token, welcome=False)
    messages, code = await socket.closed()
    assert [m["type"] for m in messages] == ["error"]
    assert messages[0]["error"]["code"] == "room_locked"
    assert code == 4003
    assert await api.participants("l") == []
    # the operator's own test ingress may still enter a locked room
    await api.add_test_participant("l", "operator-src")
    assert [p["identity"] for p in await api.participants("l")] == ["operator-src"]
    # unlock: the participant gets in
    response = await client.post("/v1/rooms/l/lock", json={"locked": False}, headers=api.auth)
    assert (await response.json())["locked"] is False
    await connect("l", token)
    assert sorted(p["identity"] for p in await api.participants("l")) == ["alice", "operator-src"]


async def test_created_locked_and_patch_lock(client: TestClient, api: Any, connect: Any) -> None:
    await api.create_room(room_id="l2", locked=True)
    token = await api.join_token("l2", "bob")
    messages, _ = await (await connect("l2", token, welcome=False)).closed()
    assert messages[0]["error"]["code"] == "room_locked"
    response = await client.patch("/v1/rooms/l2", json={"locked": False}, headers=api.auth)
    assert (await response.json())["locked"] is False
    await connect("l2", token)
    assert [p["identity"] for p in await api.participants("l2")] == ["bob"]


async def test_max_participants_one(client: TestClient, api: Any, connect: Any) -> None:
    await api.create_room(room_id="solo", max_participants=1)
    first = await connect("solo", await api.join_token("solo", "alice"))
    second = await connect("solo", await api.join_token("solo", "bob"), welcome=False)
    messages, code = await second.closed()
    assert messages[0]["type"] == "error" and messages[0]["error"]["code"] == "room_full"
    assert code == 4003
    assert [p["identity"] for p in await api.participants("solo")] == ["alice"]
    assert not first.ws.closed


async def test_close_removes_everyone(client: TestClient, api: Any, connect: Any) -> None:
    await api.create_room(room_id="c")
    ingress = await api.add_test_participant("c", "src")
    socket = await connect("c", await api.join_token("c", "alice"))
    assert len(await api.participants("c")) == 2
    response = await client.post("/v1/rooms/c/close", headers=api.auth)
    assert response.status == 200
    room = await response.json()
    assert room["status"] == "closed" and room["participants"] == [] and room["participant_count"] == 0
    messages, code = await socket.closed()
    assert {"type": "closed", "reason": "room_closed"} in messages
    assert code == 4000
    await api.expect_error(await client.get("/v1/rooms/c", headers=api.auth), 404, "room_not_found", "room_id")
    listing = await (await client.get("/v1/rooms", headers=api.auth)).json()
    assert listing["room_count"] == 0
    task = await (await client.get(f"/v1/ingress/{ingress['ingress_id']}", headers=api.auth)).json()
    assert task["status"] not in ("publishing", "starting")
    # closed rooms cannot be closed again through the API
    await api.expect_error(await client.post("/v1/rooms/c/close", headers=api.auth), 404, "room_not_found",
                           "room_id")


async def test_delete(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="d")
    await api.add_test_participant("d", "src")
    response = await client.delete("/v1/rooms/d", headers=api.auth)
    assert response.status == 204
    assert await response.read() == b""
    await api.expect_error(await client.get("/v1/rooms/d", headers=api.auth), 404, "room_not_found", "room_id")
    await api.expect_error(await client.delete("/v1/rooms/d", headers=api.auth), 404, "room_not_found", "room_id")
    # the id is free again
    await api.create_room(room_id="d")


async def test_empty_timeout_closes_room(client: TestClient, api: Any) -> None:
    room = await api.create_room(room_id="idle", empty_timeout_s=1)
    assert room["empty_timeout_s"] == 1
    await api.wait_until(lambda: _gone(api, "idle"), "room 'idle' closed by its empty timeout")


async def test_empty_timeout_zero_keeps_room(client: TestClient, api: Any) -> None:
    room = await api.create_room(room_id="forever", empty_timeout_s=0)
    assert room["empty_timeout_s"] == 0
    other = await api.create_room(room_id="marker", empty_timeout_s=1)
    assert other["empty_timeout_s"] == 1
    await api.wait_until(lambda: _gone(api, "marker"), "room 'marker' closed by its empty timeout")
    assert (await api.room("forever"))["status"] == "open"


async def _gone(api: Any, room_id: str) -> bool:
    return not await api.room_exists(room_id)


async def test_close_when_owner_leaves(client: TestClient, api: Any, connect: Any) -> None:
    room = await api.create_room(room_id="boss-room", owner_id="boss", close_when_owner_leaves=True)
    assert room["close_when_owner_leaves"] is True and room["owner_id"] == "boss"
    guest = await connect("boss-room", await api.join_token("boss-room", "guest"))
    boss = await connect("boss-room", await api.join_token("boss-room", "boss"))
    assert sorted(p["identity"] for p in await api.participants("boss-room")) == ["boss", "guest"]
    await boss.close()
    await api.wait_until(lambda: _gone(api, "boss-room"), "room closed after its owner left")
    messages, _ = await guest.closed()
    assert {"type": "closed", "reason": "room_closed"} in messages


async def test_guest_leaving_does_not_close(client: TestClient, api: Any, connect: Any) -> None:
    await api.create_room(room_id="stay", owner_id="boss", close_when_owner_leaves=True)
    boss = await connect("stay", await api.join_token("stay", "boss"))
    guest = await connect("stay", await api.join_token("stay", "guest"))
    await guest.close()
    await boss.event("participant.left", identity="guest")
    assert (await api.room("stay"))["status"] == "open"
    assert [p["identity"] for p in await api.participants("stay")] == ["boss"]


async def test_malformed_json(client: TestClient, api: Any) -> None:
    headers = {**api.auth, "Content-Type": "application/json"}
    response = await client.post("/v1/rooms", data=b'{"room_id": "x"', headers=headers)
    await api.expect_error(response, 400, "malformed_json")
    response = await client.post("/v1/rooms", data=b"\xff\xfe", headers=headers)
    await api.expect_error(response, 400, "malformed_json")
    for body in (b"[1, 2]", b'"room"', b"42", b"null"):
        response = await client.post("/v1/rooms", data=body, headers=headers)
        await api.expect_error(response, 400, "malformed_json")
    listing = await (await client.get("/v1/rooms", headers=api.auth)).json()
    assert listing["room_count"] == 0


async def test_body_too_large(make_node: Any, client_for: Any, api: Any) -> None:
    small = await make_node("http.max_json_kb=1")
    small_client = await client_for(small)
    token = small.tokens.api_token("test_access", 600)[0]
    headers = {"Authorization": f"Bearer {token}"}
    response = await small_client.post("/v1/rooms", json={"room_id": "big", "metadata": {"blob": "x" * 4096}},
                                       headers=headers)
    await api.expect_error(response, 413, "payload_too_large")
    response = await small_client.get("/v1/rooms/big", headers=headers)
    await api.expect_error(response, 404, "room_not_found", "room_id")
    response = await small_client.post("/v1/rooms", json={"room_id": "small"}, headers=headers)
    assert response.status == 201


async def test_interrupted_close_can_be_finished(client: TestClient, api: Any, node: Node) -> None:
    """A close cancelled half-way (client gone, shutdown) must not leave the room stuck in 'closing'."""
    await api.create_room(room_id="stuck")
    entered, release = asyncio.Event(), asyncio.Event()

    class SlowEdge:
        async def close(self, reason: str) -> None:
            entered.set()
            await release.wait()

    await node.rooms.join("stuck", "slow", kind="test", edge=SlowEdge(), operator=True)
    closing = asyncio.create_task(node.rooms.close("stuck", "api"))
    await entered.wait()
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    release.set()
    response = await client.post("/v1/rooms/stuck/close", headers=api.auth)
    assert response.status in (200, 404), await response.text()
    if response.status == 200:
        assert (await response.json())["status"] == "closed"
    await api.expect_error(await client.get("/v1/rooms/stuck", headers=api.auth), 404, "room_not_found", "room_id")
