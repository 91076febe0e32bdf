"""Bad input on the wire, in the spirit of RFC 4475's torture tests: malformed and hostile
messages over UDP and TCP never crash the node; requests that can be answered get 400 (505
for a wrong version); the node keeps answering OPTIONS afterwards."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

BASE = {"via": "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{n}x",
        "from": "From: <sip:t@127.0.0.1>;tag=f{n}", "to": "To: <sip:x@127.0.0.1>",
        "call": "Call-ID: torture{n}@127.0.0.1", "cseq": "CSeq: 1 OPTIONS"}


def request(n: int, port: int, start: str = "OPTIONS sip:x@127.0.0.1 SIP/2.0", body: str = "",
            **change: str | None) -> bytes:
    headers = {k: v.format(port=port, n=n) for k, v in BASE.items()}
    for key, value in change.items():
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value.format(port=port, n=n)
    lines = [start, *headers.values()]
    if "length" not in change:
        lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


# (name, message builder, expected status: None = no answer required)
CASES: list[tuple[str, Any, int | None]] = [
    ("garbage", lambda n, p: b"\x00\x01\x02 not sip at all \xff\xfe", None),
    ("cseq method mismatch", lambda n, p: request(n, p, cseq="CSeq: 1 INVITE"), 400),
    ("content-length too long", lambda n, p: request(n, p, length="Content-Length: 5000"), 400),
    ("negative content-length", lambda n, p: request(n, p, length="Content-Length: -4"), 400),
    ("cseq too large", lambda n, p: request(n, p, cseq="CSeq: 36893488147419103232 OPTIONS"), 400),
    ("bad version", lambda n, p: request(n, p, start="OPTIONS sip:x@127.0.0.1 SIP/7.0"), 505),
    ("missing call-id", lambda n, p: request(n, p, call=None), 400),
    ("missing from", lambda n, p: request(n, p, **{"from": None}), 400),
    ("no colon header", lambda n, p: request(n, p, extra="ThisIsNotAHeader"), 200),
    ("huge header", lambda n, p: request(n, p, extra="X-Big: " + "a" * 20000), 200),
    ("many headers", lambda n, p: request(n, p, extra="\r\n".join(f"X-H{i}: v" for i in range(400))), 400),
    ("folded header lines", lambda n, p: request(n, p, to="To:\r\n   <sip:x@127.0.0.1>\r\n\t;x=1"), 200),
    ("compact forms", lambda n, p: request(n, p, via="v: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{n}x",
                                           call="i: compact{n}"), 200),
    ("unknown method", lambda n, p: request(n, p, start="NEWMETHOD sip:x@127.0.0.1 SIP/2.0",
                                            cseq="CSeq: 1 NEWMETHOD"), 501),
    ("invite bad sdp", lambda n, p: request(n, p, start="INVITE sip:x@127.0.0.1 SIP/2.0", cseq="CSeq: 1 INVITE",
                                            extra="Content-Type: application/sdp", body="v=0\r\nm=audio x\r\n"), 400),
    ("invite unknown scheme", lambda n, p: request(n, p, start="INVITE isbn:2983792873 SIP/2.0",
                                                   cseq="CSeq: 1 INVITE"), 488),
    ("unsolicited response", lambda n, p: request(n, p, start="SIP/2.0 200 OK"), None),
    ("nul in header", lambda n, p: request(n, p, extra="X-Nul: a\x00b"), 200),
    ("require unknown extension", lambda n, p: request(n, p, start="INVITE sip:x@127.0.0.1 SIP/2.0",
                                                       cseq="CSeq: 1 INVITE", extra="Require: 100rel, Foo"), 420),
    ("require timer", lambda n, p: request(n, p, extra="Require: timer"), 200),
    ("empty", lambda n, p: b"", None),
    ("only crlf", lambda n, p: b"\r\n\r\n", None),
]


@pytest.fixture
async def node(make_node: Any) -> Any:
    return await make_node("plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0")


def exchange(sock: socket.socket, data: bytes, port: int, wait: float = 0.8) -> list[bytes]:
    sock.sendto(data, ("127.0.0.1", port))
    answers = []
    sock.settimeout(wait)
    try:
        while True:
            answer, _ = sock.recvfrom(65535)
            answers.append(answer)
            if not answer.startswith(b"SIP/2.0 100"):
                sock.settimeout(0.2)
    except TimeoutError:
        pass
    return answers


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_torture_messages_over_udp(node: Any) -> None:
    port = node.pm.get_plugin("sip").service.endpoint.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        me = sock.getsockname()[1]
        for n, (name, build, expected) in enumerate(CASES):
            answers = await asyncio.to_thread(exchange, sock, build(n, me), port)
            # only this case's answers: a final response to an INVITE is retransmitted until an ACK
            mine = [a for a in answers if f"z9hG4bK{n}x".encode() in a]
            finals = [status(a) for a in mine if not a.startswith(b"SIP/2.0 100")]
            if expected is None:
                assert not finals, (name, finals)
            else:
                assert finals and finals[0] == expected, (name, finals, answers[:1])
        alive = await asyncio.to_thread(exchange, sock, request(999, me), port)
        assert alive and status(alive[0]) == 200


async def test_hostile_tcp_stream_is_dropped_not_fatal(node: Any) -> None:
    port = node.pm.get_plugin("sip").service.endpoint.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 999999999\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed on us
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\r\n\r\n" + request(1, 5060, via="Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKtcp"))
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    assert line.startswith(b"SIP/2.0 200"), line
    writer.close()


async def test_a_taken_sip_port_leaves_the_node_running(make_node: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        node = await make_node(f"plugins.sip.port={port}")
        service = node.pm.get_plugin("sip").service
        assert service.disabled and node.ready
