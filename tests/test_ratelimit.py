"""Token buckets and the failed-attempt limiter (a fake clock: no waiting, no timing)."""

from __future__ import annotations

import pytest

from gateway.ratelimit import FailureLimiter, RateLimited, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token comes back every 1/rate s
    assert buckets.take("b") == 0  # per key
    clock.now += 0.5
    assert buckets.take("a") == 0 and buckets.take("a") > 0
    clock.now += 100
    assert [buckets.take("a") for _ in range(4)][:3] == [0, 0, 0]  # refilled to the burst, no more


def test_rate_zero_is_off() -> None:
    buckets = TokenBuckets(rate=0, burst=1)
    assert not buckets.enabled and all(buckets.take("a") == 0 for _ in range(1000))


def test_failure_limiter_counts_per_client_and_per_target() -> None:
    limiter = FailureLimiter(burst=3, window_s=60)
    limiter.buckets.clock = Clock()
    for _ in range(3):
        limiter.check("1.2.3.4", "room:r")  # three wrong guesses
    with pytest.raises(RateLimited) as info:
        limiter.check("1.2.3.4", "room:other")  # this client is spent, for every room
    assert info.value.status == 429 and int(info.value.headers["Retry-After"]) == 20
    with pytest.raises(RateLimited):
        limiter.check("5.6.7.8", "room:r")  # and this room, from every address
    limiter.check("5.6.7.8", "room:other")
    limiter.succeeded("5.6.7.8", "room:other")  # a right password costs nothing
    for _ in range(2):
        limiter.check("5.6.7.8", "room:other")
        limiter.succeeded("5.6.7.8", "room:other")


def test_many_addresses_do_not_grow_the_table_forever() -> None:
    from gateway import ratelimit

    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=2, clock=clock)
    for index in range(ratelimit.MAX_BUCKETS + 50):
        buckets.take(f"10.0.{index // 256}.{index % 256}")
        clock.now += 10  # each earlier bucket is full again
    assert len(buckets._buckets) <= ratelimit.MAX_BUCKETS


def test_a_flood_of_fresh_keys_stays_bounded() -> None:
    from gateway import ratelimit

    buckets = TokenBuckets(rate=0.001, burst=1, clock=Clock())  # nothing refills during the flood
    for index in range(ratelimit.MAX_BUCKETS * 2):
        buckets.take(f"key-{index}")
    assert len(buckets._buckets) <= ratelimit.MAX_BUCKETS
    assert buckets.take(f"key-{ratelimit.MAX_BUCKETS * 2 - 1}") > 0  # the newest are still remembered
