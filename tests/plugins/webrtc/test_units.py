"""Unit tests: bitstream helpers, offer checks, ICE settings and the session limits."""

from __future__ import annotations

import asyncio
import socket

import aioice.ice
import av
import pytest

from gateway.errors import BadRequest, NoCapacity
from plugins.webrtc import ice
from plugins.webrtc.bitstream import (
    AnnexBWriter,
    avcc_parameter_sets,
    avcc_to_annexb,
    h264_is_keyframe,
    split_annexb,
    vp8_is_keyframe,
)
from plugins.webrtc.config import IceServer, WebRTCConfig
from plugins.webrtc.registry import SessionRegistry
from plugins.webrtc.sdp import NotAcceptable, check_publishable, parse_offer

SPS, PPS, IDR, SLICE = b"\x67\x42\x00\x1f\xaa", b"\x68\xce\x3c\x80", b"\x65\x88\x84\x00", b"\x41\x9a\x02"


def test_annexb_split_and_keyframes() -> None:
    data = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + IDR
    assert split_annexb(data) == [SPS, PPS, IDR]
    assert h264_is_keyframe(data) and not h264_is_keyframe(b"\x00\x00\x01" + SLICE)
    assert vp8_is_keyframe(b"\x10\x02\x00") and not vp8_is_keyframe(b"\x11\x02\x00")


def test_avcc_packets_become_annexb_with_parameter_sets_before_idr() -> None:
    avcc = bytes([1, 0x42, 0, 0x1F, 0xFF, 0xE1, 0, len(SPS)]) + SPS + bytes([1, 0, len(PPS)]) + PPS
    assert avcc_parameter_sets(avcc) == b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS
    writer = AnnexBWriter(avcc)
    packet = av.Packet(len(IDR).to_bytes(4, "big") + IDR)
    packet.pts = 9000
    out = writer.convert(packet)
    assert split_annexb(bytes(out)) == [SPS, PPS, IDR] and out.is_keyframe and out.pts == 9000
    delta = writer.convert(av.Packet(avcc_to_annexb(len(SLICE).to_bytes(4, "big") + SLICE)))
    assert split_annexb(bytes(delta)) == [SLICE] and not delta.is_keyframe


def test_offer_checks() -> None:
    with pytest.raises(BadRequest):
        parse_offer("GET / HTTP/1.1")
    with pytest.raises(BadRequest):
        parse_offer("v=0\r\n" + "a=x\r\n" * 20000)
    offer = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
             "a=mid:0\r\na=sendonly\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
             "a=fingerprint:sha-256 " + ":".join(["AA"] * 32) + "\r\na=setup:actpass\r\na=rtpmap:96 VP9/90000\r\n")
    summary = parse_offer(offer)
    assert summary.kinds == ["video"] and summary.codecs["video"] == {"vp9"}
    with pytest.raises(NotAcceptable) as refused:
        check_publishable(summary)
    assert refused.value.status == 406 and "vp9" in str(refused.value)


def test_public_address_duplicates_host_candidates() -> None:
    sdp = "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\na=end-of-candidates"
    out = ice.advertise_public(sdp, "203.0.113.7")
    assert "203.0.113.7 40000 typ host" in out and "10.0.0.5 40000" in out
    assert ice.advertise_public(sdp, "") == sdp


def test_link_headers_and_browser_servers() -> None:
    servers = [IceServer(urls=["turn:t.example:3478"], username="u", credential="p")]
    assert ice.link_headers(servers) == ['<turn:t.example:3478>; rel="ice-server"; username="u"; credential="p"; '
                                         'credential-type="password"']
    assert ice.browser_ice_servers(servers) == [{"urls": ["turn:t.example:3478"], "username": "u", "credential": "p"}]
    with pytest.raises(ValueError):
        IceServer(urls=["http://nope"])
    with pytest.raises(ValueError):
        WebRTCConfig(port_min=5000)


async def test_host_addresses_and_port_range_reach_aioice() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    low, high = (base + 100, base + 110) if base < 60000 else (base - 110, base - 100)
    try:
        ice.apply(WebRTCConfig(host_addresses=["127.0.0.1"], port_min=low, port_max=high))
        connection = aioice.ice.Connection(ice_controlling=True)
        await connection.gather_candidates()
        candidates = connection.local_candidates
        assert [c.host for c in candidates] == ["127.0.0.1"] and low <= candidates[0].port <= high
        await connection.close()
    finally:
        ice.apply(WebRTCConfig(host_addresses=["127.0.0.1"]))
    connection = aioice.ice.Connection(ice_controlling=True)
    await connection.gather_candidates()
    assert [c.host for c in connection.local_candidates] == ["127.0.0.1"]
    await connection.close()
    await asyncio.sleep(0)


def test_admission_refuses_beyond_the_limits() -> None:
    registry = SessionRegistry(WebRTCConfig(max_sessions=3, max_pending=2))
    with registry.admission(), registry.admission(), pytest.raises(NoCapacity), registry.admission():
        pass
    assert registry.pending == 0 and registry.refused == 1
