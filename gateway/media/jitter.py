"""Per-subscriber audio jitter buffer with loss concealment by silence.

Frames arrive in bursts of any size (AAC 1024, Opus 960, G.711 160 at 8 kHz resampled); the
mixer pulls exactly one 20 ms block per tick. The buffer waits until `target` samples are
queued before it starts playing (absorbing arrival jitter), answers an empty buffer with
silence (concealment) and re-primes, and drops the oldest audio when more than `maximum` is
queued, so latency stays bounded when a source runs fast.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from gateway.media.audio import BLOCK_SAMPLES, CHANNELS
from gateway.media.clock import AUDIO_RATE


class AudioJitterBuffer:
    def __init__(self, target_ms: int = 60, max_ms: int = 400) -> None:
        self.target = AUDIO_RATE * target_ms // 1000
        self.maximum = max(AUDIO_RATE * max_ms // 1000, self.target + BLOCK_SAMPLES)
        self._chunks: deque[np.ndarray] = deque()
        self._queued = 0
        self._playing = False
        self._lock = threading.Lock()
        self.underruns = 0  # blocks concealed with silence after playback started
        self.dropped_samples = 0

    @property
    def queued(self) -> int:
        return self._queued

    def push(self, samples: np.ndarray) -> None:
        """Queue an (n, 2) int16 block. Never blocks the publisher."""
        n = len(samples)
        if n == 0:
            return
        with self._lock:
            self._chunks.append(samples)
            self._queued += n
            excess = self._queued - self.maximum
            while excess > 0 and self._chunks:
                head = self._chunks[0]
                if len(head) <= excess:
                    self._chunks.popleft()
                    self._queued -= len(head)
                    self.dropped_samples += len(head)
                    excess -= len(head)
                else:
                    self._chunks[0] = head[excess:]
                    self._queued -= excess
                    self.dropped_samples += excess
                    excess = 0

    def pull(self, n: int = BLOCK_SAMPLES) -> np.ndarray | None:
        """The next `n` samples, or None when the source has nothing to play (silence)."""
        with self._lock:
            if not self._playing:
                if self._queued < self.target:
                    return None
                self._playing = True
            if self._queued < n:
                # underrun: conceal with silence, then wait for the buffer to refill
                self._playing = False
                if self._queued:
                    self.underruns += 1
                    out = np.zeros((n, CHANNELS), dtype=np.int16)
                    got = self._take(self._queued)
                    out[: len(got)] = got
                    return out
                self.underruns += 1
                return None
            head = self._chunks[0]
            if len(head) == n:  # the common case, chunks of the block size: no slicing
                self._chunks.popleft()
                self._queued -= n
                return head
            return self._take(n)

    def _take(self, n: int) -> np.ndarray:
        parts = []
        need = n
        while need > 0:
            head = self._chunks[0]
            if len(head) <= need:
                parts.append(self._chunks.popleft())
                need -= len(head)
            else:
                parts.append(head[:need])
                self._chunks[0] = head[need:]
                need = 0
        self._queued -= n
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._queued = 0
            self._playing = False
