"""Request bodies of the SIP API (``/v1/sip/...`` and dial-out), validated by pydantic."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from plugins.sip.dtmf import clean_digits
from plugins.sip.sdp import KNOWN

_NAME = re.compile(r"^[A-Za-z0-9_.+\-*#]{1,64}$")


def _codec(value: str | None) -> str | None:
    if value is None:
        return None
    if value.upper() not in KNOWN:
        raise ValueError(f"unknown codec {value!r}; use one of PCMU, PCMA, G722, opus")
    return "opus" if value.upper() == "OPUS" else value.upper()


class GateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=128)
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(5060, ge=1, le=65535)
    transport: str = Field("udp", pattern="^(udp|tcp|tls)$")
    register_: bool = Field(False, alias="register")
    username: str | None = Field(None, max_length=128)
    password: str | None = Field(None, max_length=256)
    realm: str | None = Field(None, max_length=128)
    expires_s: int = Field(600, ge=30, le=86400)
    enabled: bool = True
    codecs: list[str] | None = None
    from_domain: str | None = Field(None, max_length=255)

    @field_validator("codecs")
    @classmethod
    def _codecs(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [c for c in (_codec(v) for v in value) if c]


class GatePatch(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, min_length=1, max_length=128)
    host: str | None = Field(None, min_length=1, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)
    transport: str | None = Field(None, pattern="^(udp|tcp|tls)$")
    register_: bool | None = Field(None, alias="register")
    username: str | None = None
    password: str | None = None
    realm: str | None = None
    expires_s: int | None = Field(None, ge=30, le=86400)
    enabled: bool | None = None
    codecs: list[str] | None = None
    from_domain: str | None = None


class AccountBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    gate_id: str | None = None
    send_codec: str | None = None
    recv_codec: str | None = None
    default_room: str | None = Field(None, max_length=64)
    display_name: str | None = Field(None, max_length=128)

    @field_validator("username")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("username: letters, digits and _.+-*# only")
        return value

    @field_validator("send_codec", "recv_codec")
    @classmethod
    def _codecs(cls, value: str | None) -> str | None:
        return _codec(value)


class AccountPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(None, min_length=1, max_length=256)
    gate_id: str | None = None
    send_codec: str | None = None
    recv_codec: str | None = None
    default_room: str | None = None
    display_name: str | None = None

    @field_validator("send_codec", "recv_codec")
    @classmethod
    def _codecs(cls, value: str | None) -> str | None:
        return _codec(value)


class RouteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str = Field(min_length=1, max_length=128)
    room_id: str | None = Field(None, max_length=64)
    pin: str | None = Field(None, pattern=r"^[0-9*#A-D]{1,16}$")
    priority: int = 0

    @field_validator("match")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if value.startswith("^"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from exc
        return value


class RoutePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str | None = Field(None, min_length=1, max_length=128)
    room_id: str | None = None
    pin: str | None = Field(None, pattern=r"^[0-9*#A-D]{1,16}$")
    priority: int | None = None


class DialBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1, max_length=256)  # sip:user@host[:port], or an account name, or a number via gate
    gate_id: str | None = None
    from_: str | None = Field(None, alias="from", max_length=128)
    caller_name: str | None = Field(None, max_length=128)
    video: bool = False
    gain_db: float = Field(0.0, ge=-30, le=30)
    identity: str | None = Field(None, max_length=128)
    callback_url: str | None = None


class DtmfBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digits: str = Field(min_length=1, max_length=64)
    duration_ms: int = Field(100, ge=70, le=6000)  # the seed's jc.dtmf bounds
    inter_tone_gap_ms: int = Field(70, ge=50, le=6000)

    @field_validator("digits")
    @classmethod
    def _digits(cls, value: str) -> str:
        cleaned = clean_digits(value)
        if not cleaned:
            raise ValueError("no DTMF digit in 'digits' (0-9, A-D, *, #)")
        return cleaned


class CallPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    muted: bool | None = None
    gain_db: float | None = Field(None, ge=-30, le=30)
    hold: bool | None = None
