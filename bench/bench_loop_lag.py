"""Event-loop lag of a node under media load, against the same node idle (same run).

A node serves a room with four test sources (640x360, tones) and two recordings of the
720p30 composite; the loop lag monitor's p50/p99/max are printed for an idle interval and for
the loaded one. The loop must stay responsive: compositing, mixing and encoding run on worker
threads, so its lag under load should stay within a few milliseconds of idle.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

from gateway.config import load_config
from gateway.egress import EgressRequest
from gateway.ingress import IngressRequest
from gateway.logsetup import configure_logging
from gateway.node import Node
from gateway.rooms.models import RoomCreate

SECONDS = 15


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return f"p50 {pick(0.5):6.2f} ms  p99 {pick(0.99):6.2f} ms  max {ordered[-1]:6.2f} ms  ({len(ordered)} wakeups)"


async def measure(node: Node, seconds: float) -> list[float]:
    node.loop_lag.samples.clear()
    await asyncio.sleep(seconds)
    return list(node.loop_lag.samples)


async def main() -> None:
    configure_logging("warning")
    data = tempfile.mkdtemp(prefix="mediagate-bench-")
    config = load_config(None, overrides=[f'node.data_dir="{data}"', "http.port=0", 'log.level="warning"'],
                         environ={})
    node = Node(config)
    await node.start()
    try:
        idle = await measure(node, SECONDS / 3)
        await node.rooms.create(RoomCreate(room_id="bench"))
        for index, colour in enumerate(["FF0000", "00FF00", "0000FF", "FFFF00"]):
            await node.ingress.create("bench", IngressRequest(kind="test", identity=f"s{index}", pattern={
                "color": colour, "tone_hz": 300 + 200 * index}))
        tasks = [await node.egress.create("bench", EgressRequest(kind="record")) for _ in range(2)]
        started = time.process_time()
        loaded = await measure(node, SECONDS)
        cpu = time.process_time() - started
        stats = node.media.stats()
        for task in tasks:
            await node.egress.stop(task.task_id)
        print("event-loop lag of a node (the loop wakes every 100 ms; lag = how late)")
        print(f"idle                             {summary(idle)}")
        print(f"4 sources + 720p30 composite x2  {summary(loaded)}")
        print(f"process CPU while loaded: {cpu / SECONDS:.2f} cores; frames rendered {stats['frames_rendered']}, "
              f"skipped {stats['frames_skipped']}")
    finally:
        await node.stop()


if __name__ == "__main__":
    asyncio.run(main())
