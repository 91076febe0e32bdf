"""Overload: with the node at its configured call capacity, a flood of INVITEs from sipp gets
503 with Retry-After, while the established calls keep their audio and end cleanly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.plugins.sip.sipp import Sipp, free_port, run_sipp, sipp_args

pytestmark = pytest.mark.e2e


@pytest.fixture
async def node(make_node: Any) -> Any:
    return await make_node("plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                           "plugins.sip.rtp_timeout_s=0", "plugins.sip.max_calls=2", "plugins.sip.retry_after_s=7")


async def test_flood_beyond_capacity_gets_503_and_calls_keep_audio(node: Any, client: Any,
                                                                  auth: dict[str, str]) -> None:
    service = node.pm.get_plugin("sip").service
    target = f"127.0.0.1:{service.endpoint.port}"
    await client.post("/v1/rooms", json={"room_id": "busy"}, headers=auth)
    established = await Sipp(sipp_args("uac_pcap", target, "-s", "busy", "-m", "2", "-l", "2", "-r", "10",
                                       port=free_port(), media_port=free_port())).start()
    try:
        for _ in range(300):
            if len(service.calls) == 2 and all(c.leg and c.leg.packets_in > 20 for c in service.calls.values()):
                break
            await asyncio.sleep(0.05)
        assert len(service.calls) == 2, [(c.state, c.reason, c.sip_status) for c in service.ended.values()]
        before = {c.call_id: c.leg.packets_in for c in service.calls.values()}
        code, flood = await run_sipp(sipp_args("uac_expect_busy.xml", target, "-s", "busy", "-m", "60", "-r", "200",
                                               "-trace_msg", port=free_port(), media_port=free_port()))
        assert code == 0, flood.errors()  # every one of the 60 got its 503 with a Retry-After
        log = next(flood.dir.glob("*_messages.log")).read_text(errors="replace")
        assert log.count("SIP/2.0 503") >= 60 and "Retry-After: 7" in log
        await asyncio.sleep(0.5)
        after = {c.call_id: c.leg.packets_in for c in service.calls.values()}
        assert set(after) == set(before)
        assert all(after[k] > before[k] + 10 for k in before), (before, after)  # audio went on during the flood
        assert service.rejected_busy >= 60
        assert await established.wait(60) == 0, established.errors()
    finally:
        established.kill()


@pytest.fixture
async def roomy_node(make_node: Any) -> Any:
    return await make_node("plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                           "plugins.sip.rtp_timeout_s=0", "plugins.sip.max_calls=100", "plugins.sip.retry_after_s=9")


async def test_saturated_media_engine_refuses_new_calls_and_keeps_audio(
        roomy_node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Far below max_calls, but with the media thread's ticks past their budget (the threshold
    lowered below any load, the decision itself unchanged): new INVITEs get 503 + Retry-After,
    and once the load falls back under it calls are taken again."""
    from gateway.rooms.models import RoomCreate
    from plugins.sip import legs

    node = roomy_node
    service = node.pm.get_plugin("sip").service
    target = f"127.0.0.1:{service.endpoint.port}"
    await node.rooms.create(RoomCreate(room_id="saturated"))  # `client` talks to the other fixture's node
    failed: list[str] = []
    for _attempt in range(2):  # a caller that could not even start (its ports taken meanwhile) starts again
        established = await Sipp(sipp_args("uac_pcap", target, "-s", "saturated", "-m", "1", "-l", "1",
                                           port=free_port(), media_port=free_port())).start()
        for _ in range(300):
            if len(service.calls) == 1 and all(c.leg and c.leg.packets_in > 20 for c in service.calls.values()):
                break
            if established.proc is not None and established.proc.returncode is not None:
                break  # sipp gave up: say why below
            await asyncio.sleep(0.05)
        if service.calls or service.ended:
            break
        established.kill()
        failed.append(f"exit {established.proc.returncode if established.proc else None}: {established.errors()}")
    try:
        assert len(service.calls) == 1, ([(c.state, c.reason, c.sip_status) for c in service.ended.values()], failed)
        assert not service.media_saturated
        before = {c.call_id: c.leg.packets_in for c in service.calls.values()}
        monkeypatch.setattr(legs, "SATURATED", -1.0)
        assert service.media_saturated
        code, flood = await run_sipp(sipp_args("uac_expect_busy.xml", target, "-s", "saturated", "-m", "10", "-r", "50",
                                               "-trace_msg", port=free_port(), media_port=free_port()))
        assert code == 0, flood.errors()
        log = next(flood.dir.glob("*_messages.log")).read_text(errors="replace")
        assert log.count("SIP/2.0 503") >= 10 and "Retry-After: 9" in log
        await asyncio.sleep(0.5)
        after = {c.call_id: c.leg.packets_in for c in service.calls.values()}
        assert set(after) == set(before) and all(after[k] > before[k] + 10 for k in before), (before, after)
        monkeypatch.setattr(legs, "SATURATED", 0.8)
        assert not service.media_saturated  # one call is far from the budget
        assert await established.wait(60) == 0, established.errors()
    finally:
        established.kill()
