"""Unit tests of the SIP edge's protocol pieces: SDP offer/answer, G.711 tables, responses,
DTMF, digest verification, routing rules; and a hypothesis fuzz of the SIP and SDP parsers."""

from __future__ import annotations

import contextlib
import hashlib
import types

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins.sip import dtmf, g711, rtp, sdp
from plugins.sip import message as sipmsg
from plugins.sip.registrar import Registrar, digest
from plugins.sip.routing import RouteRule, pick

OFFER = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
         "m=audio 4000 RTP/AVP 9 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n"
         "a=sendonly\r\n")

INVITE = ("INVITE sip:4711@gw.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n"
          "From: <sip:alice@example>;tag=a1\r\nTo: <sip:4711@gw.example>\r\nCall-ID: c1@x\r\n"
          "CSeq: 1 INVITE\r\nContent-Type: Application/SDP; charset=utf-8\r\n"
          f"Content-Length: {len(OFFER)}\r\n\r\n{OFFER}").encode()


def test_answer_keeps_the_offers_order_and_telephone_event_number() -> None:
    offer = sdp.parse(OFFER)
    answer = sdp.negotiate(offer, ["PCMU", "PCMA", "G722"])
    assert answer is not None
    assert answer.codec.name == "G722" and answer.codec.rate == 16000 and answer.codec.clock == 8000
    assert answer.telephone_event == 96  # RFC 3264: the offer's number, not a fixed 101
    assert answer.direction == "recvonly"  # mirrors sendonly (the peer put us on hold)
    body = sdp.build("203.0.113.5", 30000, [answer.codec], answer.telephone_event, answer.direction)
    assert "m=audio 30000 RTP/AVP 9 96" in body and "a=rtpmap:96 telephone-event/8000" in body
    assert "c=IN IP4 203.0.113.5" in body


def test_no_common_codec_and_bad_sdp() -> None:
    assert sdp.negotiate(sdp.parse(OFFER.replace("9 8 0 96", "18")), ["PCMU"]) is None
    with pytest.raises(sdp.SdpError):
        sdp.parse("v=0\r\nm=audio notaport RTP/AVP 0\r\n")
    with pytest.raises(sdp.SdpError):
        sdp.parse("v=0\r\ns=-\r\n")  # no audio stream


def test_g711_tables_decode_like_ffmpeg_and_round_trip() -> None:
    x = (np.sin(np.arange(1600) / 7) * 20000).astype(np.int16)
    for law, name in (("PCMU", "pcm_mulaw"), ("PCMA", "pcm_alaw")):
        codes = g711.encode(x, law)
        decoder = av.CodecContext.create(name, "r")
        decoder.sample_rate, decoder.layout = 8000, "mono"
        ref = np.concatenate([f.to_ndarray().ravel() for f in decoder.decode(av.Packet(codes.tobytes()))])
        assert np.array_equal(ref, g711.decode(codes.tobytes(), law))
        error = np.abs(g711.decode(codes.tobytes(), law).astype(int) - x)
        assert error.max() <= np.abs(x).max() / 16  # one logarithmic step at most


def test_response_adds_one_to_tag_and_recognises_sdp() -> None:
    parsed = sipmsg.parse(INVITE)
    assert sipmsg.is_sdp(parsed.message)  # Content-Type case and parameters do not matter
    out = sipmsg.response(parsed.message, 486, to_tag="t1")
    assert out.headers.get_first("to").count("tag=") == 1
    tagged = sipmsg.parse(INVITE.replace(b"To: <sip:4711@gw.example>", b"To: <sip:4711@gw.example>;tag=old"))
    again = sipmsg.response(tagged.message, 481, to_tag="t2")
    assert again.headers.get_first("to").endswith(";tag=old")  # never a second To-tag


def test_bad_messages_are_refused_with_the_request_kept_for_a_400() -> None:
    broken = INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    with pytest.raises(sipmsg.BadMessage) as info:
        sipmsg.parse(broken)
    assert info.value.request is not None
    with pytest.raises(sipmsg.BadMessage):
        sipmsg.parse(INVITE.replace(f"Content-Length: {len(OFFER)}".encode(), b"Content-Length: 9999"))
    with pytest.raises(sipmsg.BadMessage):
        sipmsg.parse(b"\x00\xff garbage")


def test_dtmf_events_and_info_bodies() -> None:
    packets = dtmf.event_payloads("#", 100)
    assert len(packets) == 5 + 3 and packets[0][1] is True
    assert dtmf.event_digit(packets[0][0]) == ("#", False, 160)
    assert dtmf.event_digit(packets[-1][0]) == ("#", True, 800)
    assert dtmf.info_digit("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n") == "5"
    assert dtmf.info_digit("application/dtmf", "11") == "#"
    assert dtmf.clean_digits("1a-#x*") == "1A#*"


def test_rtp_round_trip_and_padding() -> None:
    packet = rtp.build(8, 65535, 2**32 - 1, 1234, b"\x01" * 160, marker=True)
    parsed = rtp.parse(packet)
    assert (parsed.payload_type, parsed.sequence, parsed.ssrc, parsed.marker) == (8, 65535, 1234, True)
    padded = bytes([packet[0] | 0x20]) + packet[1:] + b"\x00\x00\x03"
    assert rtp.parse(padded).payload == b"\x01" * 160
    with pytest.raises(rtp.RtpError):
        rtp.parse(b"\x00" * 12)


def _registrar(algorithms: list[str]) -> Registrar:
    config = types.SimpleNamespace(realm="mediagate", digest_algorithms=algorithms)
    service = types.SimpleNamespace(config=config, accounts={"1001": {"username": "1001", "password": "pw"}})
    return Registrar(service)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_digest_verification_md5_and_sha256(algorithm: str) -> None:
    registrar = _registrar(["SHA-256", "MD5"])
    assert [v.split("algorithm=")[1].split(",")[0] for _, v in registrar.challenges()] == ["SHA-256", "MD5"]
    nonce = registrar.nonce()
    uri = "sip:gw.example"

    def request(password: str) -> types.SimpleNamespace:
        response = digest(algorithm, "1001", "mediagate", password, "REGISTER", uri, nonce, "00000001", "cn", "auth")
        header = (f'Digest username="1001", realm="mediagate", nonce="{nonce}", uri="{uri}", response="{response}", '
                  f'algorithm={algorithm}, cnonce="cn", nc=00000001, qop=auth')
        msg = sipmsg.SipRequest(method="REGISTER", uri=uri)
        msg.headers.set_single("Authorization", header)
        return types.SimpleNamespace(request=msg)

    account, stale = registrar.verify(request("pw"))  # type: ignore[arg-type]
    assert account is not None and account["username"] == "1001" and not stale
    assert registrar.verify(request("wrong"))[0] is None  # type: ignore[arg-type]
    expected = hashlib.new("sha256" if algorithm == "SHA-256" else "md5")
    assert len(digest(algorithm, "a", "r", "p", "M", "u", "n")) == expected.digest_size * 2


def test_routes_exact_before_patterns_then_priority() -> None:
    rules = [RouteRule("a", "4*", "wide"), RouteRule("b", "4711", "exact"),
             RouteRule("c", "^4[0-9]+$", "re", priority=5)]
    assert pick(rules, "4711").room_id == "exact"
    assert pick(rules, "4712").room_id == "re"
    assert pick(rules, "4abc").room_id == "wide"
    assert pick(rules, "5000") is None


# ---------------------------------------------------------------- fuzz: never anything but BadMessage/SdpError

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_sip_parser_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(sipmsg.BadMessage):
        sipmsg.parse(data)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(INVITE) - 1), st.binary(min_size=1, max_size=8), st.integers(0, 3))
def test_sip_parser_fuzz_mutated_invite(position: int, junk: bytes, mode: int) -> None:
    if mode == 0:
        data = INVITE[:position] + junk + INVITE[position:]
    elif mode == 1:
        data = INVITE[:position] + junk + INVITE[position + len(junk):]
    elif mode == 2:
        data = INVITE[:position]
    else:
        data = INVITE[:position] + INVITE[position + 1:]
    try:
        parsed = sipmsg.parse(data)
    except sipmsg.BadMessage:
        return
    if parsed.is_request:  # whatever parses must be answerable
        sipmsg.response(parsed.message, 400, to_tag="x")  # type: ignore[arg-type]
        if sipmsg.is_sdp(parsed.message):
            with contextlib.suppress(sdp.SdpError):
                sdp.negotiate(sdp.parse(parsed.message.text), ["PCMU", "PCMA", "G722", "opus"])


SDP_JUNK = ["m=audio 1 RTP/AVP 200", "a=rtpmap:x", "c=IN IP4", "m=audio -1 RTP/AVP 0", "a=rtpmap:0 PCMU/abc",
            "a=fmtp:", "m=video 5 RTP/AVP 96", "x", "b=AS:64"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([*OFFER.split("\r\n"), *SDP_JUNK]), max_size=14), st.text(max_size=30))
def test_sdp_parser_fuzz(lines: list[str], noise: str) -> None:
    text = "\r\n".join([*lines, noise])
    try:
        offer = sdp.parse(text)
    except sdp.SdpError:
        return
    sdp.negotiate(offer, ["PCMU", "PCMA", "G722", "opus"])
