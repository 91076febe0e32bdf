"""Cross-cutting HTTP concerns: errors as JSON, authentication, request ids, rate limits."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from gateway.api import NODE, PRINCIPAL, REQUEST_ID
from gateway.errors import Forbidden, MediagateError, PayloadTooLarge, Unauthorized
from gateway.ratelimit import RateLimited, TokenBuckets
from gateway.security import Principal

if TYPE_CHECKING:
    from gateway.node import Node

log = structlog.get_logger(__name__)
HandlerT = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Routes (method, route template) that take no credentials; matched on the route aiohttp
# resolved, never on a path prefix or suffix. The self-join checks the room password itself.
PUBLIC_V1 = {("POST", "/v1/auth/token"), ("POST", "/v1/rooms/{room_id}/join")}
# Routes that may carry the token in the query string: browsers cannot set headers on a
# WebSocket. Anywhere else a token in a URL would end up in logs and browser history.
QUERY_TOKEN_ROUTES = {("GET", "/v1/rooms/{room_id}/ws")}


def route_key(request: web.Request) -> tuple[str, str] | None:
    """(method, route template) of the route this request matched; None when none matched."""
    resource = request.match_info.route.resource
    return None if resource is None else (request.method, resource.canonical)


def error_response(exc: MediagateError, request_id: str | None = None) -> web.Response:
    body = exc.to_dict()
    if request_id:
        body["error"]["request_id"] = request_id
    return web.json_response(body, status=exc.status, headers=getattr(exc, "headers", None))


@web.middleware
async def errors_middleware(request: web.Request, handler: HandlerT) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except MediagateError as exc:
        return error_response(exc, request_id)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(PayloadTooLarge(f"request body too large: {exc.text}"),
                              request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        err = MediagateError(exc.reason, code=code, status=exc.status)
        response = error_response(err, request_id)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error", path=request.path, request_id=request_id)
        return error_response(MediagateError("internal error", code="internal_error", status=500), request_id)
    if not response.prepared:
        response.headers.setdefault("X-Request-Id", request_id)
        # a download is never sniffed into HTML or script by a browser
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def make_rate_limit_middleware(node: Node) -> Callable[[web.Request, HandlerT], Awaitable[web.StreamResponse]]:
    """A token bucket per client address over every request (``[http] rate_limit_*``)."""
    http = node.config.http
    buckets = TokenBuckets(http.rate_limit_per_s, http.rate_limit_burst)

    @web.middleware
    async def rate_limit_middleware(request: web.Request, handler: HandlerT) -> web.StreamResponse:
        if buckets.enabled:
            wait = buckets.take(request.remote or "")
            if wait > 0:
                raise RateLimited(f"more than {http.rate_limit_per_s:g} requests per second from this address",
                                  wait)
        return await handler(request)
    return rate_limit_middleware


def make_auth_middleware(node: Node) -> Callable[[web.Request, HandlerT], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: HandlerT) -> web.StreamResponse:
        if not request.path.startswith("/v1/") or route_key(request) in PUBLIC_V1:
            return await handler(request)
        request[PRINCIPAL] = await authenticate(node, request)
        return await handler(request)
    return auth_middleware


async def authenticate(node: Node, request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value.strip():
        return await _checked(node, node.tokens.verify(value.strip()))
    if scheme == "basic" and value.strip():
        try:
            access_key, _, secret = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("malformed Basic credentials", code="invalid_credentials") from exc
        await node.verify_key(request.remote or "", access_key, secret)
        return Principal("operator", access_key)
    # browsers cannot set headers on a WebSocket: accept the token as a query parameter there
    query_token = request.query.get("access_token") or request.query.get("token")
    if query_token and route_key(request) in QUERY_TOKEN_ROUTES:
        return await _checked(node, node.tokens.verify(query_token))
    raise Unauthorized("missing credentials: send 'Authorization: Bearer <token>'", code="missing_token")


async def _checked(node: Node, who: Principal) -> Principal:
    """An API token is good only while its key is (checked per request, briefly cached)."""
    if who.is_operator and not await node.keys.is_active(who.subject):
        raise Unauthorized("the API key of this token was revoked or no longer exists", code="key_revoked")
    return who


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _plugin_decision(request: web.Request, action: str, room_id: str | None) -> Principal | None:
    """A plugin's mediagate_authorize answer: the principal when allowed, None when no plugin decided."""
    who = principal(request)
    node: Node = request.app[NODE]
    decided = node.pm.hook.mediagate_authorize(principal=who, action=action, room_id=room_id, node=node)
    if decided is None:
        return None
    if not decided:
        raise Forbidden(f"not allowed to {action}", code="forbidden")
    return who


def require_operator(request: web.Request, action: str, room_id: str | None = None) -> Principal:
    """Operators may do anything unless a plugin's mediagate_authorize says otherwise."""
    decided = _plugin_decision(request, action, room_id)
    if decided is not None:
        return decided
    who = principal(request)
    if not who.is_operator:
        raise Forbidden(f"a join token cannot {action}; use an API token", code="operator_only")
    return who


def require_room_access(request: web.Request, room_id: str, action: str = "room.read") -> Principal:
    """Operators see every room; a participant only the room its join token names."""
    decided = _plugin_decision(request, action, room_id)
    if decided is not None:
        return decided
    who = principal(request)
    if not who.is_operator and who.room_id != room_id:
        raise Forbidden("this join token is for another room", code="wrong_room", field="room_id")
    return who
