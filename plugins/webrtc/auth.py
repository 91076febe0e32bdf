"""Who may publish or play: a join token (its room and permission bits decide), an API token
(an operator), or the bearer token of a ``whip`` ingress task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.errors import Forbidden, Unauthorized
from gateway.security import DEFAULT_JOIN_PERMISSIONS, Permission

if TYPE_CHECKING:
    from gateway.node import Node


@dataclass
class Caller:
    identity: str
    name: str
    permissions: int
    token: str
    operator: bool = False
    ingress: Any = None  # the WhipIngress runner when the bearer token is an ingress's
    admission: str | None = None  # the join token's: a password self-join never owns or takes over


def bearer(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("missing credentials: send 'Authorization: Bearer <token>'", code="missing_token")
    return value.strip()


async def resolve(node: Node, request: web.Request, room_id: str, ingress_tokens: dict[str, Any]) -> Caller:
    token = bearer(request)
    runner = ingress_tokens.get(token)
    if runner is not None:
        if runner.room_id != room_id:
            raise Forbidden("this ingress token is for another room", code="wrong_room", field="room_id")
        return Caller(runner.identity, runner.name, DEFAULT_JOIN_PERMISSIONS, token, ingress=runner)
    who = node.tokens.verify(token)
    if who.is_operator and not await node.keys.is_active(who.subject):
        raise Unauthorized("the API key of this token was revoked or no longer exists", code="key_revoked")
    if who.is_operator:
        identity = request.query.get("identity") or "whip"
        return Caller(identity[:128], request.query.get("name", identity)[:128], DEFAULT_JOIN_PERMISSIONS, token,
                      operator=True)
    if who.room_id != room_id:
        raise Forbidden("this join token is for another room", code="wrong_room", field="room_id")
    if not who.permissions & Permission.ENTER:
        raise Forbidden("this join token lacks the 'enter room' permission (2)", code="permission_denied")
    return Caller(who.subject, who.name or who.subject, who.permissions, token, admission=who.admission)


def check_publish(caller: Caller, kinds: list[str], screen: bool = False) -> None:
    need = {"audio": Permission.SEND_AUDIO,
            "video": Permission.SEND_SCREEN if screen else Permission.SEND_VIDEO}
    for kind in kinds:
        if not caller.permissions & need[kind]:
            raise Forbidden(f"this token may not publish {'screen' if screen and kind == 'video' else kind} "
                            f"(permission bit {int(need[kind])})", code="permission_denied")


def check_play(caller: Caller, kinds: list[str]) -> None:
    need = {"audio": Permission.RECV_AUDIO, "video": Permission.RECV_VIDEO}
    for kind in kinds:
        if not caller.permissions & need[kind]:
            raise Forbidden(f"this token may not receive {kind} (permission bit {int(need[kind])})",
                            code="permission_denied")
