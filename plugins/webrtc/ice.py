"""ICE networking for aiortc: which addresses host candidates are gathered on, which UDP
ports they bind, how fast a vanished peer is noticed, and 1:1 NAT.

aioice has no per-connection setting for any of these: it gathers on every non-loopback
address (``aioice.ice.get_host_addresses``), binds port 0, and checks consent every 5 s
giving up after 6 misses (module constants). :func:`apply` sets them for the process, once,
from ``[plugins.webrtc]``; the gateway is the only aiortc user in its process.
"""

from __future__ import annotations

import asyncio
import random
import re
import types
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from plugins.webrtc.config import IceServer, WebRTCConfig

_original_host_addresses = aioice.ice.get_host_addresses
_settings: dict[str, Any] = {"addresses": [], "ports": None}


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    configured = _settings["addresses"]
    if configured:
        return [a for a in configured if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
    return _original_host_addresses(use_ipv4, use_ipv6)


class _RangeLoop:
    """The running loop, except that UDP endpoints asked for port 0 bind in the port range."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ports: tuple[int, int]) -> None:
        self._loop = loop
        self._ports = ports

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, factory: Any, local_addr: Any = None, **kwargs: Any) -> Any:
        if local_addr is None or local_addr[1] != 0:
            return await self._loop.create_datagram_endpoint(factory, local_addr=local_addr, **kwargs)
        low, high = self._ports
        candidates = list(range(low, high + 1))
        random.shuffle(candidates)
        for port in candidates:
            try:
                return await self._loop.create_datagram_endpoint(factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError:
                continue
        raise OSError(f"no free UDP port in {low}-{high}")


def _asyncio_shim() -> types.ModuleType:
    shim = types.ModuleType("asyncio_in_port_range")
    shim.__dict__.update(asyncio.__dict__)

    def get_running_loop() -> Any:
        loop = asyncio.get_running_loop()
        ports = _settings["ports"]
        return _RangeLoop(loop, ports) if ports else loop

    shim.get_running_loop = get_running_loop  # type: ignore[attr-defined]
    return shim


def apply(config: WebRTCConfig) -> None:
    """Install the networking settings into aioice (idempotent; the latest config wins)."""
    _settings["addresses"] = list(config.host_addresses)
    _settings["ports"] = (config.port_min, config.port_max) if config.port_min else None
    aioice.ice.get_host_addresses = _host_addresses
    aioice.ice.CONSENT_INTERVAL = config.consent_interval_s
    aioice.ice.CONSENT_FAILURES = config.consent_failures
    if _settings["ports"] and getattr(aioice.ice.asyncio, "__name__", "") != "asyncio_in_port_range":
        aioice.ice.asyncio = _asyncio_shim()


def rtc_configuration(servers: list[IceServer]) -> RTCConfiguration:
    return RTCConfiguration(iceServers=[RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                                        for s in servers])


def browser_ice_servers(servers: list[IceServer]) -> list[dict[str, Any]]:
    """The same servers as a browser's RTCPeerConnection wants them."""
    return [{"urls": s.urls, **({"username": s.username} if s.username else {}),
             **({"credential": s.credential} if s.credential else {})} for s in servers]


def link_headers(servers: list[IceServer]) -> list[str]:
    """RFC 9725 §4.6: ICE servers as ``Link: <url>; rel="ice-server"`` headers."""
    links = []
    for server in servers:
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username:
                link += f'; username="{server.username}"; credential="{server.credential or ""}"; ' \
                        'credential-type="password"'
            links.append(link)
    return links


_HOST_CANDIDATE = re.compile(r"^a=candidate:(\S+) (\d+) (udp|UDP) (\d+) (\S+) (\d+) typ host(.*)$")


def advertise_public(sdp: str, public_address: str) -> str:
    """Add, after each host candidate, the same candidate on the public address (1:1 NAT)."""
    if not public_address:
        return sdp
    out: list[str] = []
    for line in sdp.split("\r\n"):
        out.append(line)
        match = _HOST_CANDIDATE.match(line)
        if match and match.group(5) != public_address:
            foundation, component, transport, priority, _host, port, rest = match.groups()
            out.append(f"a=candidate:{foundation}n {component} {transport} {int(priority) - 1} {public_address} "
                       f"{port} typ host{rest}")
    return "\r\n".join(out)
