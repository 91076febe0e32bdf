"""Stand-ins shared by the media tests."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import numpy as np

from gateway.media.clock import RoomClock


class ToneMix:
    """A stand-in for the mixer's MixOutput: one 20 ms block per tick of the room clock,
    made by ``make_block(start_sample, 960)``."""

    def __init__(self, clock: RoomClock, make_block: Callable[[int, int], np.ndarray]) -> None:
        self.clock = clock
        self.make_block = make_block
        self.block: int | None = None

    def get(self, timeout: float | None = None) -> tuple[int, np.ndarray]:
        if self.block is None:
            self.block = int(self.clock.now() * 50)
        wait = self.block / 50 - self.clock.now()
        if timeout is not None and wait > timeout:
            time.sleep(timeout)
            raise queue.Empty
        time.sleep(max(wait, 0))
        pts = self.block * 960
        self.block += 1
        return pts, self.make_block(pts, 960)
