"""DTMF from sipp (sip-tester's RFC 4733 pcaps): digits arrive as room events in order; a
PIN-routed call lands in its room after a wrong PIN is re-prompted; a caller that never
gets the PIN right is hung up on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.plugins.sip.sipp import dtmf_scenario, free_port, next_event, run_sipp, sipp_args

pytestmark = pytest.mark.e2e


@pytest.fixture
async def node(make_node: Any, tmp_path: Any) -> Any:
    return await make_node("plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                           "plugins.sip.rtp_timeout_s=0", "plugins.sip.pin_attempts=2",
                           "plugins.sip.pin_timeout_s=6")


def port(node: Any) -> int:
    return node.pm.get_plugin("sip").service.endpoint.port


async def test_rfc4733_digits_arrive_in_order(node: Any, client: Any, auth: dict[str, str], tmp_path: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "keys"}, headers=auth)
    scenario = dtmf_scenario(tmp_path / "dtmf.xml", "19*#05")
    with node.events.subscribe("keys") as sub:
        code, sipp = await run_sipp(sipp_args(str(scenario), f"127.0.0.1:{port(node)}", "-s", "keys", "-m", "1",
                                              port=free_port(), media_port=free_port()))
        assert code == 0, sipp.errors()
        digits = [(await next_event(sub, "sip.dtmf")).data["digit"] for _ in range(6)]
    assert "".join(digits) == "19*#05"


async def test_pin_route_reprompts_then_joins_the_room(node: Any, client: Any, auth: dict[str, str],
                                                     tmp_path: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "secret"}, headers=auth)
    response = await client.post("/v1/sip/routes", headers=auth, json={"match": "7000", "room_id": "secret",
                                                                        "pin": "4321"})
    assert response.status == 201
    # a wrong PIN (type-ahead during the prompt counts), then the right one
    scenario = dtmf_scenario(tmp_path / "pin.xml", "9999#4321#", gap_ms=350, hold_ms=12000)
    with node.events.subscribe() as sub:
        code, sipp = await run_sipp(sipp_args(str(scenario), f"127.0.0.1:{port(node)}", "-s", "7000", "-m", "1",
                                              port=free_port(), media_port=free_port()))
        assert code == 0, sipp.errors()
        wrong = await next_event(sub, "sip.pin.wrong")
        assert wrong.data["attempt"] == 1
        joined = await next_event(sub, "participant.joined")
        assert joined.room_id == "secret" and joined.data["participant"]["kind"] == "sip"
        await next_event(sub, "participant.left")  # the caller's BYE


async def test_wrong_pins_are_finally_rejected(node: Any, client: Any, auth: dict[str, str], tmp_path: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "vault"}, headers=auth)
    await client.post("/v1/sip/routes", headers=auth, json={"match": "7001", "room_id": "vault", "pin": "11"})
    # all digits within ~1.2 s: the rejection (two prompts at least) can only come after them
    scenario = dtmf_scenario(tmp_path / "bad.xml", "22#33#", hangup="callee", gap_ms=150, first_ms=300)
    with node.events.subscribe() as sub:
        code, sipp = await run_sipp(sipp_args(str(scenario), f"127.0.0.1:{port(node)}", "-s", "7001", "-m", "1",
                                              port=free_port(), media_port=free_port()))
        assert code == 0, sipp.errors()  # it got our BYE
        ended = await next_event(sub, "sip.call.state", state="ended")
        assert ended.data["reason"] == "wrong_pin"
    rooms = node.rooms.rooms
    assert not rooms["vault"].participants
