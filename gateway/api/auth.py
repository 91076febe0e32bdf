"""POST /v1/auth/token, join tokens, and the password self-join."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.api import NODE
from gateway.api.middleware import require_operator
from gateway.api.routing import ApiRouter
from gateway.api.schemas import JoinTokenRequest, JoinTokenResponse, SelfJoinRequest, TokenRequest, TokenResponse
from gateway.errors import Conflict, Forbidden
from gateway.security import Permission

if TYPE_CHECKING:
    from gateway.node import Node


def _node(request: web.Request) -> Node:
    return request.app[NODE]


async def create_token(request: web.Request, body: TokenRequest) -> TokenResponse:
    """Exchange an API key pair for a bearer token (an operator credential)."""
    node = _node(request)
    await node.verify_key(request.remote or "", body.access_key, body.secret_key)
    ttl = min(body.ttl_s or node.config.auth.token_ttl_s, node.config.auth.max_token_ttl_s)
    token, expires_at = node.tokens.api_token(body.access_key, ttl)
    return TokenResponse(token=token, expires_at=expires_at)


def _join_response(node: Node, room_id: str, identity: str, name: str | None, permissions: int,
                   ttl: int, admission: str | None = None) -> JoinTokenResponse:
    token, expires_at = node.tokens.join_token(room_id, identity, name=name, permissions=permissions, ttl_s=ttl,
                                               admission=admission)
    ws = node.public_url().replace("http", "ws", 1) + f"/v1/rooms/{room_id}/ws"
    return JoinTokenResponse(token=token, expires_at=expires_at, room_id=room_id, identity=identity,
                             permissions=permissions, ws_url=ws)


async def create_join_token(request: web.Request, body: JoinTokenRequest) -> JoinTokenResponse:
    """Issue a join token: a signed ticket for one participant of one room, with permission bits."""
    room_id = request.match_info["room_id"]
    require_operator(request, "room.join_token", room_id)
    node = _node(request)
    await node.rooms.get(room_id)
    ttl = min(body.ttl_s or node.config.auth.join_token_ttl_s, node.config.auth.max_token_ttl_s)
    return _join_response(node, room_id, body.identity, body.name, body.permissions, ttl)


async def self_join(request: web.Request, body: SelfJoinRequest) -> JoinTokenResponse:
    """Get a join token with the room password (only for rooms that have one).

    The room's ``password`` admits a plain participant: never the owner or host, whatever
    identity is asked for. The separate ``host_password`` admits the host (owner role).
    Neither takes over an identity that is connected (409); only a join token issued by the
    operator may stand for a connected identity."""
    node = _node(request)
    room_id = request.match_info["room_id"]
    room = await node.rooms.get(room_id)
    if not room.record.get("password_hash") and not room.setting("host_password_hash"):
        raise Forbidden("this room has no password; ask the operator for a join token", code="no_password")
    admission = await node.rooms.admit_with_password(room, body.password, client=request.remote or "")
    if room.by_identity(body.identity):
        raise Conflict(f"a participant with identity {body.identity!r} is already connected",
                       code="identity_connected", field="identity")
    permissions = int(sum(Permission)) & ~Permission.CREATE_ROOM
    return _join_response(node, room_id, body.identity, body.name, permissions, node.config.auth.join_token_ttl_s,
                          admission)


def register(router: ApiRouter) -> None:
    router.add("POST", "/v1/auth/token", create_token, body=TokenRequest, response=TokenResponse, tags=("auth",),
               auth=False, errors=(401, 429))
    router.add("POST", "/v1/rooms/{room_id}/join-tokens", create_join_token, body=JoinTokenRequest,
               response=JoinTokenResponse, status=201, tags=("auth",), errors=(404,))
    router.add("POST", "/v1/rooms/{room_id}/join", self_join, body=SelfJoinRequest, response=JoinTokenResponse,
               status=201, tags=("auth",), auth=False, errors=(403, 404, 409, 429))
