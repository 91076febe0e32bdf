"""The room WebSocket: handshake and auth, events, chat, and every control command in text and JSON form."""

from __future__ import annotations

import types
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from gateway.node import Node

URI = "[username:{}@example.com]"


async def _room(api: Any, room_id: str = "r", **body: Any) -> str:
    await api.create_room(room_id=room_id, **body)
    return room_id


# ---------------------------------------------------------------------------- handshake

@pytest.mark.parametrize("header", [False, True], ids=["query", "header"])
async def test_operator_socket_gets_welcome(client: TestClient, api: Any, connect: Any, token: str,
                                            header: bool) -> None:
    room_id = await _room(api, topic="t")
    socket = await connect(room_id, token, header=header)
    welcome = socket.seen[0]
    assert welcome["type"] == "welcome"
    assert welcome["participant_id"] is None
    assert welcome["room"]["room_id"] == room_id and welcome["room"]["topic"] == "t"
    assert {"setstate", "setrole", "setnick", "kickuser", "settitle", "sendtext", "subscribe", "vsubscribe",
            "setmergemode", "setlayout", "setmergemode_i", "setmerge_i"} <= set(welcome["commands"])
    assert await api.participants(room_id) == []  # an operator is not a participant


async def test_participant_socket_joins_and_leaves(client: TestClient, api: Any, connect: Any) -> None:
    room_id = await _room(api)
    socket = await connect(room_id, await api.join_token(room_id, "alice", name="Alice", permissions=2 | 8 | 32))
    pid = socket.seen[0]["participant_id"]
    assert pid.startswith("PA_")
    listed = await api.participants(room_id)
    assert [(p["participant_id"], p["identity"], p["name"], p["kind"], p["permissions"]) for p in listed] == [
        (pid, "alice", "Alice", "webrtc", 2 | 8 | 32)]
    await socket.close()

    async def empty() -> bool:
        return await api.participants(room_id) == []

    await api.wait_until(empty, "participant left after closing its socket")


async def test_handshake_refusals(client: TestClient, api: Any, node: Node) -> None:
    await _room(api, "r1")
    await _room(api, "r2")
    other_room = await api.join_token("r2", "alice")
    no_enter = await api.join_token("r1", "bob", permissions=0xFF & ~2)
    expired, _ = node.tokens.join_token("r1", "carol", ttl_s=-5)
    cases = [({"access_token": other_room}, 403), ({"access_token": no_enter}, 403), ({}, 401),
             ({"access_token": "garbage"}, 401), ({"access_token": expired}, 401)]
    for params, status in cases:
        with pytest.raises(WSServerHandshakeError) as info:
            await client.ws_connect("/v1/rooms/r1/ws", params=params)
        assert info.value.status == status, params
    with pytest.raises(WSServerHandshakeError) as info:
        await client.ws_connect("/v1/rooms/ghost/ws", headers=api.auth)
    assert info.value.status == 404
    assert await api.participants("r1") == []
    # the HTTP answer names the reason
    response = await client.get("/v1/rooms/r1/ws", params={"access_token": other_room},
                                headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    await api.expect_error(response, 403, "wrong_room", "room_id")
    response = await client.get("/v1/rooms/r1/ws", params={"access_token": no_enter},
                                headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    await api.expect_error(response, 403, "permission_denied")


async def test_query_token_only_for_websockets(client: TestClient, api: Any, token: str) -> None:
    response = await client.get("/v1/rooms", params={"access_token": token})
    await api.expect_error(response, 401, "missing_token")


# ---------------------------------------------------------------------------- events and chat

async def test_events_join_and_chat(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    operator = await connect(room_id, token)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    alice_id = alice.seen[0]["participant_id"]
    joined = await operator.event("participant.joined")
    assert joined["room_id"] == room_id and joined["data"]["participant"]["participant_id"] == alice_id
    assert {"id", "event", "room_id", "ts_ms", "data", "type"} == set(joined)
    reply = await alice.ok("sendtext hello")
    assert reply["cmd"] == "sendtext" and reply["target"] is None
    chat = await operator.event("room.chat")
    assert chat["data"]["text"] == "hello" and chat["data"]["sender"] == alice_id
    assert chat["data"]["sender_name"] == "alice" and chat["data"]["target"] is None
    # the sender gets its own message too
    assert (await alice.event("room.chat"))["data"]["text"] == "hello"
    await alice.ok({"cmd": "sendtext", "text": "你好 world"})
    assert (await operator.event("room.chat"))["data"]["text"] == "你好 world"
    # someone else joining shows up on alice's socket
    await connect(room_id, await api.join_token(room_id, "bob"))
    joined = await alice.until(lambda m: m.get("event") == "participant.joined"
                               and m["data"]["participant"]["identity"] == "bob")
    assert joined["data"]["participant"]["kind"] == "webrtc"


async def test_sendtext_to_a_target(client: TestClient, api: Any, connect: Any) -> None:
    room_id = await _room(api)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    bob = await connect(room_id, await api.join_token(room_id, "bob"))
    carol = await connect(room_id, await api.join_token(room_id, "carol"))
    bob_id = bob.seen[0]["participant_id"]
    reply = await alice.ok(f"sendtext just for you {URI.format('bob')}")
    assert reply["target"] == bob_id
    private = await bob.event("room.chat")
    assert private["data"]["text"] == "just for you" and private["data"]["target"] == bob_id
    assert (await alice.event("room.chat"))["data"]["text"] == "just for you"
    await alice.ok({"cmd": "sendtext", "text": "json private", "target": "bob"})
    assert (await bob.event("room.chat"))["data"]["text"] == "json private"
    # a broadcast marker: carol, reading in order, sees it without ever seeing the private ones
    await alice.ok("sendtext everyone")
    marker = await carol.until(lambda m: m["type"] == "event" and m["event"] == "room.chat")
    assert marker["data"]["text"] == "everyone"
    assert [m["data"]["text"] for m in carol.seen if m.get("event") == "room.chat"] == ["everyone"]
    # unknown target: an error, nothing sent
    reply = await alice.command("sendtext hi [username:nobody@example.com]")
    assert reply["type"] == "error" and reply["error"]["code"] == "participant_not_found"


async def test_subscribe_mask_filters_events(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    operator = await connect(room_id, token)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    assert (await alice.ok("subscribe 0x8"))["mask"] == 8
    start = len(alice.seen)
    await connect(room_id, await api.join_token(room_id, "bob"))  # participant.joined (0x2)
    await operator.ok("settitle new title")  # room.updated (0x4)
    await operator.ok(f"setstate 0x8 0x0 {URI.format('alice')}")  # own state (0x1)
    await operator.ok("sendtext marker")  # chat (0x8)
    await alice.event("room.chat", text="marker")
    events = [m for m in alice.seen[start:] if m["type"] == "event"]
    assert [e["event"] for e in events] == ["room.chat"], events
    # JSON form, back to everything
    assert (await alice.ok({"cmd": "subscribe", "mask": 15}))["mask"] == 15
    await operator.ok("settitle again")
    assert (await alice.event("room.updated"))["data"]["title"] == "again"


async def test_subscribe_zero_still_delivers_own_chat(client: TestClient, api: Any, connect: Any) -> None:
    room_id = await _room(api)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    await alice.ok({"cmd": "subscribe", "mask": "0x0"})
    await alice.ok("sendtext mine")
    assert (await alice.event("room.chat"))["data"]["text"] == "mine"


# ---------------------------------------------------------------------------- member commands

async def test_setstate_text_and_json(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    alice_id = alice.seen[0]["participant_id"]
    reply = await alice.ok("setstate 0x8 0x0")
    assert (reply["cmd"], reply["target"], reply["state"]) == ("setstate", alice_id, 0x7)
    assert (await api.participant(room_id, alice_id))["audio_muted"] is True
    reply = await alice.ok({"cmd": "setstate", "mask": 8, "state": 8})
    assert reply["state"] == 0xF
    reply = await alice.ok({"Cmd": "SetState", "Mask": "0x3", "State": "0x1"})  # keys and names any case
    assert reply["state"] == 0xD
    assert (await api.participant(room_id, alice_id))["state"] == 0xD
    # the operator acts on a target named by URI, id or identity
    operator = await connect(room_id, token)
    reply = await operator.ok(f"setstate 0x2 0x2 {URI.format('alice')}")
    assert (reply["target"], reply["state"]) == (alice_id, 0xF)
    reply = await operator.ok({"cmd": "setstate", "mask": 4, "state": 0, "target": alice_id})
    assert reply["state"] == 0xB
    update = await alice.event("participant.updated")
    assert update["data"]["participant"]["participant_id"] == alice_id
    assert (await api.participant(room_id, alice_id))["state"] == 0xB
    reply = await operator.command("setstate 0x8 0x0")
    assert reply["type"] == "error" and reply["error"]["field"] == "target"


async def test_setstate_needs_send_permission(client: TestClient, api: Any, connect: Any) -> None:
    room_id = await _room(api)
    viewer = await connect(room_id, await api.join_token(room_id, "viewer", permissions=2 | 8 | 32))
    vid = viewer.seen[0]["participant_id"]
    await viewer.ok("setstate 0x8 0x0")
    reply = await viewer.command("setstate 0x8 0x8")
    assert reply["type"] == "error" and reply["error"]["code"] == "permission_denied"
    assert (await api.participant(room_id, vid))["audio_muted"] is True


async def test_non_owner_cannot_change_others(client: TestClient, api: Any, connect: Any) -> None:
    room_id = await _room(api)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    bob = await connect(room_id, await api.join_token(room_id, "bob"))
    bob_id = bob.seen[0]["participant_id"]
    for command in (f"setstate 0x8 0x0 {URI.format('bob')}", f"setnick evil {URI.format('bob')}",
                    f"setrole 0x4 0x4 {URI.format('bob')}"):
        reply = await alice.command(command)
        assert reply["type"] == "error", command
        assert (reply["error"]["code"], reply["error"]["field"]) == ("not_owner", "target")
    bob_now = await api.participant(room_id, bob_id)
    assert (bob_now["state"], bob_now["name"], bob_now["role"]) == (0xF, "bob", 0x2)


async def test_setrole(client: TestClient, api: Any, connect: Any) -> None:
    room_id = await _room(api)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    alice_id = alice.seen[0]["participant_id"]
    assert (await alice.ok("setrole 0x4 0x4"))["role"] == 0x6
    assert (await alice.ok({"cmd": "setrole", "mask": 2, "role": 0}))["role"] == 0x4
    reply = await alice.command("setrole 0x8 0x8")  # nobody makes themselves owner
    assert reply["type"] == "error" and reply["error"]["code"] == "not_owner"
    assert (await api.participant(room_id, alice_id))["role"] == 0x4


async def test_setnick(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    alice_id = alice.seen[0]["participant_id"]
    reply = await alice.ok("setnick 张三")
    assert (reply["target"], reply["nick"]) == (alice_id, "张三")
    assert (await api.participant(room_id, alice_id))["name"] == "张三"
    reply = await alice.ok({"cmd": "Setnick", "nick": "李四 (主持人)"})
    assert reply["nick"] == "李四 (主持人)"
    operator = await connect(room_id, token)
    reply = await operator.ok(f"setnick 王五 {URI.format('alice')}")
    assert reply["nick"] == "王五"
    assert (await api.participant(room_id, alice_id))["name"] == "王五"
    reply = await alice.command({"cmd": "setnick", "nick": "   "})
    assert reply["type"] == "error" and reply["error"]["field"] == "nick"
    assert (await api.participant(room_id, alice_id))["name"] == "王五"


async def test_kickuser_owner_only(client: TestClient, api: Any, connect: Any) -> None:
    room_id = await _room(api, owner_id="boss")
    boss = await connect(room_id, await api.join_token(room_id, "boss"))
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    bob = await connect(room_id, await api.join_token(room_id, "bob"))
    bob_id = bob.seen[0]["participant_id"]
    reply = await alice.command(f"kickuser {URI.format('bob')}")
    assert reply["type"] == "error"
    assert reply["error"]["code"] == "not_owner"
    assert not alice.ws.closed
    assert (await alice.ok("sendtext still here"))["ok"] is True  # the socket stays usable
    assert bob_id in {p["participant_id"] for p in await api.participants(room_id)}
    reply = await boss.ok(f"kickuser {URI.format('bob')}")
    assert reply["target"] == bob_id
    messages, code = await bob.closed()
    assert {"type": "closed", "reason": "kicked"} in messages and code == 4000
    assert sorted(p["identity"] for p in await api.participants(room_id)) == ["alice", "boss"]
    await alice.event("participant.left", participant_id=bob_id)


async def test_kicked_socket_participant_leaves_with_reason_kicked(client: TestClient, api: Any,
                                                                   connect: Any, token: str) -> None:
    """participant.left says why: a kick is 'kicked', whichever way the socket then closes."""
    room_id = await _room(api)
    operator = await connect(room_id, token)
    bob = await connect(room_id, await api.join_token(room_id, "bob"))
    bob_id = bob.seen[0]["participant_id"]
    await operator.ok(f"kickuser {URI.format('bob')}")
    await bob.closed()
    left = await operator.event("participant.left", participant_id=bob_id)
    assert left["data"]["reason"] == "kicked"


async def test_kickuser_json_by_operator(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    operator = await connect(room_id, token)
    ingress = await api.add_test_participant(room_id, "src")
    reply = await operator.ok({"cmd": "kickuser", "target": "src"})
    assert reply["target"] == ingress["participant_id"]
    assert await api.participants(room_id) == []
    reply = await operator.command({"cmd": "kickuser", "target": "src"})
    assert reply["type"] == "error" and reply["error"]["code"] == "participant_not_found"


async def test_settitle(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    operator = await connect(room_id, token)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    assert (await operator.ok("settitle Weekly 周会"))["title"] == "Weekly 周会"
    assert (await api.room(room_id))["title"] == "Weekly 周会"
    assert (await alice.event("room.updated"))["data"]["title"] == "Weekly 周会"
    assert (await operator.ok({"cmd": "settitle", "Title": "JSON title"}))["title"] == "JSON title"
    reply = await alice.command("settitle mine now")
    assert reply["type"] == "error" and reply["error"]["code"] == "not_owner"
    assert (await api.room(room_id))["title"] == "JSON title"


async def test_vsubscribe(client: TestClient, api: Any, connect: Any, token: str, node: Node) -> None:
    room_id = await _room(api)
    ingress = await api.add_test_participant(room_id, "src")
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    alice_id = alice.seen[0]["participant_id"]
    reply = await alice.ok(f"vsubscribe {URI.format('src')} 0")
    assert (reply["target"], reply["state"]) == (ingress["participant_id"], 0)
    room = await node.rooms.get(room_id)
    assert room.participants[alice_id].video_subscriptions == {ingress["participant_id"]: False}
    reply = await alice.ok({"cmd": "vsubscribe", "target": "src", "state": 1})
    assert reply["state"] == 1
    assert room.participants[alice_id].video_subscriptions == {ingress["participant_id"]: True}
    operator = await connect(room_id, token)
    reply = await operator.command("vsubscribe src 1")
    assert reply["type"] == "error" and reply["error"]["field"] == "target"
    reply = await alice.command("vsubscribe [username:ghost@example.com] 1")
    assert reply["type"] == "error" and reply["error"]["code"] == "participant_not_found"


async def test_reply_echoes_request_id(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    operator = await connect(room_id, token)
    assert (await operator.ok({"cmd": "settitle", "title": "x", "id": "req-1"}))["id"] == "req-1"
    reply = await operator.command({"cmd": "nosuch", "id": 7})
    assert reply["type"] == "error" and reply["id"] == 7


# ---------------------------------------------------------------------------- layout commands

async def test_setmergemode(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    await api.add_test_participant(room_id, "src")
    operator = await connect(room_id, token)
    for command, template in (("setmergemode 1", "tile"), ("setmergemode 2", "podium"),
                              ("@setmergemode 3", "lecture"), ("setmergemode 5", "free"),
                              ({"cmd": "setmergemode", "mergeMode": 2}, "podium"),
                              ({"cmd": "setmergemode ", "MergeMode": "0x1"}, "tile")):
        reply = await operator.ok(command)
        assert reply["template"] == template, command
        assert (await api.layout(room_id))["template"] == template


async def test_setmergemode_5_keeps_a_smart_template(client: TestClient, api: Any, connect: Any,
                                                      token: str) -> None:
    room_id = await _room(api)
    operator = await connect(room_id, token)
    await operator.ok("setmergemode_i 4 1")
    assert (await operator.ok("setmergemode 5"))["template"] == "big_small_x3"


async def test_setlayout_custom(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    one = await api.add_test_participant(room_id, "one")
    two = await api.add_test_participant(room_id, "two")
    operator = await connect(room_id, token)
    reply = await operator.ok({"cmd": "setlayout", "layout": [[one["participant_id"], 512, 0, 0, 0.5, 1],
                                                              [two["participant_id"], 512, 0.5, 0, 0.5, 1]]})
    assert reply["template"] == "custom"
    layout = await api.layout(room_id)
    assert layout["template"] == "custom"
    regions = [(r["source"]["participant"], r["x"], r["y"], r["w"], r["h"], r["units"]) for r in layout["regions"]]
    assert regions == [(one["participant_id"], 0, 0, 0.5, 1, "fraction"),
                       (two["participant_id"], 0.5, 0, 0.5, 1, "fraction")]
    # then mergeMode 4 (custom) keeps those regions; identities and URIs work as ids too
    assert (await operator.ok("setmergemode 4"))["template"] == "custom"
    assert len((await api.layout(room_id))["regions"]) == 2
    await operator.ok({"cmd": "setlayout", "layout": [["two", 256, 0, 0, 1, 1],
                                                      [URI.format("one"), 256, 0.75, 0.75, 0.25, 0.25]]})
    layout = await api.layout(room_id)
    assert [(r["source"]["participant"], r["x"], r["z"]) for r in layout["regions"]] == [
        (two["participant_id"], 0, 0), (one["participant_id"], 0.75, 1)]


async def test_setlayout_text_form(client: TestClient, api: Any, connect: Any, token: str) -> None:
    """control.py has a text parser for setlayout (a JSON list after the name); string ids must survive it."""
    room_id = await _room(api)
    one = await api.add_test_participant(room_id, "one")
    operator = await connect(room_id, token)
    reply = await operator.ok('setlayout [["one", 256, 0, 0, 1, 1]]')
    assert reply["template"] == "custom"
    assert (await api.layout(room_id))["regions"][0]["source"]["participant"] == one["participant_id"]


async def test_setlayout_rejections_keep_layout(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    one = await api.add_test_participant(room_id, "one")
    operator = await connect(room_id, token)
    await operator.ok({"cmd": "setlayout", "layout": [[one["participant_id"], 512, 0, 0, 1, 1]]})
    before = await api.layout(room_id)
    bad = [({"cmd": "setlayout", "layout": []}, "layout"),
           ({"cmd": "setlayout", "layout": [[one["participant_id"], 512, 0, 0]]}, "layout[0]"),
           ({"cmd": "setlayout", "layout": [["ghost", 512, 0, 0, 1, 1]]}, "participant_id"),
           ("setlayout not json", "layout")]
    for command, field in bad:
        reply = await operator.command(command)
        assert reply["type"] == "error", command
        assert reply["error"]["field"] == field, (command, reply)
    assert await api.layout(room_id) == before


async def test_setlayout_region_outside_canvas_is_a_named_error(client: TestClient, api: Any, connect: Any,
                                                                 token: str) -> None:
    """API.md: regions outside the canvas are an error naming the region, never a silent crop."""
    room_id = await _room(api)
    one = await api.add_test_participant(room_id, "one")
    two = await api.add_test_participant(room_id, "two")
    operator = await connect(room_id, token)
    await operator.ok({"cmd": "setlayout", "layout": [[one["participant_id"], 512, 0, 0, 1, 1]]})
    before = await api.layout(room_id)
    reply = await operator.command({"cmd": "setlayout", "layout": [[one["participant_id"], 512, 0, 0, 0.5, 1],
                                                                   [two["participant_id"], 512, 0.6, 0, 0.5, 1]]})
    assert reply["type"] == "error"
    assert (reply["error"]["code"], reply["error"]["field"]) == ("validation_error", "regions[1]"), reply
    assert await api.layout(room_id) == before


async def test_setmergemode_i_with_uri(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    await api.add_test_participant(room_id, "first")
    await api.add_test_participant(room_id, "qqqq")
    operator = await connect(room_id, token)
    reply = await operator.ok(f"setmergemode_i 3 4 {URI.format('qqqq')}")
    assert (reply["template"], reply["screen_template"]) == ("big_small_x2", "screen_share")
    layout = await api.layout(room_id)
    assert (layout["template"], layout["main"], layout["screen_template"]) == (
        "big_small_x2", "qqqq", "screen_share")
    # URIs with spaces inside the brackets, as the seed samples show
    await operator.ok("@setmergemode_i 1 3 [username: qqqq@sample.cloud.justalk.com]")
    layout = await api.layout(room_id)
    assert (layout["template"], layout["main"], layout["screen_template"]) == (
        "free", "qqqq", "floating")
    await operator.ok({"cmd": "setmergemode_i", "mode": 12, "scsMode": 1})
    layout = await api.layout(room_id)
    assert (layout["template"], layout["main"], layout["screen_template"]) == ("big_small_top", None, "screen")


async def test_setmerge_i_canvas(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    await api.add_test_participant(room_id, "src")
    operator = await connect(room_id, token)
    reply = await operator.ok("setmerge_i 640 360 1 4 24")
    assert reply["template"] == "free"
    layout = await api.layout(room_id)
    assert (layout["canvas"]["width"], layout["canvas"]["height"], layout["canvas"]["fps"]) == (640, 360, 24)
    assert layout["template"] == "free" and layout["screen_template"] == "screen_share"
    await operator.ok({"cmd": "setmerge_i", "width": 1600, "height": 900, "mode": 1, "scsMode": 3, "fps": 30,
                       "uri": URI.format("src")})
    layout = await api.layout(room_id)
    assert (layout["canvas"]["width"], layout["canvas"]["height"], layout["canvas"]["fps"]) == (1600, 900, 30)
    assert layout["main"] == "src"
    for command, field in (("setmerge_i 640 360 1 4 0", "fps"), ("setmerge_i 640 360 1 4 31", "fps"),
                           ("setmerge_i 640 360 14 4 24", "mode"), ("setmerge_i 640 360 1 5 24", "scsmode")):
        reply = await operator.command(command)
        assert reply["type"] == "error" and reply["error"]["field"] == field, (command, reply)
    assert (await api.layout(room_id))["canvas"]["width"] == 1600


async def test_setmerge_i_impossible_canvas_is_a_named_error(client: TestClient, api: Any, connect: Any,
                                                              token: str) -> None:
    room_id = await _room(api)
    operator = await connect(room_id, token)
    await operator.ok("setmerge_i 640 360 1 4 24")
    before = await api.layout(room_id)
    for command, field in (("setmerge_i 5000 360 1 4 24", "canvas.width"),
                           ("setmerge_i 640 8 1 4 24", "canvas.height")):
        reply = await operator.command(command)
        assert reply["type"] == "error", command
        assert (reply["error"]["code"], reply["error"]["field"]) == ("validation_error", field), (command, reply)
    assert await api.layout(room_id) == before


async def test_layout_commands_are_owner_only(client: TestClient, api: Any, connect: Any) -> None:
    room_id = await _room(api)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    before = await api.layout(room_id)
    for command in ("setmergemode 2", "setmergemode_i 3 4", "setmerge_i 640 360 1 4 24",
                    '{"cmd":"setlayout","layout":[["alice",512,0,0,1,1]]}'):
        reply = await alice.command(command)
        assert reply["type"] == "error" and reply["error"]["code"] == "not_owner", command
    assert await api.layout(room_id) == before


# ---------------------------------------------------------------------------- bad input

async def test_bad_commands_keep_the_socket_open(client: TestClient, api: Any, connect: Any, token: str) -> None:
    room_id = await _room(api)
    alice = await connect(room_id, await api.join_token(room_id, "alice"))
    operator = await connect(room_id, token)
    cases = [
        (alice, "dance now", "unknown_command", "cmd"),
        (alice, '{"cmd": "setstate", "mask": ', "bad_request", "cmd"),
        (alice, '{"mask": 8}', "bad_request", "cmd"),
        (alice, "[1, 2]", "unknown_command", "cmd"),
        (alice, "setstate 0x8", "bad_request", "cmd"),
        (alice, "setnick", "bad_request", "cmd"),
        (alice, "setstate zz 0x8", "bad_request", "mask"),
        (alice, {"cmd": "setstate", "mask": 8, "state": "on"}, "bad_request", "state"),
        (alice, "subscribe", "bad_request", "cmd"),
        (alice, "   ", "bad_request", "cmd"),
        (operator, "setmergemode 9", "bad_request", "mergeMode"),
        (operator, {"cmd": "setmergemode", "mergeMode": 0}, "bad_request", "mergeMode"),
        (operator, "setmergemode 4", "bad_request", "mergeMode"),  # custom without a setlayout first
    ]
    for socket, command, code, field in cases:
        reply = await socket.command(command)
        assert reply["type"] == "error", command
        assert (reply["error"]["code"], reply["error"]["field"]) == (code, field), (command, reply)
        assert not socket.ws.closed
    await alice.ws.send_bytes(b"\x00\x01binary")
    reply = await alice.reply()
    assert reply["type"] == "error" and reply["error"]["code"] == "unsupported"
    # still alive and still a participant
    assert (await alice.ok("setnick survivor"))["nick"] == "survivor"
    assert [p["name"] for p in await api.participants(room_id)] == ["survivor"]


async def test_flood_is_rate_limited(client: TestClient, api: Any, connect: Any, token: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.api.ws as ws_module

    frozen = types.SimpleNamespace(monotonic=lambda: 1000.0)  # no refill: the burst is all there is
    monkeypatch.setattr(ws_module, "time", frozen)
    room_id = await _room(api)
    operator = await connect(room_id, token)
    burst = ws_module.RATE_PER_S + 10
    for _ in range(burst):
        await operator.send("subscribe 15")
    replies = [await operator.reply() for _ in range(burst)]  # one reply per command, in order
    assert all(r["type"] == "result" for r in replies[:ws_module.RATE_PER_S])
    limited = replies[ws_module.RATE_PER_S:]
    assert all(r["type"] == "error" and r["error"]["code"] == "rate_limited" for r in limited), limited
    assert not operator.ws.closed


async def test_rate_limited_reply_echoes_request_id(client: TestClient, api: Any, connect: Any, token: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reply to a JSON command carrying an id echoes it, so clients can match replies."""
    import gateway.api.ws as ws_module

    monkeypatch.setattr(ws_module, "time", types.SimpleNamespace(monotonic=lambda: 1000.0))
    room_id = await _room(api)
    operator = await connect(room_id, token)
    burst = ws_module.RATE_PER_S + 2
    for index in range(burst):
        await operator.send({"cmd": "subscribe", "mask": 15, "id": index})
    replies = [await operator.reply() for _ in range(burst)]
    assert replies[-1]["type"] == "error" and replies[-1]["error"]["code"] == "rate_limited"
    assert [r.get("id") for r in replies] == list(range(burst))

