"""The room clock: one monotonic time base that stamps every frame of a room, so every
output of the room (composite, mix, recordings) stays in sync."""

from __future__ import annotations

import time
from fractions import Fraction

AUDIO_RATE = 48000
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
VIDEO_TIME_BASE = Fraction(1, 90000)


class RoomClock:
    def __init__(self, epoch: float | None = None) -> None:
        self.epoch = time.monotonic() if epoch is None else epoch

    def now(self) -> float:
        """Seconds since the room's media started."""
        return time.monotonic() - self.epoch

    def video_pts(self, at: float | None = None) -> int:
        return int(round((self.now() if at is None else at) * 90000))

    def audio_pts(self, at: float | None = None) -> int:
        return int(round((self.now() if at is None else at) * AUDIO_RATE))
