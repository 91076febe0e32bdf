"""RFC 4028 session timers against sipp: a caller that never refreshes is sent a BYE; one that
refreshes (re-INVITE and UPDATE) keeps its call past several intervals; a caller without timer
support is refreshed by the node (re-INVITE with the unchanged SDP, or UPDATE when allowed), a
refresh answered 491 is ACKed and tried again, one answered 481 ends the call; 422 both ways
(an inbound interval below our Min-SE, and a dial-out callee's Min-SE above ours). The node's
floor is lowered to 2 s (RFC 4028's is 90 s) so that each call lasts seconds."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.plugins.sip.sipp import Sipp, free_port, next_event, run_sipp, sipp_args

pytestmark = pytest.mark.e2e

INTERVAL = 4  # the node's session_expires_s here


@pytest.fixture
async def node(make_node: Any) -> Any:
    return await make_node("plugins.sip.rtp_timeout_s=0", "plugins.sip.options_interval_s=3600",
                           f"plugins.sip.session_expires_s={INTERVAL}", "plugins.sip.session_min_se_s=2")


def target(node: Any) -> str:
    return f"127.0.0.1:{node.pm.get_plugin('sip').service.endpoint.port}"


def uac(node: Any, scenario: str, room: str, *keys: tuple[str, str]) -> list[str]:
    args = [arg for key, value in keys for arg in ("-key", key, value)]
    return sipp_args(scenario, target(node), "-s", room, "-m", "1", "-trace_msg", *args,
                     port=free_port(), media_port=free_port())


def messages(sipp: Sipp) -> list[str]:
    """The SIP messages sipp sent and received, in order (its -trace_msg log)."""
    log = next(sipp.dir.glob("*_messages.log")).read_text(errors="replace")
    parts = re.split(r"^-{20,}.*$", log, flags=re.MULTILINE)
    out = []
    for part in parts:
        start = re.search(r"^(?:[A-Z]+ sip:\S+ SIP/2\.0|SIP/2\.0 \d{3} .*)$", part, flags=re.MULTILINE)
        if start:
            out.append(part[start.start():])
    return out


def sent_by_node(msgs: list[str], first_line: str) -> list[str]:
    """The requests the node sent (its User-Agent) that start with `first_line`."""
    return [m for m in msgs if m.startswith(first_line) and "User-Agent: mediagate" in m]


def header(message: str, name: str) -> str | None:
    found = re.search(rf"^{name}:\s*(.*?)\s*$", message, flags=re.MULTILINE | re.IGNORECASE)
    return found.group(1) if found else None


async def room(client: Any, auth: dict[str, str], name: str) -> None:
    response = await client.post("/v1/rooms", json={"room_id": name}, headers=auth)
    assert response.status == 201, await response.text()


async def test_a_caller_that_never_refreshes_is_sent_a_bye(node: Any, client: Any, auth: dict[str, str]) -> None:
    await room(client, auth, "st_idle")
    with node.events.subscribe("st_idle") as sub:
        code, sipp = await run_sipp(uac(node, "uac_timer_idle.xml", "st_idle", ("se", "3")), timeout=40)
        assert code == 0, sipp.errors()  # it got the node's BYE and answered it
        connected = await next_event(sub, "sip.call.state", state="connected")
        assert connected.data["session_timer"] == {"interval_s": 3, "refresher": "peer", "refreshes": 0}
        ended = await next_event(sub, "sip.call.state", state="ended")
        assert ended.data["reason"] == "session_timer"
        left = await next_event(sub, "participant.left")
        assert left.data["reason"] == "sip_session_timer"
    msgs = messages(sipp)
    ok = next(m for m in msgs if m.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in m)
    assert header(ok, "Session-Expires") == "3;refresher=uac"
    assert header(ok, "Require") == "timer" and "timer" in (header(ok, "Supported") or "")
    assert "UPDATE" in (header(ok, "Allow") or "")
    assert len(sent_by_node(msgs, "BYE sip:")) == 1


async def test_a_refreshing_caller_keeps_its_call(node: Any, client: Any, auth: dict[str, str]) -> None:
    await room(client, auth, "st_refresh")
    with node.events.subscribe("st_refresh") as sub:
        # six refreshes 1.3 s apart: the node's BYE would be due 2.67 s after the last one
        code, sipp = await run_sipp([*uac(node, "uac_timer_refresh.xml", "st_refresh", ("se", str(INTERVAL))),
                                     "-d", "1300"], timeout=60)
        assert code == 0, sipp.errors()  # a BYE from the node would have been unexpected
        ended = await next_event(sub, "sip.call.state", state="ended")
        assert ended.data["reason"] == "hangup", ended.data
        assert ended.data["session_timer"]["refreshes"] == 6
        assert ended.data["ended_at"] - ended.data["connected_at"] > 2 * INTERVAL  # past the intervals
    msgs = messages(sipp)
    answers = [m for m in msgs if m.startswith("SIP/2.0 200") and re.search(r"CSeq: \d+ (INVITE|UPDATE)", m)]
    assert len(answers) == 7, [m.splitlines()[0] for m in msgs]
    assert all(header(m, "Session-Expires") == f"{INTERVAL};refresher=uac" for m in answers)
    assert all(header(m, "Require") == "timer" for m in answers)
    assert not sent_by_node(msgs, "BYE sip:")


async def test_the_node_refreshes_a_caller_without_timer_support(node: Any, client: Any,
                                                                auth: dict[str, str]) -> None:
    await room(client, auth, "st_uas")
    with node.events.subscribe("st_uas") as sub:
        code, sipp = await run_sipp(uac(node, "uac_no_timer.xml", "st_uas"), timeout=40)
        assert code == 0, sipp.errors()  # it saw two re-INVITEs from the node and answered them
        connected = await next_event(sub, "sip.call.state", state="connected")
        assert connected.data["session_timer"]["refresher"] == "us"
        ended = await next_event(sub, "sip.call.state", state="ended")
        assert ended.data["reason"] == "hangup" and ended.data["session_timer"]["refreshes"] == 2
    msgs = messages(sipp)
    ok = next(m for m in msgs if m.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in m)
    # §9: no Supported: timer from the caller, so we refresh and require nothing of it
    assert header(ok, "Session-Expires") == f"{INTERVAL};refresher=uas" and header(ok, "Require") is None
    refreshes = sent_by_node(msgs, "INVITE sip:")
    assert len(refreshes) == 2
    for refresh in refreshes:
        assert header(refresh, "Session-Expires") == f"{INTERVAL};refresher=uac"  # uac: the node, who sends it
        assert "timer" in (header(refresh, "Supported") or "")
    # RFC 3264 §8: the unchanged session offered again, same o= line (session id and version)
    origins = {re.search(r"^o=(.*?)\s*$", m, flags=re.MULTILINE).group(1) for m in [ok, *refreshes]}
    assert len(origins) == 1 and next(iter(origins)).startswith("mediagate "), origins


async def test_the_answer_to_our_refresh_moves_the_media(node: Any, client: Any, auth: dict[str, str]) -> None:
    """RFC 3264 §8: the answer to the node's refresh re-INVITE names another port and says
    recvonly; the leg sends to the new port and stops expecting media."""
    await room(client, auth, "st_move")
    media_port = free_port()
    service = node.pm.get_plugin("sip").service
    sipp = await Sipp(sipp_args("uac_no_timer_moves.xml", target(node), "-s", "st_move", "-m", "1",
                                port=free_port(), media_port=media_port)).start()
    try:
        with node.events.subscribe("st_move") as sub:
            await next_event(sub, "sip.call.state", state="connected")
            leg = next(c for c in service.by_sip.values() if c.room_id == "st_move").leg
            assert leg.remote == ("127.0.0.1", media_port) and leg.receiving and leg.sending
            for _ in range(200):  # the refresh comes at half the interval
                if leg.remote[1] != media_port:
                    break
                await asyncio.sleep(0.05)
            assert leg.remote == ("127.0.0.1", media_port + 2)
            assert leg.sending and not leg.receiving
            await next_event(sub, "sip.call.state", state="ended")
        assert await sipp.wait(30) == 0, sipp.errors()
    finally:
        sipp.kill()


async def test_a_refresh_answered_491_is_acked_and_retried(node: Any, client: Any, auth: dict[str, str]) -> None:
    await room(client, auth, "st_491")
    with node.events.subscribe("st_491") as sub:
        code, sipp = await run_sipp(uac(node, "uac_no_timer_491.xml", "st_491"), timeout=40)
        assert code == 0, sipp.errors()  # it got the ACK of its 491, then a second re-INVITE
        ended = await next_event(sub, "sip.call.state", state="ended")
        assert ended.data["reason"] == "hangup" and ended.data["session_timer"]["refreshes"] == 1
    msgs = messages(sipp)
    refreshes = sent_by_node(msgs, "INVITE sip:")
    acks = [m for m in msgs if m.startswith("ACK sip:sipp@")]  # to its Contact: the node's
    assert len(refreshes) == 2 and len(acks) == 2
    branch = re.compile(r"branch=([^;\s]+)")
    assert branch.search(acks[0]).group(1) == branch.search(refreshes[0]).group(1)  # the 491's: same branch
    assert branch.search(acks[1]).group(1) != branch.search(refreshes[1]).group(1)  # a 2xx's: a new one


async def test_a_refresh_answered_481_ends_the_call(node: Any, client: Any, auth: dict[str, str]) -> None:
    await room(client, auth, "st_481")
    with node.events.subscribe("st_481") as sub:
        code, sipp = await run_sipp(uac(node, "uac_no_timer_update_481.xml", "st_481"), timeout=40)
        assert code == 0, sipp.errors()
        ended = await next_event(sub, "sip.call.state", state="ended")
        assert ended.data["reason"] == "session_timer" and ended.data["sip_status"] == 481, ended.data
        left = await next_event(sub, "participant.left")
        assert left.data["reason"] == "sip_session_timer"
    msgs = messages(sipp)
    updates = sent_by_node(msgs, "UPDATE sip:")
    assert len(updates) == 2 and all(header(u, "Content-Length") == "0" for u in updates)
    assert not sent_by_node(msgs, "INVITE sip:")  # the caller allows UPDATE: no re-INVITE
    assert len(sent_by_node(msgs, "BYE sip:")) == 1


async def test_an_interval_below_our_min_se_is_422(node: Any, client: Any, auth: dict[str, str]) -> None:
    await room(client, auth, "st_422")
    with node.events.subscribe("st_422") as sub:
        code, sipp = await run_sipp(uac(node, "uac_timer_422.xml", "st_422", ("se", "1")), timeout=40)
        assert code == 0, sipp.errors()
        ended = await next_event(sub, "sip.call.state", state="ended")
        assert ended.data["reason"] == "hangup"
    msgs = messages(sipp)
    rejected = next(m for m in msgs if m.startswith("SIP/2.0 422"))
    assert header(rejected, "Min-SE") == "2"
    ok = next(m for m in msgs if m.startswith("SIP/2.0 200") and "CSeq: 2 INVITE" in m)
    assert header(ok, "Session-Expires") == "2;refresher=uac"
    calls = node.pm.get_plugin("sip").service.ended.values()
    assert sum(1 for c in calls if c.room_id == "st_422") == 1  # the 422 made no call


async def test_dial_out_retries_a_422_then_refreshes_by_update(node: Any, client: Any,
                                                              auth: dict[str, str]) -> None:
    port = free_port()
    sipp = await Sipp(sipp_args("uas_timer_422.xml", "-m", "1", "-trace_msg", "-key", "minse", "5",
                                port=port, media_port=free_port())).start()
    try:
        await asyncio.sleep(0.5)  # let it bind
        await room(client, auth, "st_out")
        with node.events.subscribe("st_out") as sub:
            response = await client.post("/v1/rooms/st_out/sip/calls", headers=auth,
                                         json={"to": f"sip:1001@127.0.0.1:{port}"})
            assert response.status == 201, await response.text()
            call = await response.json()
            connected = await next_event(sub, "sip.call.state", state="connected")
            assert connected.data["session_timer"] == {"interval_s": 5, "refresher": "us", "refreshes": 0}
            ended = await next_event(sub, "sip.call.state", state="ended")
            # our UPDATE's answer made the callee the refresher; it never refreshed
            assert ended.data["reason"] == "session_timer", ended.data
            assert ended.data["session_timer"] == {"interval_s": 5, "refresher": "peer", "refreshes": 1}
            await next_event(sub, "participant.left", participant_id=call["participant_id"])
        assert await sipp.wait(30) == 0, sipp.errors()
    finally:
        sipp.kill()
    msgs = messages(sipp)
    invites = [m for m in msgs if m.startswith("INVITE sip:")]
    assert len(invites) == 2
    assert header(invites[0], "Session-Expires") == str(INTERVAL) and header(invites[0], "Min-SE") == "2"
    assert "timer" in (header(invites[0], "Supported") or "")
    assert header(invites[1], "Session-Expires") == "5" and header(invites[1], "Min-SE") == "5"
    first, again = (int((header(m, "CSeq") or "0").split()[0]) for m in invites)
    assert again == first + 1  # the same dialog attempt, the next CSeq (§7.3)
    update = next(m for m in msgs if m.startswith("UPDATE sip:"))
    assert header(update, "Session-Expires") == "5;refresher=uac"
