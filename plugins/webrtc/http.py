"""WHIP (RFC 9725) and WHEP endpoints, the session resources, and the room page.

``POST /whip/{room}`` publishes, ``POST /whep/{room}[/{participant}]`` plays; both answer 201
with the SDP answer (every candidate gathered in: OBS does not trickle), ``Location`` (the
session resource ``/webrtc/sessions/{id}``) and ``ETag``. ``DELETE`` on the resource ends
the session; ``PATCH`` with an ``application/trickle-ice-sdpfrag`` body adds trickled
candidates (:mod:`.trickle`; an ICE restart is refused with 422: POST a new offer).
``OPTIONS`` answers CORS preflights and lists the ICE servers as ``Link`` headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.api.middleware import error_response
from gateway.errors import BadRequest, Forbidden, MediagateError, UnsupportedMediaType
from gateway.rooms.participant import ParticipantKind
from plugins.webrtc import auth, cors, ice, trickle
from plugins.webrtc.player import PlaySession
from plugins.webrtc.publisher import PublishSession
from plugins.webrtc.sdp import check_playable, check_publishable, parse_offer

if TYPE_CHECKING:
    from plugins.webrtc import WebRTCPlugin

STATIC = Path(__file__).parent / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebRTCRoutes:
    def __init__(self, plugin: WebRTCPlugin) -> None:
        self.plugin = plugin
        self.node = plugin.node
        self.config = plugin.config

    def install(self, app: web.Application) -> None:
        wrap = self._wrap
        app.router.add_route("POST", "/whip/{room_id}", wrap(self.whip))
        app.router.add_route("OPTIONS", "/whip/{room_id}", wrap(self.options))
        app.router.add_route("POST", "/whep/{room_id}", wrap(self.whep))
        app.router.add_route("OPTIONS", "/whep/{room_id}", wrap(self.options))
        app.router.add_route("POST", "/whep/{room_id}/{participant_id}", wrap(self.whep))
        app.router.add_route("OPTIONS", "/whep/{room_id}/{participant_id}", wrap(self.options))
        app.router.add_route("DELETE", "/webrtc/sessions/{session_id}", wrap(self.delete))
        app.router.add_route("PATCH", "/webrtc/sessions/{session_id}", wrap(self.patch))
        app.router.add_route("OPTIONS", "/webrtc/sessions/{session_id}", wrap(self.options))
        app.router.add_route("GET", "/webrtc/config", wrap(self.client_config))
        app.router.add_route("GET", "/rooms/{room_id}", self.room_page)
        app.router.add_static("/webrtc/static/", STATIC, append_version=False)

    def _wrap(self, handler: Handler) -> Handler:
        """CORS headers on every answer, errors included."""
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except MediagateError as exc:
                response = error_response(exc)
                if exc.status == 503:
                    response.headers["Retry-After"] = "2"
            return cors.apply(request, response, self.config.cors_origins)
        return wrapped

    # ---------------------------------------------------------------- helpers
    async def _offer(self, request: web.Request) -> str:
        ctype = request.content_type
        if ctype != "application/sdp":
            raise UnsupportedMediaType(f"send the offer as application/sdp, not {ctype or 'nothing'}",
                                       code="unsupported_media_type")
        try:
            return await request.text()
        except UnicodeDecodeError as exc:
            raise BadRequest("the SDP offer is not UTF-8 text", code="bad_sdp") from exc

    def _created(self, session: object, answer: str) -> web.Response:
        response = web.Response(status=201, text=answer, content_type="application/sdp")
        response.headers["Location"] = f"/webrtc/sessions/{session.session_id}"  # type: ignore[attr-defined]
        response.headers["ETag"] = session.etag  # type: ignore[attr-defined]
        for link in ice.link_headers(self.config.ice_servers):
            response.headers.add("Link", link)
        return response

    # ---------------------------------------------------------------- WHIP
    async def whip(self, request: web.Request) -> web.StreamResponse:
        room_id = request.match_info["room_id"]
        caller = await auth.resolve(self.node, request, room_id, self.plugin.ingress_tokens)
        room = await self.node.rooms.get(room_id)
        offer = await self._offer(request)
        summary = parse_offer(offer)
        check_publishable(summary)
        auth.check_publish(caller, summary.kinds)
        with self.plugin.registry.admission():
            session = PublishSession(self.plugin.registry, self.node, room.room_id, "",
                                     on_end=self.plugin.session_ended)
            session.caller_token = caller.token
            try:
                answer = await session.answer(offer)
            except MediagateError:
                await session.end("negotiation_failed")
                raise
            except Exception as exc:
                await session.end("negotiation_failed")
                raise BadRequest(f"cannot negotiate this offer: {exc}", code="bad_sdp") from exc
            try:
                participant = await self.node.rooms.join(room.room_id, caller.identity, kind=ParticipantKind.WHIP,
                                                         name=caller.name, permissions=caller.permissions,
                                                         edge=session, operator=caller.operator,
                                                         admission=caller.admission)
            except MediagateError:
                await session.end("join_refused")
                raise
            session.participant_id = participant.participant_id
            self.plugin.registry.add(session)
            if caller.ingress is not None:
                session.ingress = caller.ingress
                await caller.ingress.attach(session)
        return self._created(session, answer)

    # ---------------------------------------------------------------- WHEP
    async def whep(self, request: web.Request) -> web.StreamResponse:
        room_id = request.match_info["room_id"]
        caller = await auth.resolve(self.node, request, room_id, {})
        room = await self.node.rooms.get(room_id)
        source = request.match_info.get("participant_id")
        if source is not None:
            source = self.node.rooms.participant(room, source).participant_id
        offer = await self._offer(request)
        summary = parse_offer(offer)
        offered_video = summary.codecs.get("video", set())
        check_playable(summary, {"h264", "vp8"} if source else {"h264"})
        auth.check_play(caller, summary.kinds)
        with self.plugin.registry.admission():
            session = PlaySession(self.plugin.registry, self.plugin.playback, room, source,
                                  video="video" in summary.kinds, audio="audio" in summary.kinds)
            session.caller_token = caller.token
            try:
                await session.setup(offered_video & {"h264", "vp8"})
                answer = await session.answer(offer)
            except MediagateError:
                await session.end("negotiation_failed")
                raise
            except Exception as exc:
                await session.end("negotiation_failed")
                raise BadRequest(f"cannot negotiate this offer: {exc}", code="bad_sdp") from exc
            self.plugin.registry.add(session)
        return self._created(session, answer)

    # ---------------------------------------------------------------- resources
    def _owned(self, request: web.Request) -> object:
        """The session named in the path, if the caller created it (or is an operator)."""
        session = self.plugin.registry.get(request.match_info["session_id"])
        token = auth.bearer(request)
        if token != session.caller_token:
            who = self.node.tokens.verify(token)
            if not who.is_operator:
                raise Forbidden("this token did not create the session", code="not_session_owner")
        return session

    async def delete(self, request: web.Request) -> web.StreamResponse:
        session = self._owned(request)
        await session.end("deleted")  # type: ignore[attr-defined]
        return web.Response(status=200)

    async def patch(self, request: web.Request) -> web.StreamResponse:
        """Trickle ICE (RFC 9725 §4.3.1): the client's later candidates; 204, nothing to send back."""
        session = self._owned(request)
        if request.content_type != "application/trickle-ice-sdpfrag":
            raise UnsupportedMediaType("send candidates as application/trickle-ice-sdpfrag, not "
                                       f"{request.content_type or 'nothing'}", code="unsupported_media_type")
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match.strip() not in ("*", session.etag):  # type: ignore[attr-defined]
            err = MediagateError("If-Match does not name this ICE session's ETag", code="etag_mismatch",
                                 status=412)
            return error_response(err)
        try:
            text = await request.text()
        except UnicodeDecodeError as exc:
            raise BadRequest("the sdpfrag is not UTF-8 text", code="bad_sdpfrag") from exc
        await trickle.apply(session.pc, trickle.parse_sdpfrag(text))  # type: ignore[attr-defined]
        response = web.Response(status=204)
        response.headers["ETag"] = session.etag  # type: ignore[attr-defined]
        return response

    async def options(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(status=204)
        is_resource = "session_id" in request.match_info
        response.headers["Allow"] = "DELETE, PATCH, OPTIONS" if is_resource else "POST, OPTIONS"
        if is_resource:
            response.headers["Accept-Patch"] = "application/trickle-ice-sdpfrag"
        else:
            response.headers["Accept-Post"] = "application/sdp"
        for link in ice.link_headers(self.config.ice_servers):
            response.headers.add("Link", link)
        return response

    async def client_config(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ice_servers": ice.browser_ice_servers(self.config.ice_servers)})

    async def room_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "room.html", headers={"Cache-Control": "no-cache"})

