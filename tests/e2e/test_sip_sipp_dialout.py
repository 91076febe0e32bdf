"""Dial-out against sipp callees: through a gate to a uas that answers, a callee that is busy
(486 → failed with the status) and one that rings until we CANCEL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.plugins.sip.sipp import Sipp, free_port, next_event, sipp_args

pytestmark = pytest.mark.e2e


@pytest.fixture
async def node(make_node: Any) -> Any:
    return await make_node("plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                           "plugins.sip.rtp_timeout_s=0", "plugins.sip.options_interval_s=3600")


async def callee(scenario: str) -> tuple[Sipp, int]:
    port = free_port()
    sipp = await Sipp(sipp_args(scenario, "-m", "1", "-trace_msg", port=port, media_port=free_port())).start()
    await asyncio.sleep(0.5)  # let it bind
    return sipp, port


async def states_until(sub: Any, final: tuple[str, ...] = ("ended", "failed")) -> list[dict[str, Any]]:
    seen = []
    while not seen or seen[-1]["state"] not in final:
        seen.append((await next_event(sub, "sip.call.state", timeout=40)).data)
    return seen


async def test_dial_out_through_a_gate_connects_and_ends_cleanly(node: Any, client: Any, auth: dict[str, str]) -> None:
    sipp, port = await callee("uas")
    try:
        await client.post("/v1/rooms", json={"room_id": "out1"}, headers=auth)
        response = await client.post("/v1/sip/gates", headers=auth, json={
            "name": "pbx", "host": "127.0.0.1", "port": port, "transport": "udp"})
        assert response.status == 201, await response.text()
        gate = await response.json()
        assert gate["status"] == 1 and gate["registration"] == "none"
        with node.events.subscribe("out1") as sub:
            response = await client.post("/v1/rooms/out1/sip/calls", headers=auth, json={
                "to": "1001", "gate_id": gate["gate_id"], "from": "4000", "caller_name": "Conference"})
            assert response.status == 201, await response.text()
            call = await response.json()
            assert call["state"] == "calling" and call["participant_id"]
            seen = await states_until(sub, ("connected", "failed"))
            assert [s["state"] for s in seen][-1] == "connected", seen
            info = await (await client.get(f"/v1/sip/calls/{call['call_id']}", headers=auth)).json()
            assert info["invite_status"] == 1 and info["media"]["codec"] == "PCMU"
            participants = await (await client.get("/v1/rooms/out1/participants", headers=auth)).json()
            assert [p["kind"] for p in participants] == ["sip"]
            response = await client.delete(f"/v1/sip/calls/{call['call_id']}", headers=auth)
            assert response.status == 200
            seen = await states_until(sub)
            assert seen[-1]["state"] == "ended" and seen[-1]["invite_status"] == 2
            await next_event(sub, "participant.left", participant_id=call["participant_id"])
        assert await sipp.wait(30) == 0, sipp.errors()
        log = next(sipp.dir.glob("*_messages.log")).read_text(errors="replace")
        assert "INVITE sip:1001@127.0.0.1" in log and '"Conference" <sip:4000@' in log
    finally:
        sipp.kill()


async def test_busy_callee_fails_with_its_status(node: Any, client: Any, auth: dict[str, str]) -> None:
    sipp, port = await callee("uas_busy.xml")
    try:
        await client.post("/v1/rooms", json={"room_id": "out2"}, headers=auth)
        with node.events.subscribe("out2") as sub:
            response = await client.post("/v1/rooms/out2/sip/calls", headers=auth,
                                         json={"to": f"sip:1002@127.0.0.1:{port}"})
            call = await response.json()
            seen = await states_until(sub)
            assert seen[-1]["state"] == "failed" and seen[-1]["sip_status"] == 486, seen
            assert seen[-1]["invite_status"] == 3
            await next_event(sub, "participant.left", participant_id=call["participant_id"])
        assert await sipp.wait(30) == 0, sipp.errors()
        info = await (await client.get(f"/v1/sip/calls/{call['call_id']}", headers=auth)).json()
        assert info["state"] == "failed" and info["sip_status"] == 486
        assert [h["state"] for h in info["history"]] == ["calling", "failed"]
    finally:
        sipp.kill()


async def test_cancel_while_ringing_ends_the_call(node: Any, client: Any, auth: dict[str, str]) -> None:
    sipp, port = await callee("uas_ring_cancel.xml")
    try:
        await client.post("/v1/rooms", json={"room_id": "out3"}, headers=auth)
        with node.events.subscribe("out3") as sub:
            response = await client.post("/v1/rooms/out3/sip/calls", headers=auth,
                                         json={"to": f"sip:1003@127.0.0.1:{port}"})
            call = await response.json()
            seen = await states_until(sub, ("ringing", "failed"))
            assert seen[-1]["state"] == "ringing", seen
            response = await client.delete(f"/v1/sip/calls/{call['call_id']}", headers=auth)
            assert response.status == 200
            seen = await states_until(sub)
            assert seen[-1]["state"] == "ended", seen
        assert await sipp.wait(30) == 0, sipp.errors()  # it saw our CANCEL and the ACK of its 487
    finally:
        sipp.kill()


async def test_gate_registers_with_digest_and_refreshes(node: Any, client: Any, auth: dict[str, str]) -> None:
    sipp, port = await callee("uas_register_digest.xml")
    with node.events.subscribe() as sub:
        try:
            response = await client.post("/v1/sip/gates", headers=auth, json={
                "name": "carrier", "host": "127.0.0.1", "port": port, "register": True,
                "username": "gateuser", "password": "gatepass", "expires_s": 60})
            assert response.status == 201, await response.text()
            gate = await response.json()
            registered = await next_event(sub, "sip.registration.state", gate_id=gate["gate_id"], timeout=30)
            assert registered.data["state"] == "registered", registered.data
            refreshed = await next_event(sub, "sip.registration.state", gate_id=gate["gate_id"], timeout=30)
            assert refreshed.data["state"] == "refreshed", refreshed.data
            assert await sipp.wait(30) == 0, sipp.errors()
            info = await (await client.get(f"/v1/sip/gates/{gate['gate_id']}", headers=auth)).json()
            assert info["refreshes"] >= 3 and info["last_status"] == 200, info
            assert "password" not in info
        finally:
            sipp.kill()


async def test_gate_with_a_wrong_password_fails(node: Any, client: Any, auth: dict[str, str]) -> None:
    sipp, port = await callee("uas_register_digest.xml")
    with node.events.subscribe() as sub:
        try:
            response = await client.post("/v1/sip/gates", headers=auth, json={
                "name": "carrier", "host": "127.0.0.1", "port": port, "register": True,
                "username": "gateuser", "password": "nope"})
            gate = await response.json()
            state = await next_event(sub, "sip.registration.state", gate_id=gate["gate_id"], timeout=30)
            assert state.data["state"] == "failed" and state.data["status"] == 403, state.data
        finally:
            sipp.kill()
