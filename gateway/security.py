"""Credentials: API keys, API tokens, join tokens and the seed's permission bitmask.

Tokens are JWTs (HS256) signed with the node's secret. An API token makes its bearer an
*operator* (may do anything); a join token makes its bearer one *participant* of one room,
limited by its permission bits (TRTC's PrivateMapKey).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import IntFlag
from pathlib import Path
from typing import Any

import jwt

from gateway.errors import Unauthorized


class Permission(IntFlag):
    CREATE_ROOM = 1
    ENTER = 2
    SEND_AUDIO = 4
    RECV_AUDIO = 8
    SEND_VIDEO = 16
    RECV_VIDEO = 32
    SEND_SCREEN = 64
    RECV_SCREEN = 128


ALL_PERMISSIONS = int(sum(Permission))  # 255
DEFAULT_JOIN_PERMISSIONS = ALL_PERMISSIONS & ~Permission.CREATE_ROOM  # 254

ISSUER = "mediagate"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an operator (API key holder) or a participant (join token holder)."""

    kind: str  # "operator" | "participant"
    subject: str  # access key, or participant identity
    room_id: str | None = None
    name: str | None = None
    permissions: int = ALL_PERMISSIONS
    expires_at: int | None = None
    # how a participant got in: None = a join token the operator issued; "password" or "host"
    # = the room's password self-join (never the owner, never replaces a connected identity)
    admission: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    def can(self, permission: Permission) -> bool:
        return self.is_operator or bool(self.permissions & permission)


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """scrypt hash in a self-describing string: ``scrypt$<salt b64>$<hash b64>``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    salt = base64.b64decode(salt_b64)
    expected = base64.b64decode(digest_b64)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return hmac.compare_digest(digest, expected)


# A fixed hash to verify against when there is nothing to verify (unknown or revoked access
# key): every failed check then costs one KDF run, so its timing does not tell which keys exist.
_DUMMY_HASH = "scrypt$bWVkaWFnYXRlLWR1bW15$" + base64.b64encode(bytes(32)).decode()


async def hash_secret_async(secret: str) -> str:
    """hash_secret on a worker thread: scrypt takes tens of milliseconds, the loop must not wait."""
    return await asyncio.to_thread(hash_secret, secret)


async def verify_secret_async(secret: str, stored: str | None) -> bool:
    """verify_secret on a worker thread; with no stored hash it runs against a dummy one (same cost)."""
    ok = await asyncio.to_thread(verify_secret, secret, stored or _DUMMY_HASH)
    return ok and stored is not None


def load_or_create_secret(configured: str, data_dir: Path) -> str:
    """The token signing secret: configured, else kept in ``data_dir/jwt.secret`` (0600)."""
    if configured:
        return configured
    path = data_dir / "jwt.secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


class TokenService:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def _encode(self, claims: dict[str, Any], ttl_s: int) -> tuple[str, int]:
        now = int(time.time())
        exp = now + int(ttl_s)
        payload = {"iss": ISSUER, "iat": now, "exp": exp, **claims}
        return jwt.encode(payload, self._secret, algorithm="HS256"), exp

    def api_token(self, access_key: str, ttl_s: int) -> tuple[str, int]:
        return self._encode({"typ": "api", "sub": access_key}, ttl_s)

    def join_token(self, room_id: str, identity: str, *, name: str | None = None,
                   permissions: int = DEFAULT_JOIN_PERMISSIONS, ttl_s: int = 3600,
                   admission: str | None = None) -> tuple[str, int]:
        claims: dict[str, Any] = {"typ": "join", "sub": identity, "room": room_id, "name": name,
                                  "perm": int(permissions)}
        if admission:
            claims["adm"] = admission
        return self._encode(claims, ttl_s)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["exp", "sub", "typ"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token", code="invalid_token") from exc
        if claims["typ"] == "api":
            return Principal("operator", claims["sub"], expires_at=claims["exp"])
        if claims["typ"] == "join":
            return Principal("participant", claims["sub"], room_id=claims.get("room"),
                             name=claims.get("name"), permissions=int(claims.get("perm", 0)),
                             expires_at=claims["exp"], admission=claims.get("adm"))
        raise Unauthorized("invalid token", code="invalid_token")
