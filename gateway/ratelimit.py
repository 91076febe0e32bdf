"""Token buckets: a general per-client request limit, and a limit on failed credential checks.

Both answer 429 with ``Retry-After`` (whole seconds until one more request would pass).
Buckets live in memory, one per key; idle full buckets are dropped so a scan from many
addresses cannot grow the table without bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import TooManyRequests

MAX_BUCKETS = 10_000  # beyond this, full buckets are forgotten (they hold no state worth keeping)


class RateLimited(TooManyRequests):
    """A 429 whose response carries ``Retry-After`` (read by the error middleware)."""

    def __init__(self, message: str, retry_after_s: float, *, code: str = "rate_limited",
                 field: str | None = None) -> None:
        self.retry_after = max(1, math.ceil(retry_after_s))
        super().__init__(message, code=code, field=field, details={"retry_after_s": self.retry_after})
        self.headers = {"Retry-After": str(self.retry_after)}


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """``rate`` tokens per second up to ``burst`` per key; rate 0 turns the limit off."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(max(burst, 1))
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _bucket(self, key: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def _prune(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * self.rate >= self.burst:
                del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:  # still full (a flood of fresh keys): forget the oldest tenth
            for key in list(self._buckets)[: MAX_BUCKETS // 10]:
                del self._buckets[key]

    def wait_s(self, key: str) -> float:
        """Seconds until ``key`` has a token again; 0 when it has one now."""
        if not self.enabled:
            return 0.0
        bucket = self._bucket(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def take(self, key: str) -> float:
        """Spend one token; returns 0, or (spending nothing) the seconds to wait."""
        wait = self.wait_s(key)
        if wait == 0 and self.enabled:
            self._buckets[key].tokens -= 1
        return wait

    def refund(self, key: str) -> None:
        if self.enabled:
            bucket = self._bucket(key)
            bucket.tokens = min(self.burst, bucket.tokens + 1)

    def spend(self, key: str) -> None:
        """Spend one token even when none is left (failures count however fast they come)."""
        if self.enabled:
            bucket = self._bucket(key)
            bucket.tokens = max(bucket.tokens - 1, -self.burst)


class FailureLimiter:
    """Failed password/secret checks: at most ``burst`` in a row per client address and per
    target (a room, an access key), refilling over ``window_s``. Each attempt takes its token
    before the KDF runs and gets it back if it succeeds, so concurrent guesses count too; while
    either bucket is spent the attempt is refused at once (guessing costs time, not node CPU)."""

    def __init__(self, burst: int, window_s: float) -> None:
        rate = burst / window_s if burst > 0 and window_s > 0 else 0
        self.buckets = TokenBuckets(rate, burst)

    def check(self, client: str, target: str) -> None:
        """Start an attempt: 429 when the client or the target has no attempts left."""
        keys = ("client:" + client, "target:" + target)
        wait = max(self.buckets.wait_s(key) for key in keys)
        if wait > 0:
            raise RateLimited("too many failed attempts; wait before trying again", wait,
                              code="too_many_attempts")
        for key in keys:
            self.buckets.spend(key)

    def succeeded(self, client: str, target: str) -> None:
        """The attempt was right: it costs nothing."""
        self.buckets.refund("client:" + client)
        self.buckets.refund("target:" + target)
