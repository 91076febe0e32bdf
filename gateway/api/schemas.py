"""Request/response models of the auth, files and operations endpoints (rooms live in
:mod:`gateway.rooms.models`, layouts in :mod:`gateway.media.layout.model`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.security import DEFAULT_JOIN_PERMISSIONS

# Identities appear in text commands ("[username:alice]"): no whitespace, control characters,
# brackets or @. Spelled out rather than \s, which ECMA-262, Rust and Python read differently.
IDENTITY_PATTERN = (r"^[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF"
                    r"\[\]@]+$")
TTL_MAX_S = 2**31 - 1  # a bound for the clock arithmetic; auth.max_token_ttl_s caps it further


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. room_not_found")
    message: str
    field: str | None = Field(None, description="the offending input, e.g. regions[2].x")


class ErrorBody(BaseModel):
    error: ErrorDetail


class TokenRequest(Strict):
    access_key: str = Field(min_length=1, max_length=128)
    secret_key: str = Field(min_length=1, max_length=256)
    ttl_s: int | None = Field(None, gt=0, le=TTL_MAX_S,
                              description="lifetime; default auth.token_ttl_s, capped by max_token_ttl_s")


class TokenResponse(BaseModel):
    token: str
    expires_at: int = Field(description="Unix seconds")


class JoinTokenRequest(Strict):
    identity: str = Field(min_length=1, max_length=128, pattern=IDENTITY_PATTERN)
    name: str | None = Field(None, max_length=128)
    permissions: int = Field(DEFAULT_JOIN_PERMISSIONS, ge=0, le=255, description=(
        "bitmask: 1 create room, 2 enter, 4 send audio, 8 receive audio, 16 send video, 32 receive video, "
        "64 send screen, 128 receive screen"))
    ttl_s: int | None = Field(None, gt=0, le=TTL_MAX_S)


class SelfJoinRequest(Strict):
    identity: str = Field(min_length=1, max_length=128, pattern=IDENTITY_PATTERN)
    name: str | None = Field(None, max_length=128)
    password: str = Field(min_length=1, max_length=128)


class JoinTokenResponse(BaseModel):
    token: str
    expires_at: int
    room_id: str
    identity: str
    permissions: int
    ws_url: str


class FileOut(BaseModel):
    file_id: str
    name: str
    size: int
    content_type: str
    sha256: str
    created_at: float
    url: str
    media_info: dict[str, Any]


class FileList(BaseModel):
    files: list[FileOut]


class NodeOut(BaseModel):
    node_id: str
    version: str
    url: str
    rooms: int
    participants: int
    load: dict[str, Any]
    plugins: list[str]


class NodeList(BaseModel):
    nodes: list[NodeOut]


class Health(BaseModel):
    status: str
    checks: dict[str, Any] = Field(default_factory=dict)
