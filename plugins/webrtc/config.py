"""``[plugins.webrtc]``: ICE addresses and servers, session limits, timeouts, CORS."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class IceServer(BaseModel):
    """A STUN or TURN server, handed to aiortc and to browsers (RTCIceServer)."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(min_length=1, description="stun:host:port, turn:host:port?transport=udp")
    username: str | None = None
    credential: str | None = None

    @field_validator("urls")
    @classmethod
    def _schemes(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"{url!r}: an ICE server URL starts with stun:, stuns:, turn: or turns:")
        return urls


class WebRTCConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host_addresses: list[str] = Field(
        default_factory=list,
        description="IP addresses to gather host candidates on; empty = every non-loopback address")
    public_address: str = Field("", description="advertised IP for 1:1 NAT: each host candidate is also "
                                                "offered on this address with the same port")
    port_min: int = Field(0, ge=0, le=65535, description="UDP port range for ICE; 0 = any port")
    port_max: int = Field(0, ge=0, le=65535)
    ice_servers: list[IceServer] = Field(default_factory=list)
    max_sessions: int = Field(200, ge=1, description="concurrent WHIP + WHEP sessions; beyond: 503")
    max_pending: int = Field(20, ge=1, description="offers being answered at once; beyond: 503")
    connect_timeout_s: float = Field(20, gt=0, description="an answered session must connect within this")
    consent_interval_s: float = Field(5, gt=0, description="ICE consent check period (RFC 7675)")
    consent_failures: int = Field(6, ge=1, description="missed consent checks before a peer counts as gone")
    cors_origins: list[str] = Field(default_factory=list,
                                    description="origins allowed to call WHIP/WHEP; empty = same origin; '*' any")
    whep_video_kbps: int = Field(1500, ge=100, le=20000)
    whep_gop_s: float = Field(2, gt=0, le=10)
    native_receive: bool = Field(True, description="receive publishers' VP8 on a native thread (plugins/webrtc/"
                                                   "_rtpin.c) when it is built; false: the Python path")

    @field_validator("host_addresses")
    @classmethod
    def _ips(cls, values: list[str]) -> list[str]:
        for value in values:
            ipaddress.ip_address(value)
        return values

    @field_validator("public_address")
    @classmethod
    def _public(cls, value: str) -> str:
        if value:
            ipaddress.ip_address(value)
        return value

    @model_validator(mode="after")
    def _range(self) -> WebRTCConfig:
        if bool(self.port_min) != bool(self.port_max) or self.port_min > self.port_max:
            raise ValueError("port_min and port_max go together, with port_min <= port_max")
        return self
