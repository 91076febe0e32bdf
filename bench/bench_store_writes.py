"""Store write latency: 50 concurrent clients creating and deleting rooms over HTTP, SQLite with
its default rollback journal against SQLite in WAL mode (same run, same machine).

Each client loops: POST /v1/rooms, DELETE /v1/rooms/{id}; every request's latency is kept.
Printed: p50/p99/max per mode, the writes that failed (500 "database is locked"), and the
ratio WAL / rollback journal (below 1 is better).
"""

from __future__ import annotations

import asyncio
import tempfile
import time

import aiohttp

from gateway.config import load_config
from gateway.logsetup import configure_logging
from gateway.node import Node

CLIENTS = 50
ROUNDS = 10  # create + delete per client


def pick(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(wal: bool) -> tuple[list[float], int]:
    data = tempfile.mkdtemp(prefix="mediagate-bench-store-")
    config = load_config(None, environ={}, overrides=[
        f'node.data_dir="{data}"', "http.port=0", 'log.level="warning"', "auth.bootstrap_key=false",
        'auth.api_keys={"bench" = "bench-secret"}', f"store.sqlite_wal={'true' if wal else 'false'}",
        "http.rate_limit_per_s=0", "rooms.empty_timeout_s=0"])
    node = Node(config)
    url = await node.serve(host="127.0.0.1", port=0)
    latencies: list[float] = []
    failures = [0]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:
            async with session.post(url + "/v1/auth/token",
                                    json={"access_key": "bench", "secret_key": "bench-secret"}) as response:
                token = (await response.json())["token"]
            auth = {"Authorization": f"Bearer {token}"}

            async def client(number: int) -> None:
                for round_ in range(ROUNDS):
                    room_id = f"c{number}-r{round_}"
                    started = time.perf_counter()
                    async with session.post(url + "/v1/rooms", json={"room_id": room_id}, headers=auth) as r:
                        failures[0] += r.status != 201
                    latencies.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    async with session.delete(url + f"/v1/rooms/{room_id}", headers=auth) as r:
                        failures[0] += r.status not in (204, 404)
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(client(n) for n in range(CLIENTS)))
        mode = await node.store.journal_mode()
        print(f"  journal_mode={mode}", flush=True)
    finally:
        await node.stop()
    return sorted(latencies), failures[0]


async def main() -> None:
    configure_logging("warning")
    results = {}
    for wal in (False, True):
        ordered, failed = await run(wal)
        results[wal] = ordered
        label = "WAL" if wal else "rollback journal (reference)"
        print(f"{label:30s} p50 {pick(ordered, 0.5) * 1000:7.1f} ms  p99 {pick(ordered, 0.99) * 1000:7.1f} ms  "
              f"max {ordered[-1] * 1000:7.1f} ms  failed {failed}  ({len(ordered)} writes, {CLIENTS} clients)",
              flush=True)
    ratio = pick(results[True], 0.99) / pick(results[False], 0.99)
    print(f"p99 WAL / rollback journal: {ratio:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
