"""The SIP edge: phones register with the gateway, trunks (gates) connect it to PBXs and
carriers, inbound calls are routed by number (or PIN) into rooms, the API dials out.
A call leg is a participant of kind ``sip`` that hears the room's mix minus itself.

Layers, one job per module (RFC numbers in each): transport (RFC 3261 §18), message (§7,
aiosipua's parser), transaction (§17), dialog (§12), endpoint (the UA core's dispatch),
registrar (§10, RFC 8760 digest), gates, routing, sdp (RFC 4566/3264), rtp (RFC 3550),
g711/codecs, dtmf (RFC 4733), session_timer (RFC 4028), legs (the media worker), service
(calls), api (HTTP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.api.routing import ApiRouter
from gateway.hookspecs import hookimpl
from plugins.sip.config import SipConfig

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.node import Node
    from plugins.sip.service import SipService

__all__ = ["SipConfig", "SipPlugin"]


class SipPlugin:
    config_model = SipConfig

    def __init__(self) -> None:
        self.config = SipConfig()
        self.service: SipService | None = None

    @hookimpl
    def mediagate_configure(self, node: Node) -> None:
        from plugins.sip.service import SipService

        self.service = SipService(node, self.config)

    @hookimpl
    async def mediagate_startup(self, node: Node) -> None:
        assert self.service is not None
        await self.service.start()

    @hookimpl
    async def mediagate_shutdown(self, node: Node) -> None:
        if self.service is not None:
            await self.service.stop()

    @hookimpl
    def mediagate_http_routes(self, app: web.Application, node: Node) -> None:
        from plugins.sip.api import SipApi

        assert self.service is not None
        router = ApiRouter()
        SipApi(self.service).register(router)
        router.install(app)

    def describe(self) -> dict[str, Any]:
        service = self.service
        return {"port": service.endpoint.port if service else None,
                "calls": service.active_calls if service else 0}
