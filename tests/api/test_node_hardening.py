"""Issue 6 items 5 and 11 on a live node: stdlib log redaction, the merge-mode main surviving a
reconnect, frame counters that never go down, SQLite in WAL mode."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from gateway.media.layout.resolve import resolve
from gateway.node import Node

URI = "[username:{}@sample.cloud.justalk.com]"


async def test_aiosqlite_debug_log_never_shows_password_hashes(client: TestClient, api: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiosqlite")
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # echo: the SQL and its parameters
    try:
        await api.create_room(room_id="secretive", password="pw-123", host_password="host-456")
        await client.patch("/v1/rooms/secretive", json={"password": "pw-789"}, headers=api.auth)
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    text = caplog.text
    assert "secretive" in text  # the statements were logged ...
    assert "scrypt$" not in text and not re.search(r"eyJ[\w-]+\.[\w-]+\.", text)  # ... without hashes or tokens


async def test_setmergemode_i_main_survives_a_reconnect(client: TestClient, api: Any, connect: Any, token: str,
                                                       node: Node) -> None:
    await api.create_room(room_id="mm")
    await api.add_test_participant("mm", "first")
    alice = await api.add_test_participant("mm", "alice")
    operator = await connect("mm", token)
    await operator.ok(f"setmergemode_i 3 4 {URI.format('alice')}")
    assert (await api.layout("mm"))["main"] == "alice"  # the identity, not today's participant id
    response = await client.delete(f"/v1/rooms/mm/participants/{alice['participant_id']}", headers=api.auth)
    assert response.status == 204
    again = await api.add_test_participant("mm", "alice")
    assert again["participant_id"] != alice["participant_id"]
    room = await node.rooms.get("mm")

    async def has_pictures() -> bool:
        return {s.participant_id for s in room.media.sources()} >= {again["participant_id"]}

    await api.wait_until(has_pictures, "alice's pictures are back")
    placed = resolve(room.layout, room.media.sources(), node.media.templates)
    biggest = max(placed, key=lambda region: region.w * region.h)
    assert biggest.participant_id == again["participant_id"]


async def _metric(client: TestClient, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_frame_counters_never_go_down(client: TestClient, api: Any, auth: dict[str, str], node: Node) -> None:
    await api.create_room(room_id="fc")
    await api.add_test_participant("fc", "a")
    room = await node.rooms.get("fc")
    handle = room.media.composite("metrics-test", None)
    await api.wait_until(lambda: _true(handle.composition.stats()["frames_rendered"] >= 3), "frames rendered")
    rendered = await _metric(client, 'mediagate_composite_frames_total{state="rendered"}')
    nodes = await (await client.get("/v1/nodes", headers=auth)).json()
    before = nodes["nodes"][0]["load"]["frames_rendered"]
    assert rendered >= 3 and before >= 3
    await asyncio.to_thread(room.media._stop_composite, handle)  # the composition ends
    assert node.media.stats()["compositions"] == 0
    after_metric = await _metric(client, 'mediagate_composite_frames_total{state="rendered"}')
    nodes = await (await client.get("/v1/nodes", headers=auth)).json()
    assert after_metric >= rendered
    assert nodes["nodes"][0]["load"]["frames_rendered"] >= before


async def _true(value: bool) -> bool:
    return value


async def test_sqlite_runs_in_wal_mode(node: Node) -> None:
    assert await node.store.journal_mode() == "wal"
    async with node.store.engine.connect() as conn:
        assert (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar() == 5000
        assert (await conn.execute(sa.text("PRAGMA synchronous"))).scalar() == 1  # NORMAL
