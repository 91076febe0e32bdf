"""API keys: from the config file (``[auth.api_keys]``) and from the store (created by
``mediagate keys create`` or the bootstrap on first start); secrets are stored hashed.

An API token names its key; every request checks that the key still exists and is not
revoked (LiveKit: a token stops working with its key). The answer is cached for
``auth.key_cache_ttl_s`` seconds, so a revocation made on another node sharing the store, or
by ``mediagate keys revoke``, takes effect within that time.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import TYPE_CHECKING

from gateway.errors import Unauthorized
from gateway.security import hash_secret_async, verify_secret_async

if TYPE_CHECKING:
    from gateway.store import Store


class KeyRing:
    def __init__(self, store: Store, configured: dict[str, str], *, cache_ttl_s: float = 2.0) -> None:
        self.store = store
        self.configured = configured
        self.cache_ttl_s = cache_ttl_s
        self._active: dict[str, tuple[float, bool]] = {}  # access key -> (valid until, active)

    async def verify(self, access_key: str, secret_key: str) -> None:
        """Check a key pair. Every failure costs one KDF run, whether the key exists or not."""
        if access_key in self.configured:
            await verify_secret_async(secret_key, None)  # the same cost as a stored key
            if hmac.compare_digest(self.configured[access_key].encode(), secret_key.encode()):
                return
            raise Unauthorized("wrong access_key or secret_key", code="invalid_credentials")
        row = await self.store.get_api_key(access_key)
        stored = row["secret_hash"] if row is not None else None
        ok = await verify_secret_async(secret_key, stored)
        if not ok or row is None or row["revoked"]:
            raise Unauthorized("wrong access_key or secret_key", code="invalid_credentials")

    async def is_active(self, access_key: str) -> bool:
        """Whether tokens of this key are still good: configured, or stored and not revoked."""
        if access_key in self.configured:
            return True
        now = time.monotonic()
        cached = self._active.get(access_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await self.store.get_api_key(access_key)
        active = row is not None and not row["revoked"]
        if len(self._active) > 10_000:
            self._active.clear()
        self._active[access_key] = (now + self.cache_ttl_s, active)
        return active

    async def revoke(self, access_key: str) -> bool:
        self._active.pop(access_key, None)
        return await self.store.revoke_api_key(access_key)

    async def count(self) -> int:
        stored = [row for row in await self.store.list_api_keys() if not row["revoked"]]
        return len(self.configured) + len(stored)

    async def create(self, name: str = "") -> tuple[str, str]:
        """A new key pair; the secret is returned once and only its hash is kept."""
        access_key = "AK" + secrets.token_hex(8)
        secret_key = secrets.token_urlsafe(32)
        await self.store.add_api_key(access_key, await hash_secret_async(secret_key), name)
        return access_key, secret_key
