"""Issue 6 items 1, 2, 4, 5: revoked keys, password self-join, brute force, smaller holes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import FormData, WSServerHandshakeError
from aiohttp.test_utils import TestClient

import gateway.security
from gateway.node import Node
from gateway.rooms.participant import Role
from tests.api.test_files import png_bytes
from tests.conftest import ACCESS_KEY, SECRET_KEY

MakeNode = Callable[..., Awaitable[Node]]


async def _token_for(client: TestClient, access: str, secret: str) -> str:
    response = await client.post("/v1/auth/token", json={"access_key": access, "secret_key": secret})
    assert response.status == 200, await response.text()
    return (await response.json())["token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def kdf_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Every scrypt verification: (thread id, stored hash); the original still runs."""
    calls: list[tuple[int, str]] = []
    original = gateway.security.verify_secret

    def recording(secret: str, stored: str) -> bool:
        calls.append((threading.get_ident(), stored))
        return original(secret, stored)

    monkeypatch.setattr(gateway.security, "verify_secret", recording)
    return calls


# ------------------------------------------------------------------ 1. revoked keys
async def test_revoked_key_ends_its_tokens_also_on_another_node(make_node: MakeNode, client_for: Any) -> None:
    """A token stops working once its key is revoked, also when another node sharing the store
    revokes it (each node checks the store, caching for auth.key_cache_ttl_s)."""
    first = await make_node("auth.key_cache_ttl_s=0.2")
    other = await make_node()  # same data dir: same store and signing secret
    client = await client_for(first)
    access, secret = await first.keys.create("ci")
    token = await _token_for(client, access, secret)
    assert (await client.get("/v1/rooms", headers=_bearer(token))).status == 200
    created = await client.post("/v1/rooms", json={"room_id": "k1"}, headers=_bearer(token))
    assert created.status == 201
    assert await other.keys.revoke(access)

    async def refused() -> bool:
        response = await client.get("/v1/rooms", headers=_bearer(token))
        return response.status == 401 and (await response.json())["error"]["code"] == "key_revoked"

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await refused():
        assert loop.time() < deadline, "a revoked key's token kept working"
        await asyncio.sleep(0.1)
    assert (await client.post("/v1/rooms", json={"room_id": "k2"}, headers=_bearer(token))).status == 401
    with pytest.raises(WSServerHandshakeError) as refused_ws:
        await client.ws_connect("/v1/rooms/k1/ws", params={"access_token": token})
    assert refused_ws.value.status == 401
    # a new token cannot be had for it either
    response = await client.post("/v1/auth/token", json={"access_key": access, "secret_key": secret})
    assert response.status == 401


async def test_revoke_on_this_node_takes_effect_at_once(node: Node, client: TestClient) -> None:
    access, secret = await node.keys.create()
    token = await _token_for(client, access, secret)
    assert (await client.get("/v1/rooms", headers=_bearer(token))).status == 200  # now cached as active
    assert await node.keys.revoke(access)
    assert (await client.get("/v1/rooms", headers=_bearer(token))).status == 401


async def test_token_of_unknown_key_is_refused(node: Node, client: TestClient) -> None:
    forged, _ = node.tokens.api_token("AKnosuchkey", 600)  # signed right, but no such key exists
    response = await client.get("/v1/rooms", headers=_bearer(forged))
    assert response.status == 401 and (await response.json())["error"]["code"] == "key_revoked"


# ------------------------------------------------------------------ 2. password self-join
async def _self_join(client: TestClient, room_id: str, identity: str, password: str) -> Any:
    return await client.post(f"/v1/rooms/{room_id}/join", json={"identity": identity, "password": password})


async def test_password_self_join_never_makes_the_owner(client: TestClient, api: Any, connect: Any) -> None:
    await api.create_room(room_id="pw", password="letmein", owner_id="boss", host_id="host")
    for identity in ("boss", "host"):
        response = await _self_join(client, "pw", identity, "letmein")
        assert response.status == 201, await response.text()
        socket = await connect("pw", (await response.json())["token"])
        welcome = socket.seen[0]
        me = [p for p in welcome["room"]["participants"] if p["participant_id"] == welcome["participant_id"]]
        assert me and not me[0]["role"] & Role.OWNER, me
        for command in ("settitle hijacked", "kickuser [username:nobody]", "setmergemode 2"):
            reply = await socket.command(command)
            assert reply["type"] == "error" and reply["error"]["code"] == "not_owner", (command, reply)
        await socket.close()
    assert (await api.room("pw"))["title"] == ""


async def test_host_password_makes_the_host(client: TestClient, api: Any, connect: Any) -> None:
    room = await api.create_room(room_id="hp", password="guest-pw", host_password="host-pw")
    assert room["has_host_password"] is True and "host_password" not in room
    assert "host-pw" not in str(room) and "scrypt" not in str(room)
    response = await _self_join(client, "hp", "teacher", "host-pw")
    assert response.status == 201, await response.text()
    socket = await connect("hp", (await response.json())["token"])
    reply = await socket.ok("settitle Lesson 1")
    assert reply["title"] == "Lesson 1"
    guest = await _self_join(client, "hp", "pupil", "guest-pw")
    assert guest.status == 201
    pupil = await connect("hp", (await guest.json())["token"])
    assert (await pupil.command("settitle mine"))["error"]["code"] == "not_owner"
    # the host password can be removed; then it admits nobody
    response = await client.patch("/v1/rooms/hp", json={"host_password": ""}, headers=api.auth)
    assert response.status == 200 and (await response.json())["has_host_password"] is False
    await api.expect_error(await _self_join(client, "hp", "t2", "host-pw"), 403, "bad_password", "password")


async def test_password_self_join_cannot_take_a_connected_identity(client: TestClient, api: Any,
                                                                   connect: Any) -> None:
    await api.create_room(room_id="imp", password="pw")
    # a token fetched before the real alice connects must not reach her participant later
    early = await _self_join(client, "imp", "alice", "pw")
    assert early.status == 201
    alice = await connect("imp", await api.join_token("imp", "alice"))
    await api.expect_error(await _self_join(client, "imp", "alice", "pw"), 409, "identity_connected", "identity")
    impostor = await connect("imp", (await early.json())["token"], welcome=False)
    messages, code = await impostor.closed()
    assert messages[0]["type"] == "error" and messages[0]["error"]["code"] == "identity_connected", messages
    assert code == 4003
    participants = await api.participants("imp")
    assert [p["identity"] for p in participants] == ["alice"]
    await alice.ok("sendtext still me")


# ------------------------------------------------------------------ 4. brute force, KDF off the loop
async def test_wrong_room_passwords_run_off_the_loop_and_get_429(make_node: MakeNode, client_for: Any,
                                                                 kdf_calls: list[tuple[int, str]]) -> None:
    node = await make_node("auth.max_failures=4", "auth.failure_window_s=600")
    client = await client_for(node)
    token = await _token_for(client, ACCESS_KEY, SECRET_KEY)
    assert (await client.post("/v1/rooms", json={"room_id": "bf", "password": "right"},
                              headers=_bearer(token))).status == 201
    loop_thread = threading.get_ident()
    attempts = [asyncio.ensure_future(_self_join(client, "bf", f"guess{i}", f"wrong{i}")) for i in range(8)]
    health = [await client.get("/healthz") for _ in range(3)]  # answered while the guesses run
    responses = await asyncio.gather(*attempts)
    assert all(response.status == 200 for response in health)
    statuses = sorted(response.status for response in responses)
    assert 403 in statuses and 429 in statuses, statuses
    limited = next(response for response in responses if response.status == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert (await limited.json())["error"]["code"] == "too_many_attempts"
    assert kdf_calls and all(thread != loop_thread for thread, _ in kdf_calls)
    assert len(kdf_calls) <= 8
    # the right password is refused too while the allowance is spent (no guessing through)
    assert (await _self_join(client, "bf", "late", "right")).status == 429


async def test_unknown_access_key_costs_a_kdf_like_a_known_one(node: Node, client: TestClient,
                                                               kdf_calls: list[tuple[int, str]]) -> None:
    access, _ = await node.keys.create()
    loop_thread = threading.get_ident()
    for key in (access, "AKunknown0000000", ACCESS_KEY):
        kdf_calls.clear()
        response = await client.post("/v1/auth/token", json={"access_key": key, "secret_key": "wrong"})
        assert response.status == 401
        assert len(kdf_calls) == 1, (key, kdf_calls)  # one scrypt run whether the key exists or not
        assert kdf_calls[0][0] != loop_thread


async def test_failed_key_secrets_are_limited(make_node: MakeNode, client_for: Any) -> None:
    node = await make_node("auth.max_failures=3", "auth.failure_window_s=600")
    client = await client_for(node)
    statuses = []
    for _ in range(5):
        response = await client.post("/v1/auth/token", json={"access_key": ACCESS_KEY, "secret_key": "nope"})
        statuses.append(response.status)
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429], statuses
    assert "Retry-After" in response.headers


async def test_general_rate_limit_per_client(make_node: MakeNode, client_for: Any) -> None:
    node = await make_node("http.rate_limit_per_s=0.01", "http.rate_limit_burst=5")
    client = await client_for(node)
    statuses = [(await client.get("/healthz")).status for _ in range(7)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429], statuses
    response = await client.get("/healthz")
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"]["code"] == "rate_limited"


def test_default_rate_limit_is_generous(make_config: Any) -> None:
    http = make_config().http
    assert (http.rate_limit_per_s, http.rate_limit_burst) == (100, 400)
    assert make_config("http.rate_limit_per_s=0").http.rate_limit_per_s == 0  # 0 = off


# ------------------------------------------------------------------ 5. smaller holes
async def test_query_token_only_on_the_websocket_route(client: TestClient, token: str) -> None:
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    for path in ("/v1/rooms", "/v1/files", "/v1/nodes"):
        response = await client.get(path, params={"access_token": token}, headers=upgrade)
        assert response.status == 401, (path, response.status)
        assert (await response.json())["error"]["code"] == "missing_token"


async def test_only_the_join_route_skips_authentication(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="j")
    for path in ("/v1/rooms/j/close/join", "/v1/rooms/j/lock/join", "/v1/files/join", "/v1/rooms/j%2Fjoin"):
        response = await client.post(path, json={})
        assert response.status == 401, (path, response.status, await response.text())
    # the real self-join route stays public
    response = await client.post("/v1/rooms/j/join", json={"identity": "x", "password": "y"})
    assert response.status == 403 and (await response.json())["error"]["code"] == "no_password"


async def test_downloads_are_not_sniffed(client: TestClient, api: Any) -> None:
    body = FormData()
    body.add_field("file", png_bytes(), filename="picture.png", content_type="image/png")
    response = await client.post("/v1/files", data=body, headers=api.auth)
    assert response.status == 201, await response.text()
    file_id = (await response.json())["file_id"]
    download = await client.get(f"/v1/files/{file_id}/content", headers=api.auth)
    assert download.status == 200
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Content-Disposition"].startswith("attachment")


async def test_slow_request_head_is_dropped(make_config: Any) -> None:
    """A client that never finishes its request line and headers is disconnected after
    http.keepalive_timeout_s (aiohttp's own default would keep it an hour)."""
    node = Node(make_config("http.keepalive_timeout_s=1"))
    try:
        url = await node.serve(host="127.0.0.1", port=0)
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=30)  # EOF once the server hangs up
        assert b"200 OK" not in data
        writer.close()
        # an ordinary request on a fresh connection still works
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"200 OK" in await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
    finally:
        await node.stop()
