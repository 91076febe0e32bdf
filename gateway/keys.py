"""API keys: from the config file (``[auth.api_keys]``) and from the store (created by
``mediagate keys create`` or the bootstrap on first start); secrets are stored hashed."""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING

from gateway.errors import Unauthorized
from gateway.security import hash_secret, verify_secret

if TYPE_CHECKING:
    from gateway.store import Store


class KeyRing:
    def __init__(self, store: Store, configured: dict[str, str]) -> None:
        self.store = store
        self.configured = configured

    async def verify(self, access_key: str, secret_key: str) -> None:
        if access_key in self.configured:
            if hmac.compare_digest(self.configured[access_key].encode(), secret_key.encode()):
                return
            raise Unauthorized("wrong access_key or secret_key", code="invalid_credentials")
        row = await self.store.get_api_key(access_key)
        if row is None or row["revoked"] or not verify_secret(secret_key, row["secret_hash"]):
            raise Unauthorized("wrong access_key or secret_key", code="invalid_credentials")

    async def count(self) -> int:
        stored = [row for row in await self.store.list_api_keys() if not row["revoked"]]
        return len(self.configured) + len(stored)

    async def create(self, name: str = "") -> tuple[str, str]:
        """A new key pair; the secret is returned once and only its hash is kept."""
        access_key = "AK" + secrets.token_hex(8)
        secret_key = secrets.token_urlsafe(32)
        await self.store.add_api_key(access_key, hash_secret(secret_key), name)
        return access_key, secret_key
