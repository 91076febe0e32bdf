"""Measures how late the asyncio loop wakes up: the proof that media work stays off it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

import structlog

log = structlog.get_logger(__name__)


class LoopLagMonitor:
    def __init__(self, interval_s: float = 0.1, warn_ms: float = 50, window: int = 600) -> None:
        self.interval = interval_s
        self.warn_ms = warn_ms
        self.samples: deque[float] = deque(maxlen=window)  # lag in ms, last `window` wakeups
        self.max_ms = 0.0
        self.total_ms = 0.0
        self.count = 0
        self._task: asyncio.Task[None] | None = None
        self.observers: list = []  # callables(lag_ms) e.g. a Prometheus histogram

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = max(0.0, (time.perf_counter() - start - self.interval) * 1000)
            self.samples.append(lag)
            self.max_ms = max(self.max_ms, lag)
            self.total_ms += lag
            self.count += 1
            for observe in self.observers:
                observe(lag)
            if lag > self.warn_ms:
                log.warning("event loop lagged", lag_ms=round(lag, 1))

    def percentile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
