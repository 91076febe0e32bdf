"""Authentication: API tokens from key pairs, HTTP Basic, join tokens and the password self-join."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
from aiohttp.test_utils import TestClient

from gateway.node import Node
from gateway.security import ISSUER, TokenService

ACCESS, SECRET = "test_access", "test_secret_value"


def basic(access: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{access}:{secret}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------------- API tokens

async def test_token_from_access_and_secret(client: TestClient, node: Node) -> None:
    before = int(time.time())
    response = await client.post("/v1/auth/token", json={"access_key": ACCESS, "secret_key": SECRET})
    after = int(time.time())
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"token", "expires_at"}
    ttl = node.config.auth.token_ttl_s
    assert before + ttl <= body["expires_at"] <= after + ttl
    principal = node.tokens.verify(body["token"])
    assert principal.is_operator and principal.subject == ACCESS
    rooms = await client.get("/v1/rooms", headers=bearer(body["token"]))
    assert rooms.status == 200


async def test_token_ttl_is_honoured_and_capped(client: TestClient, node: Node) -> None:
    before = int(time.time())
    short = await (await client.post("/v1/auth/token", json={"access_key": ACCESS, "secret_key": SECRET,
                                                               "ttl_s": 60})).json()
    huge = await (await client.post("/v1/auth/token", json={"access_key": ACCESS, "secret_key": SECRET,
                                                              "ttl_s": 10**9})).json()
    after = int(time.time())
    assert before + 60 <= short["expires_at"] <= after + 60
    cap = node.config.auth.max_token_ttl_s
    assert before + cap <= huge["expires_at"] <= after + cap


async def test_wrong_secret_is_401_invalid_credentials(client: TestClient, api: Any) -> None:
    response = await client.post("/v1/auth/token", json={"access_key": ACCESS, "secret_key": "wrong"})
    await api.expect_error(response, 401, "invalid_credentials")
    response = await client.post("/v1/auth/token", json={"access_key": "nobody", "secret_key": SECRET})
    await api.expect_error(response, 401, "invalid_credentials")


async def test_token_request_validation(client: TestClient, api: Any) -> None:
    response = await client.post("/v1/auth/token", json={"access_key": ACCESS})
    await api.expect_error(response, 400, "validation_error", "secret_key")
    response = await client.post("/v1/auth/token", json={"access_key": ACCESS, "secret_key": SECRET, "ttl_s": 0})
    await api.expect_error(response, 400, "validation_error", "ttl_s")


async def test_missing_authorization_is_401_missing_token(client: TestClient, api: Any) -> None:
    for method, path in (("GET", "/v1/rooms"), ("POST", "/v1/rooms"), ("GET", "/v1/nodes"),
                         ("GET", "/v1/files")):
        response = await client.request(method, path)
        await api.expect_error(response, 401, "missing_token")
    response = await client.get("/v1/rooms", headers={"Authorization": "Bearer "})
    await api.expect_error(response, 401, "missing_token")


async def test_rejected_create_changes_nothing(client: TestClient, api: Any) -> None:
    response = await client.post("/v1/rooms", json={"room_id": "sneaky"})
    await api.expect_error(response, 401, "missing_token")
    listing = await (await client.get("/v1/rooms", headers=api.auth)).json()
    assert listing["room_count"] == 0


async def test_malformed_and_forged_tokens_are_invalid(client: TestClient, api: Any, node: Node) -> None:
    forged, _ = TokenService("not-the-node-secret-" + "x" * 40).api_token(ACCESS, 3600)
    good, _ = node.tokens.api_token(ACCESS, 3600)
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    wrong_alg = jwt.encode({"iss": ISSUER, "sub": ACCESS, "typ": "api", "exp": int(time.time()) + 60},
                           "x" * 64, algorithm="HS512")
    no_exp = jwt.encode({"iss": ISSUER, "sub": ACCESS, "typ": "api"}, _secret(node), algorithm="HS256")
    bad_typ = jwt.encode({"iss": ISSUER, "sub": ACCESS, "typ": "admin", "exp": int(time.time()) + 60},
                         _secret(node), algorithm="HS256")
    bad_iss = jwt.encode({"iss": "someone", "sub": ACCESS, "typ": "api", "exp": int(time.time()) + 60},
                         _secret(node), algorithm="HS256")
    for token in ("garbage", "a.b.c", forged, tampered, wrong_alg, no_exp, bad_typ, bad_iss):
        response = await client.get("/v1/rooms", headers=bearer(token))
        await api.expect_error(response, 401, "invalid_token")


def _secret(node: Node) -> str:
    return node.tokens._secret


async def test_expired_tokens_are_token_expired(client: TestClient, api: Any, node: Node) -> None:
    expired_api, _ = node.tokens.api_token(ACCESS, -10)
    past = int(time.time()) - 100
    expired_join = jwt.encode({"iss": ISSUER, "iat": past - 10, "exp": past, "typ": "join", "sub": "alice",
                               "room": "r1", "perm": 254}, _secret(node), algorithm="HS256")
    for token in (expired_api, expired_join):
        response = await client.get("/v1/rooms", headers=bearer(token))
        await api.expect_error(response, 401, "token_expired")


async def test_http_basic_access_secret(client: TestClient, api: Any) -> None:
    response = await client.post("/v1/rooms", json={"room_id": "basic-room"}, headers=basic(ACCESS, SECRET))
    assert response.status == 201, await response.text()
    response = await client.get("/v1/rooms/basic-room", headers=basic(ACCESS, SECRET))
    assert response.status == 200
    response = await client.get("/v1/rooms", headers=basic(ACCESS, "wrong"))
    await api.expect_error(response, 401, "invalid_credentials")
    response = await client.get("/v1/rooms", headers={"Authorization": "Basic !!!not-base64!!!"})
    await api.expect_error(response, 401, "invalid_credentials")


# ---------------------------------------------------------------------------- join tokens

async def test_join_token_issuance_defaults(client: TestClient, api: Any, node: Node) -> None:
    await api.create_room(room_id="r1")
    before = int(time.time())
    response = await client.post("/v1/rooms/r1/join-tokens", json={"identity": "alice", "name": "Alice"},
                                 headers=api.auth)
    after = int(time.time())
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["permissions"] == 254
    assert body["room_id"] == "r1" and body["identity"] == "alice"
    assert body["ws_url"].startswith("ws://") and body["ws_url"].endswith("/v1/rooms/r1/ws")
    ttl = node.config.auth.join_token_ttl_s
    assert before + ttl <= body["expires_at"] <= after + ttl
    who = node.tokens.verify(body["token"])
    assert (who.kind, who.subject, who.room_id, who.name, who.permissions) == (
        "participant", "alice", "r1", "Alice", 254)


async def test_join_token_custom_bits(client: TestClient, api: Any, node: Node) -> None:
    await api.create_room(room_id="r1")
    for bits in (0, 2 | 8 | 32, 255):
        response = await client.post("/v1/rooms/r1/join-tokens", json={"identity": "bob", "permissions": bits},
                                     headers=api.auth)
        assert response.status == 201
        body = await response.json()
        assert body["permissions"] == bits
        assert node.tokens.verify(body["token"]).permissions == bits
    response = await client.post("/v1/rooms/r1/join-tokens", json={"identity": "bob", "permissions": 256},
                                 headers=api.auth)
    await api.expect_error(response, 400, "validation_error", "permissions")
    response = await client.post("/v1/rooms/r1/join-tokens", json={"identity": "has space"}, headers=api.auth)
    await api.expect_error(response, 400, "validation_error", "identity")


async def test_join_token_for_missing_room_is_404(client: TestClient, api: Any) -> None:
    response = await client.post("/v1/rooms/nope/join-tokens", json={"identity": "alice"}, headers=api.auth)
    await api.expect_error(response, 404, "room_not_found", "room_id")


async def test_join_token_used_on_another_room(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r1")
    await api.create_room(room_id="r2")
    token = await api.join_token("r1", "alice")
    own = await client.get("/v1/rooms/r1", headers=bearer(token))
    assert own.status == 200
    assert (await own.json())["room_id"] == "r1"
    for path in ("/v1/rooms/r2", "/v1/rooms/r2/participants", "/v1/rooms/r2/layout"):
        response = await client.get(path, headers=bearer(token))
        await api.expect_error(response, 403, "wrong_room", "room_id")


async def test_join_token_cannot_act_as_operator(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r1", topic="original")
    token = bearer(await api.join_token("r1", "alice"))
    await api.expect_error(await client.get("/v1/rooms", headers=token), 403, "operator_only")
    await api.expect_error(await client.post("/v1/rooms", json={"room_id": "other"}, headers=token),
                           403, "operator_only")
    await api.expect_error(await client.post("/v1/rooms", json={"room_id": "r1"}, headers=token),
                           403, "operator_only")
    await api.expect_error(await client.patch("/v1/rooms/r1", json={"topic": "hijacked"}, headers=token),
                           403, "operator_only")
    await api.expect_error(await client.delete("/v1/rooms/r1", headers=token), 403, "operator_only")
    await api.expect_error(await client.post("/v1/rooms/r1/join-tokens", json={"identity": "mallory"},
                                             headers=token), 403, "operator_only")
    await api.expect_error(await client.get("/v1/nodes", headers=token), 403, "operator_only")
    room = await api.room("r1")
    assert room["topic"] == "original" and room["status"] == "open"
    listing = await (await client.get("/v1/rooms", headers=api.auth)).json()
    assert [r["room_id"] for r in listing["rooms"]] == ["r1"]


async def test_join_token_with_create_bit_creates_only_its_own_room(client: TestClient, api: Any,
                                                                    node: Node) -> None:
    creator, _ = node.tokens.join_token("mine", "alice", permissions=255)
    without_bit, _ = node.tokens.join_token("theirs", "bob", permissions=254)
    await api.expect_error(await client.post("/v1/rooms", json={"room_id": "other"}, headers=bearer(creator)),
                           403, "operator_only")
    await api.expect_error(await client.post("/v1/rooms", json={}, headers=bearer(creator)), 403, "operator_only")
    await api.expect_error(await client.post("/v1/rooms", json={"room_id": "theirs"},
                                             headers=bearer(without_bit)), 403, "operator_only")
    listing = await (await client.get("/v1/rooms", headers=api.auth)).json()
    assert listing["room_count"] == 0

    response = await client.post("/v1/rooms", json={"room_id": "mine", "topic": "t"}, headers=bearer(creator))
    assert response.status == 201, await response.text()
    room = await response.json()
    assert room["room_id"] == "mine" and room["owner_id"] == "alice"
    # and still cannot list rooms
    await api.expect_error(await client.get("/v1/rooms", headers=bearer(creator)), 403, "operator_only")


# ---------------------------------------------------------------------------- self-join with a password

async def test_self_join_with_password(client: TestClient, api: Any, node: Node) -> None:
    await api.create_room(room_id="locked-by-pw", password="s3cret")
    response = await client.post("/v1/rooms/locked-by-pw/join", json={"identity": "carol", "password": "s3cret"})
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["room_id"] == "locked-by-pw" and body["identity"] == "carol"
    assert body["permissions"] == 254  # never the create-room bit
    who = node.tokens.verify(body["token"])
    assert (who.kind, who.room_id, who.subject, who.permissions) == ("participant", "locked-by-pw", "carol", 254)


async def test_self_join_wrong_password(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="pw", password="s3cret")
    response = await client.post("/v1/rooms/pw/join", json={"identity": "carol", "password": "guess"})
    await api.expect_error(response, 403, "bad_password", "password")
    response = await client.post("/v1/rooms/pw/join", json={"identity": "carol"})
    await api.expect_error(response, 400, "validation_error", "password")


async def test_self_join_room_without_password(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="open")
    response = await client.post("/v1/rooms/open/join", json={"identity": "carol", "password": "anything"})
    await api.expect_error(response, 403, "no_password")


async def test_self_join_missing_room(client: TestClient, api: Any) -> None:
    response = await client.post("/v1/rooms/ghost/join", json={"identity": "carol", "password": "x"})
    await api.expect_error(response, 404, "room_not_found", "room_id")


async def test_password_set_by_patch_enables_self_join(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="later")
    response = await client.patch("/v1/rooms/later", json={"password": "pw2"}, headers=api.auth)
    assert response.status == 200
    assert (await response.json())["has_password"] is True
    response = await client.post("/v1/rooms/later/join", json={"identity": "dan", "password": "pw2"})
    assert response.status == 201
    response = await client.patch("/v1/rooms/later", json={"password": ""}, headers=api.auth)
    assert (await response.json())["has_password"] is False
    response = await client.post("/v1/rooms/later/join", json={"identity": "dan", "password": "pw2"})
    await api.expect_error(response, 403, "no_password")
