"""Webhook signatures: ``base64(HMAC-SHA256(key, raw body))``, the TRTC ``Sign`` scheme.

The signature covers the exact bytes sent, so receivers must verify the raw request body
before parsing it (re-serialising JSON changes the bytes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SIGNATURE_HEADER = "X-Mediagate-Signature"


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def sign(key: str | bytes, body: bytes) -> str:
    """Standard Base64 (with padding) of HMAC-SHA256 over `body` keyed by `key` (UTF-8 if str)."""
    digest = hmac.new(_key_bytes(key), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(key: str | bytes, body: bytes, signature: str) -> bool:
    """Receiver side: constant-time comparison of `signature` with the expected one."""
    return hmac.compare_digest(sign(key, body).encode("ascii"), signature.encode("utf-8", "replace"))
