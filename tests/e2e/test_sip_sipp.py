"""SIP edge against sipp (Debian sip-tester): inbound calls with the g711a pcap reach the room's
recording; BYE ends the leg; retransmissions are matched; no common codec is refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.plugins.sip.sipp import Sipp, free_port, next_event, run_sipp, sipp_args

pytestmark = pytest.mark.e2e


def pcap_audio() -> np.ndarray:
    """The A-law samples of sip-tester's g711a.pcap (UDP payloads after the RTP header)."""
    data = Path("/usr/share/sip-tester/g711a.pcap").read_bytes()
    out, pos = [], 24
    while pos + 16 <= len(data):
        incl = int.from_bytes(data[pos + 8:pos + 12], "little")
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        udp = frame[14 + 20 + 8:] if len(frame) > 54 else b""
        if len(udp) > 12 and udp[1] & 0x7F == 8:
            out.append(udp[12:])
    from plugins.sip import g711
    return g711.decode(b"".join(out), "PCMA").astype(np.float64)


@pytest.fixture
async def node(make_node: Any) -> Any:
    """The node the `client` fixture talks to, with the SIP edge on free ports."""
    return await make_node("plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                           "plugins.sip.rtp_timeout_s=0")


@pytest.fixture
def sip_node(node: Any) -> Any:
    return node


def sip_port(node: Any) -> int:
    return node.pm.get_plugin("sip").service.endpoint.port


async def record(client: Any, auth: dict[str, str], room: str) -> str:
    response = await client.post(f"/v1/rooms/{room}/egress", headers=auth, json={
        "kind": "record", "record": {"formats": ["mp4"], "storage": {"backend": "local"}},
        "encoding": {"width": 320, "height": 180, "fps": 10, "video_kbps": 200}})
    assert response.status == 201, await response.text()
    return (await response.json())["egress_id"]


def audio_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        chunks = [frame.to_ndarray() for frame in container.decode(audio=0)]
    return np.concatenate([c.mean(axis=0) if c.ndim == 2 else c for c in chunks])


async def test_inbound_pcap_call_reaches_the_room_recording(sip_node: Any, client: Any, auth: dict[str, str]) -> None:
    response = await client.post("/v1/rooms", json={"room_id": "conf1"}, headers=auth)
    assert response.status == 201
    response = await client.post("/v1/sip/routes", json={"match": "4711", "room_id": "conf1"}, headers=auth)
    assert response.status == 201, await response.text()
    egress_id = await record(client, auth, "conf1")
    with sip_node.events.subscribe("conf1") as sub:
        code, sipp = await run_sipp(sipp_args("uac_pcap", f"127.0.0.1:{sip_port(sip_node)}", "-s", "4711", "-m", "1",
                                              port=free_port(), media_port=free_port()))
        assert code == 0, sipp.errors()
        joined = await next_event(sub, "participant.joined")
        assert joined.data["participant"]["kind"] == "sip"
        states = []
        while "ended" not in states:
            states.append((await next_event(sub, "sip.call.state")).data["state"])
        assert states[-2:] == ["connected", "ended"] or states == ["ringing", "connected", "ended"], states
        left = await next_event(sub, "participant.left")
        assert left.data["participant_id"] == joined.data["participant"]["participant_id"]
    body = await (await client.delete(f"/v1/egress/{egress_id}", headers=auth)).json()
    recorded = audio_of(Path(body["files"][0]["path"]))
    reference = pcap_audio()
    # the pcap is speech-like audio: the recording must carry comparable energy, not silence
    rms_rec = float(np.sqrt(np.mean(recorded ** 2)))
    rms_ref = float(np.sqrt(np.mean(reference ** 2)))
    loud = np.abs(recorded) > 0.05 * np.abs(recorded).max()
    assert rms_rec > 0.1 * rms_ref / 32768, (rms_rec, rms_ref)  # lenient: a loaded machine drops blocks
    assert loud.sum() > 48000 * 0.5, loud.sum()  # a good part of a second at least, not a click


async def test_retransmitted_invite_and_bye_are_matched_to_their_transactions(
        sip_node: Any, client: Any, auth: dict[str, str]) -> None:
    await client.post("/v1/rooms", json={"room_id": "retx"}, headers=auth)
    with sip_node.events.subscribe("retx") as sub:
        code, sipp = await run_sipp(sipp_args("uac_retransmit.xml", f"127.0.0.1:{sip_port(sip_node)}", "-s", "retx",
                                              "-m", "1", "-trace_msg", port=free_port(), media_port=free_port()))
        assert code == 0, sipp.errors()
        await next_event(sub, "participant.left")
        seen = []
        while not sub.queue.empty():
            seen.append(sub.queue.get_nowait())
    joined = [e for e in seen if e.event == "participant.joined"]
    assert not joined  # the one join came before the left we waited for; none after
    log = next(sipp.dir.glob("*_messages.log")).read_text(errors="replace")
    finals = re.findall(r"SIP/2.0 (\d+) [^\n]*\n(?:[^\n]+\n)*?To: [^\n]*tag=([0-9a-f]+)", log)
    invite_tags = {tag for status, tag in finals if status == "200"}
    assert len(invite_tags) == 1, finals  # one dialog: every 200 (INVITE and both BYEs) has the same tag
    assert [s for s, _ in finals].count("200") >= 4, finals
    assert "SIP/2.0 481" not in log
    calls = sip_node.pm.get_plugin("sip").service.ended
    assert sum(1 for c in calls.values() if c.room_id == "retx") == 1


async def test_no_common_codec_is_488(sip_node: Any, client: Any, auth: dict[str, str]) -> None:
    await client.post("/v1/rooms", json={"room_id": "nocodec"}, headers=auth)
    code, sipp = await run_sipp(sipp_args("uac_no_codec.xml", f"127.0.0.1:{sip_port(sip_node)}", "-s", "nocodec",
                                          "-m", "1", port=free_port(), media_port=free_port()))
    assert code == 0, sipp.errors()
    assert not sip_node.pm.get_plugin("sip").service.calls


async def test_unknown_number_is_404_and_tcp_calls_work(sip_node: Any, client: Any, auth: dict[str, str]) -> None:
    """sipp's built-in uac over TCP: a room that exists answers; one that does not is 404, not a hang."""
    await client.post("/v1/rooms", json={"room_id": "tcproom"}, headers=auth)
    target = f"127.0.0.1:{sip_port(sip_node)}"
    code, sipp = await run_sipp(sipp_args("uac", target, "-s", "tcproom", "-t", "t1", "-m", "1", port=free_port()))
    assert code == 0, sipp.errors()
    code, sipp = await run_sipp(sipp_args("uac", target, "-s", "nosuchroom", "-m", "1", "-trace_msg",
                                          port=free_port()))
    assert code != 0
    log = next(sipp.dir.glob("*_messages.log")).read_text(errors="replace")
    assert "SIP/2.0 404" in log


async def test_reinvite_hold_and_unhold(sip_node: Any, client: Any, auth: dict[str, str]) -> None:
    await client.post("/v1/rooms", json={"room_id": "hold"}, headers=auth)
    with sip_node.events.subscribe("hold") as sub:
        sipp = await Sipp(sipp_args("uac_hold.xml", f"127.0.0.1:{sip_port(sip_node)}", "-s", "hold", "-m", "1",
                                    port=free_port(), media_port=free_port())).start()
        try:
            held = await next_event(sub, "sip.call.state", on_hold=True)
            assert held.data["state"] == "connected"
            try:
                resumed = await next_event(sub, "sip.call.state", on_hold=False)
            except AssertionError:
                sipp.kill()
                await sipp.wait(5)
                raise AssertionError(sipp.errors()) from None
            assert resumed.data["state"] == "connected"
            # sipp itself checked the answers: a=recvonly to its a=sendonly, a=sendrecv after
            assert await sipp.wait(30) == 0, sipp.errors()
        finally:
            sipp.kill()


async def test_rtp_timeout_ends_a_dead_call(make_node: Any) -> None:
    node = await make_node("plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                           "plugins.sip.rtp_timeout_s=1.5")
    from gateway.rooms.models import RoomCreate

    await node.rooms.create(RoomCreate(room_id="quiet"))
    with node.events.subscribe("quiet") as sub:
        # sipp's plain uac sends no RTP and pauses 20 s before its BYE
        sipp = await Sipp(sipp_args("uac", f"127.0.0.1:{sip_port(node)}", "-s", "quiet", "-m", "1", "-d", "20000",
                                    port=free_port())).start()
        try:
            ended = await next_event(sub, "sip.call.state", state="ended", timeout=30)
            assert ended.data["reason"] == "rtp_timeout"
            await next_event(sub, "participant.left")
        finally:
            sipp.kill()
