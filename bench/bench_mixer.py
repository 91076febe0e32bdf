"""CPU cost of one 20 ms mixer tick with mix-minus listeners, against a naive reference.

Run from the repo root: ``python -m bench.bench_mixer``. Every listener also publishes a tone
(the worst case: every mix is distinct). The jitter buffers are filled between ticks, outside the
timed region: in production that work happens on the publishers' threads. The reference does the
same pulls and queue puts but computes each listener's mix by summing all other sources
directly, O(N²). CPU time is the mixer thread's (time.thread_time), so other processes on a
shared machine don't inflate it.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections import deque

import numpy as np

from gateway.media.audio import BLOCK_SAMPLES, CHANNELS, samples_to_frame
from gateway.media.bus import FrameBus
from gateway.media.jitter import AudioJitterBuffer
from gateway.media.mixer import SAT, AudioMixer
from gateway.media.track import TrackKind, TrackSource

TICK_US = 20_000
TARGET_US = 4_000  # 500 listeners within 20% of one core
AMPLITUDE = 3000  # about -21 dBov per talker: 500 of them overflow int16, the slow path


def tone(k: int) -> np.ndarray:
    t = np.arange(BLOCK_SAMPLES) / 48000
    mono = np.rint(AMPLITUDE * np.sin(2 * np.pi * (200 + 7 * k) * t)).astype(np.int16)
    return np.column_stack([mono, mono])


def bench_mixer(listeners: int, talkers: int, ticks: int) -> float:
    """Mean CPU µs per tick of AudioMixer.tick()."""
    bus = FrameBus()
    tracks = [bus.create_track(TrackKind.AUDIO, TrackSource.MIC, f"p{k}") for k in range(listeners)]
    mixer = AudioMixer(bus)
    for k in range(listeners):
        mixer.add_listener(f"p{k}")
    frames = [samples_to_frame(tone(k)) for k in range(talkers)]

    def feed() -> None:
        for track, frame in zip(tracks, frames, strict=False):
            track.push_frame(frame)

    for _ in range(4):  # past the 60 ms jitter target
        feed()
    samples = []
    for n in range(ticks + 5):
        feed()
        start = time.thread_time()
        mixer.tick()
        if n >= 5:  # warm-up: buffers allocated, caches warm
            samples.append(time.thread_time() - start)
    mixer.close()
    return statistics.fmean(samples) * 1e6


def bench_naive(listeners: int, talkers: int, ticks: int) -> float:
    """Mean CPU µs per tick of the reference: per listener, sum every other source."""
    buffers = [AudioJitterBuffer() for _ in range(listeners)]
    queues = [deque(maxlen=10) for _ in range(listeners)]
    blocks = [tone(k) for k in range(talkers)]

    def feed() -> None:
        for buf, block in zip(buffers, blocks, strict=False):
            buf.push(block.copy())

    for _ in range(4):
        feed()
    samples = []
    for n in range(ticks + 2):
        feed()
        start = time.thread_time()
        pulled = [buf.pull() for buf in buffers]
        active = [k for k, block in enumerate(pulled) if block is not None]
        stack = np.stack([pulled[k] for k in active]) if active else np.zeros((0, BLOCK_SAMPLES, CHANNELS),
                                                                              dtype=np.int16)
        for k, out in enumerate(queues):
            others = stack[[row for row, j in enumerate(active) if j != k]]
            mix = others.sum(axis=0, dtype=np.int32)
            out.append(np.clip(mix, -SAT, SAT).astype(np.int16))
        if n >= 2:
            samples.append(time.thread_time() - start)
    return statistics.fmean(samples) * 1e6


def report(label: str, listeners: int, talkers: int, ticks: int, naive_ticks: int) -> float:
    gc.collect()
    ours = bench_mixer(listeners, talkers, ticks)
    gc.collect()
    naive = bench_naive(listeners, talkers, naive_ticks)
    print(f"{label:<34} mediagate {ours:8.0f} µs/tick ({100 * ours / TICK_US:5.1f}% of a core), "
          f"naive per-listener sum {naive:9.0f} µs/tick ({100 * naive / TICK_US:6.1f}%), "
          f"ratio {naive / ours:6.1f}x")
    return ours


def main() -> None:
    print("audio mixer, one 20 ms tick, mix-minus for every listener (CPU time of the mixing thread)")
    for n, ticks, naive_ticks in ((10, 300, 100), (100, 200, 20), (500, 100, 5)):
        ours = report(f"{n} listeners, all talking", n, n, ticks, naive_ticks)
    report("500 listeners, 10 talking", 500, 10, 200, 20)
    verdict = "met" if ours < TARGET_US else "MISSED"
    print(f"target: 500 talking listeners under {TARGET_US} µs/tick (20% of a core): {verdict}")


if __name__ == "__main__":
    main()
