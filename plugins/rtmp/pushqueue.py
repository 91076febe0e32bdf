"""The bounded queue between a push's feeder and one URL's sender thread.

Full means the CDN is behind: the queue empties and waits for the next video keyframe, so
the CDN sees a gap rather than a broken GOP, and the feeder (and the composite behind it)
never waits.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import av


@dataclass(frozen=True)
class Item:
    kind: str  # "video" | "audio"
    packet: av.Packet
    dts_s: float
    keyframe: bool


class PushQueue:
    def __init__(self, maxsize: int, has_video: bool) -> None:
        self.maxsize = maxsize
        self.has_video = has_video
        self._items: deque[Item] = deque()
        self._cond = threading.Condition()
        self._waiting_keyframe = has_video
        self.dropped = 0
        self.overflows = 0

    def put(self, item: Item) -> None:
        with self._cond:
            if self._waiting_keyframe:
                if not (item.kind == "video" and item.keyframe):
                    self.dropped += 1
                    return
                self._waiting_keyframe = False
            if len(self._items) >= self.maxsize:
                self.overflows += 1
                self.dropped += len(self._items) + 1
                self._items.clear()
                self._waiting_keyframe = self.has_video
                return
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float) -> Item | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def restart(self) -> None:
        """After a (re)connect: start again at the next keyframe."""
        with self._cond:
            self.dropped += len(self._items)
            self._items.clear()
            self._waiting_keyframe = self.has_video

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)
