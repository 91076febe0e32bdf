"""Webhook delivery: per-URL bounded queues, per-room ordering, the retry schedule.

Each URL gets a :class:`_Target` with a few lanes; an event goes to the lane chosen by its
room, and each lane is drained by one task, one delivery at a time. So events of one room
reach a URL in emission order, a retrying event holds up only the rooms sharing its lane,
and a dead URL holds up nothing but itself. A URL's queued events are bounded: past
``max_queue`` the oldest is dropped and counted.

Retry schedule (seed 001 §9): attempt, retry immediately, then on a grid of
``retry_interval_s`` anchored at the first attempt (10, 20, ... s), until the next attempt
would start more than ``give_up_after_s`` after the first one. The clock and sleep are
injectable so tests check the schedule exactly without waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import structlog
from yarl import URL

from gateway import __version__
from gateway.events import Event
from plugins.webhook.signing import SIGNATURE_HEADER, sign

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

LANES_PER_URL = 4
EVENT_HEADER = "X-Mediagate-Event"
DELIVERY_HEADER = "X-Mediagate-Delivery"
# a dead URL on a busy node drops constantly: warn on the first drop, then every this many
DROP_WARN_EVERY = 1000


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 5
    retry_interval_s: float = 10
    give_up_after_s: float = 60

    def next_attempt(self, first: float, now: float, attempts: int, last_slot: int) -> tuple[int, float] | None:
        """(slot, start time) of the attempt after `attempts` failed ones, or None to give up.

        Slot 0 holds the first attempt and the immediate retry; slot n starts at
        ``first + n * retry_interval_s``. A slot already passed (slow attempts) is skipped
        rather than fired late, and a slot is never used twice (a sleep may wake early).
        """
        if attempts == 1:
            slot, at = 0, now
        else:
            slot = max(last_slot + 1, math.ceil((now - first) / self.retry_interval_s))
            at = first + slot * self.retry_interval_s
        if at - first > self.give_up_after_s:
            return None
        return slot, at


@dataclass(slots=True)
class Delivery:
    event: Event
    body: bytes
    key: str  # "" sends no signature
    seq: int

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: self.event.event,
            DELIVERY_HEADER: self.event.id,
        }
        if self.key:
            headers[SIGNATURE_HEADER] = sign(self.key, self.body)
        return headers


@dataclass(eq=False)
class _Target:
    url: str
    lanes: dict[int, deque[Delivery]] = field(default_factory=dict)
    workers: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    size: int = 0  # queued, not yet taken by a lane worker
    inflight: int = 0
    dropped: int = 0


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: callback URLs often carry tokens there."""
    try:
        return str(URL(url).with_user(None).with_query(None).with_fragment(None))
    except (TypeError, ValueError):
        return "<invalid url>"


class WebhookSender:
    """Queues and delivers events to URLs; one aiohttp session from :meth:`start` to :meth:`close`."""

    def __init__(self, policy: RetryPolicy, max_queue: int, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep, lanes: int = LANES_PER_URL) -> None:
        self.policy = policy
        self.max_queue = max_queue
        self._clock = clock
        self._sleep = sleep
        self._lanes = lanes
        self._targets: dict[str, _Target] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False
        self.delivered = 0
        self.gave_up = 0
        self.dropped = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s),
            headers={"User-Agent": f"mediagate-webhook/{__version__}"},
        )
        # deliveries submitted before startup were queued; start draining them now
        for target in self._targets.values():
            for lane_no in target.lanes:
                self._ensure_worker(target, lane_no)

    async def close(self) -> None:
        self._closed = True
        pending = self.pending
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._session is not None:
            await self._session.close()
            self._session = None
        if pending:
            log.warning("webhook deliveries abandoned at shutdown", pending=pending)
        self._targets.clear()

    async def join(self) -> None:
        """Wait until every queued delivery succeeded or was given up (tests, graceful stop)."""
        while self._tasks:
            # asyncio.wait, unlike gather, does not cancel the workers if join is cancelled
            await asyncio.wait(list(self._tasks))

    @property
    def pending(self) -> int:
        """Deliveries queued or in flight."""
        return sum(t.size + t.inflight for t in self._targets.values())

    # --- queueing ---------------------------------------------------------------------------

    def submit(self, url: str, event: Event, body: bytes, key: str) -> None:
        """Queue `body` (the event's JSON bytes) for `url`; safe to call from any thread."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._enqueue, url, event, body, key)
        else:
            self._enqueue(url, event, body, key)

    def _enqueue(self, url: str, event: Event, body: bytes, key: str) -> None:
        if self._closed:
            log.debug("webhook delivery after shutdown ignored", url=redact_url(url), delivery=event.id)
            return
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _Target(url)
        lane_no = zlib.crc32((event.room_id or "").encode()) % self._lanes
        target.lanes.setdefault(lane_no, deque()).append(Delivery(event, body, key, next(self._seq)))
        target.size += 1
        if target.size > self.max_queue:
            self._drop_oldest(target)
        self._ensure_worker(target, lane_no)

    def _drop_oldest(self, target: _Target) -> None:
        lane = min((q for q in target.lanes.values() if q), key=lambda q: q[0].seq)
        lost = lane.popleft()
        target.size -= 1
        target.dropped += 1
        self.dropped += 1
        if target.dropped == 1 or target.dropped % DROP_WARN_EVERY == 0:
            log.warning("webhook queue full, dropping oldest event", url=redact_url(target.url),
                        event_name=lost.event.event, delivery=lost.event.id, dropped=target.dropped,
                        max_queue=self.max_queue)

    def _ensure_worker(self, target: _Target, lane_no: int) -> None:
        if self._session is None or lane_no in target.workers or not target.lanes.get(lane_no):
            return
        task = asyncio.get_running_loop().create_task(self._drain_lane(target, lane_no),
                                                      name=f"webhook {redact_url(target.url)} lane {lane_no}")
        target.workers[lane_no] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_lane(self, target: _Target, lane_no: int) -> None:
        lane = target.lanes[lane_no]
        try:
            while lane:
                delivery = lane.popleft()
                target.size -= 1
                target.inflight += 1
                try:
                    await self._deliver(target.url, delivery)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug here must not kill the lane and strand its queue
                    log.exception("webhook delivery crashed", url=redact_url(target.url),
                                  delivery=delivery.event.id)
                finally:
                    target.inflight -= 1
        finally:
            target.workers.pop(lane_no, None)
            if not lane:
                target.lanes.pop(lane_no, None)
            # forget idle targets so one-off callback URLs don't accumulate
            if not target.size and not target.workers and self._targets.get(target.url) is target:
                del self._targets[target.url]

    # --- attempts ---------------------------------------------------------------------------

    async def _deliver(self, url: str, delivery: Delivery) -> bool:
        first = self._clock()
        attempts = 0
        slot = 0
        while True:
            attempts += 1
            error = await self._attempt(url, delivery)
            if error is None:
                self.delivered += 1
                log.debug("webhook delivered", url=redact_url(url), delivery=delivery.event.id,
                          attempts=attempts)
                return True
            now = self._clock()
            log.debug("webhook attempt failed", url=redact_url(url), delivery=delivery.event.id,
                      attempt=attempts, error=error)
            nxt = self.policy.next_attempt(first, now, attempts, slot)
            if nxt is None:
                self.gave_up += 1
                log.warning("webhook delivery gave up", url=redact_url(url), event_name=delivery.event.event,
                            delivery=delivery.event.id, attempts=attempts, error=error,
                            after_s=round(now - first, 3))
                return False
            slot, at = nxt
            if at > now:
                await self._sleep(at - now)

    async def _attempt(self, url: str, delivery: Delivery) -> str | None:
        """One POST; None on a 2xx answer, else what went wrong."""
        assert self._session is not None
        try:
            # no redirects: a 30x would turn the POST into a GET or send the body elsewhere
            async with self._session.post(url, data=delivery.body, headers=delivery.headers(),
                                          allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except TimeoutError:
            return f"no answer within {self.policy.timeout_s:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
